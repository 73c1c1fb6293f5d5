"""No client value outside the encrypted ZIP: not in storage, logs, the mail, or the chat after the end."""

from __future__ import annotations

import contextlib
import datetime as dt
import email
import email.policy
import logging
import os
import sqlite3
import stat
import struct
import unicodedata
from dataclasses import dataclass
from pathlib import Path

import pytest

from bot.app import create_app, sweep_drafts
from bot.config import Settings
from bot.secrets.draft_cipher import DraftCipher
from tests.support.activities import TeamsUser
from tests.support.bot_server import BotDriver, running_bot
from tests.support.card_reading import actions, draft_id_of, texts
from tests.support.clock import ManualClock
from tests.support.data_folder import left_in_folder
from tests.support.ocmw_flow import link, ocmw_worker, reported_wrong, send_and_deliver
from tests.support.referral_flow import (
    CLIENT_FORM,
    CLIENT_VALUES,
    CONSENT_ALL,
    PROTOCOL_ID,
    open_consent,
    reach_review,
)


def _leaks(haystack: bytes) -> list[str]:
    found = []
    for value in CLIENT_VALUES:
        for encoding in ("utf-8", "utf-16-le", "utf-16-be"):
            if value.encode(encoding) in haystack:
                found.append(f"{value} ({encoding})")
    return found


@pytest.mark.parametrize("ending", ["referral.send", "referral.cancel"])
async def test_after_the_end_no_client_value_is_kept_or_logged(
    bot: BotDriver,
    referrer: TeamsUser,
    settings: Settings,
    caplog: pytest.LogCaptureFixture,
    ending: str,
) -> None:
    caplog.set_level(logging.DEBUG)
    draft_id, review = await reach_review(bot, referrer)
    assert "Zoëlle" in texts(review), "the review card is the one place the data is shown"

    if ending == "referral.cancel":
        final = await bot.act_confirmed(referrer, ending, {"draftId": draft_id})
    else:
        final = await bot.act(referrer, ending, {"draftId": draft_id})
    await bot.deliver()

    assert _leaks(texts(final).encode()) == []
    # .eml files are checked part by part below: the base64 ZIP is random bytes
    assert await left_in_folder(settings.data_dir, lambda name, content: [] if name.endswith(".eml")
                                else _leaks(content)) == {}
    log_text = "\n".join(
        record.getMessage() + str(record.__dict__) + (str(record.exc_info) if record.exc_info else "")
        for record in caplog.records
    )
    assert _leaks(log_text.encode()) == []
    assert caplog.records, "the run did log something"
    posted = bot.connector.sent_activities()
    assert _leaks(str(posted).encode()) == [], "no message in the chat carries client data"


async def test_a_refused_data_card_leaves_no_client_value_in_logs_or_storage(
    bot: BotDriver, referrer: TeamsUser, settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    """The unhappy path: a card refused (with a name in NFD and a phone with no-break spaces), then cancelled."""
    caplog.set_level(logging.DEBUG)
    typed = {"firstName": unicodedata.normalize("NFD", "Zoëlle"), "postalCode": "9100",
             "municipality": "Sint-Niklaasje", "phone": "0470\u00a098\u00a076\u00a054"}
    values = [*CLIENT_VALUES, "Sint-Niklaasje", "98\u00a076", "470987654"]
    values += [unicodedata.normalize("NFD", value) for value in values]

    def leaks(blob: bytes) -> list[str]:
        return [value for value in values for encoding in ("utf-8", "utf-16-le") if value.encode(encoding) in blob]

    draft_id = draft_id_of(await open_consent(bot, referrer))
    await bot.act(referrer, "referral.consent", {"draftId": draft_id, "ocmw": PROTOCOL_ID, **CONSENT_ALL})
    card = await bot.act(referrer, "referral.details", {"draftId": draft_id, **CLIENT_FORM, **typed})
    assert "referral.details" in actions(card), "refused"
    await bot.act_confirmed(referrer, "referral.cancel", {"draftId": draft_id})
    await bot.deliver()

    assert await left_in_folder(settings.data_dir, lambda _, content: leaks(content)) == {}
    log_text = "\n".join(record.getMessage() + str(record.__dict__) for record in caplog.records)
    assert "data card refused" in log_text, "the run did log the refusal"
    assert leaks(log_text.encode()) == []
    assert leaks(str(bot.connector.sent_activities()).encode()) == []


async def test_the_mail_carries_client_data_only_inside_the_zip(
    bot: BotDriver, referrer: TeamsUser, settings: Settings
) -> None:
    draft_id, _ = await reach_review(bot, referrer)
    await bot.act(referrer, "referral.send", {"draftId": draft_id})
    await bot.deliver()
    [eml] = list(settings.outbox_dir.glob("*.eml"))
    assert _leaks(eml.name.encode()) == []
    message = email.message_from_bytes(eml.read_bytes(), policy=email.policy.default)
    headers = "\n".join(f"{key}: {value}" for key, value in message.items())
    assert _leaks(headers.encode()) == []
    body = message.get_body(preferencelist=("plain",))
    assert body is not None
    assert _leaks(body.get_content().encode()) == []
    [attachment] = list(message.iter_attachments())
    assert _leaks(str(attachment.get_filename()).encode()) == []


async def test_the_data_folder_is_private(bot: BotDriver, referrer: TeamsUser, settings: Settings) -> None:
    draft_id, _ = await reach_review(bot, referrer)
    await bot.act(referrer, "referral.send", {"draftId": draft_id})
    await bot.deliver()
    assert settings.data_dir.stat().st_mode & 0o077 == 0
    for path in [settings.database_path, settings.data_dir / "draft.key", *settings.outbox_dir.glob("*.eml")]:
        assert Path(path).stat().st_mode & 0o077 == 0, path


async def test_an_abandoned_review_card_is_replaced_in_the_chat_when_the_draft_expires(
    bot: BotDriver, referrer: TeamsUser, settings: Settings, clock: ManualClock
) -> None:
    _, review = await reach_review(bot, referrer)
    assert "Zoëlle" in texts(review)
    clock.advance(dt.timedelta(minutes=31))

    await sweep_drafts(bot.services.drafts, bot.services.messages, clock)
    await bot.settle()

    [update] = [call for call in bot.connector.calls if call.method == "PUT"]
    assert update.path == f"/v3/conversations/{referrer.conversation_id}/activities/card-1"
    assert _leaks(str(update.body).encode()) == []
    assert "verlopen" in texts(update.body["attachments"][0]["content"])
    assert await left_in_folder(settings.data_dir, lambda _, content: _leaks(content)) == {}


# -- nothing lingers on disk: the WAL ---------------------------------------------------------------

WAL_MAGIC = (0x377F0682, 0x377F0683)


@dataclass(frozen=True)
class WalFrame:
    """One frame as it lies in the `-wal` file; `current` is False for one left over from before a reset."""

    page_number: int
    current: bool
    page: bytes


def wal_frames(wal: bytes) -> list[WalFrame]:
    """Every frame physically in a WAL file (https://sqlite.org/fileformat.html#the_write_ahead_log).

    A 32-byte header (magic, version, page size, checkpoint sequence, two salts, checksum), then
    frames of a 24-byte header (page number, size after commit, the two salts, checksum) and one
    page. Frames whose salts differ from the header's are stale but still on disk: a forensic
    reader sees them, so they are returned too.
    """
    if len(wal) < 32:
        return []
    magic, _version, page_size, _sequence, salt1, salt2, _check1, _check2 = struct.unpack(">8I", wal[:32])
    assert magic in WAL_MAGIC, hex(magic)
    frames = []
    for offset in range(32, len(wal) - (24 + page_size) + 1, 24 + page_size):
        page_number, _size, frame_salt1, frame_salt2, _check1, _check2 = struct.unpack(">6I", wal[offset:offset + 24])
        frames.append(WalFrame(page_number, (frame_salt1, frame_salt2) == (salt1, salt2),
                               wal[offset + 24:offset + 24 + page_size]))
    return frames


def _companion(settings: Settings, suffix: str) -> Path:
    return settings.database_path.with_name(settings.database_path.name + suffix)


def _stored_seal(settings: Settings, draft_id: str) -> bytes | None:
    with contextlib.closing(sqlite3.connect(settings.database_path)) as db:
        row = db.execute("SELECT sealed_details FROM drafts WHERE id = ?", (draft_id,)).fetchone()
    return None if row is None or row[0] is None else bytes(row[0])


@pytest.mark.parametrize("ending", ["referral.send", "referral.cancel", "sweep", "late click"])
async def test_a_wiped_draft_leaves_no_sealed_data_in_the_wal_or_the_file(
    bot: BotDriver,
    referrer: TeamsUser,
    settings: Settings,
    clock: ManualClock,
    monkeypatch: pytest.MonkeyPatch,
    ending: str,
) -> None:
    sealed: list[bytes] = []
    seal = DraftCipher.seal

    def recording_seal(cipher: DraftCipher, draft_id: str, plaintext: bytes) -> bytes:
        blob = seal(cipher, draft_id, plaintext)
        sealed.append(blob)
        return blob

    monkeypatch.setattr(DraftCipher, "seal", recording_seal)
    draft_id, _ = await reach_review(bot, referrer)
    stored = _stored_seal(settings, draft_id)
    assert stored is not None and stored in sealed
    before = wal_frames(_companion(settings, "-wal").read_bytes())
    assert [frame for frame in before if stored in frame.page], "the parser finds the draft in the WAL"

    if ending == "sweep":
        clock.advance(dt.timedelta(minutes=31))
        await sweep_drafts(bot.services.drafts, bot.services.messages, clock)
    elif ending == "late click":
        clock.advance(dt.timedelta(minutes=31))
        await bot.act(referrer, "referral.edit", {"draftId": draft_id})
    elif ending == "referral.cancel":
        await bot.act_confirmed(referrer, ending, {"draftId": draft_id})
    else:
        await bot.act(referrer, ending, {"draftId": draft_id})

    assert _stored_seal(settings, draft_id) is None, "the draft was wiped"
    frames = wal_frames(_companion(settings, "-wal").read_bytes())
    main = settings.database_path.read_bytes()
    for blob in sealed:
        assert [frame.page_number for frame in frames if blob in frame.page] == []
        assert blob not in main
    for frame in frames:
        assert _leaks(frame.page) == [], frame.page_number
    assert _leaks(main) == []


async def test_the_wal_and_shm_files_are_private_from_the_start(
    settings: Settings, clock: ManualClock, referrer: TeamsUser
) -> None:
    previous = os.umask(0o022)  # the usual umask: files SQLite creates itself would be 0644
    try:
        app = create_app(settings, clock=clock, run_worker=False)
        async with running_bot(app) as bot:  # started: the schema is migrated, the WAL is there
            modes_at_start = {suffix: stat.S_IMODE(_companion(settings, suffix).stat().st_mode)
                              for suffix in ("-wal", "-shm")}
            draft_id, _ = await reach_review(bot, referrer)
            await bot.act(referrer, "referral.send", {"draftId": draft_id})
            await bot.deliver()
            modes_after_run = {suffix: stat.S_IMODE(_companion(settings, suffix).stat().st_mode)
                               for suffix in ("-wal", "-shm")}
    finally:
        os.umask(previous)
    assert modes_at_start == {"-wal": 0o600, "-shm": 0o600}
    assert modes_after_run == {"-wal": 0o600, "-shm": 0o600}


# --- what a correction typed, and the encrypted package once dropped --------------------------------------

CORRECTED_VALUES = ["Molenwegske", "88 bus 7", "Quirijntje", "Verhaegheberghe"]


def _corrected_values_in(blob: bytes) -> list[str]:
    return [value for value in CORRECTED_VALUES for encoding in ("utf-8", "utf-16-le")
            if value.encode(encoding) in blob]


@pytest.mark.parametrize(("item", "form", "refused"), [
    ("address", {"street": "Molenwegske Noordkant", "houseNumber": "88 bus 7", "postalCode": "9170",
                 "municipality": "Meerdonk"}, {"postalCode": "91"}),
    ("name", {"firstName": "Quirijntje", "lastName": "Verhaegheberghe"}, {"firstName": "Quirijntje1" * 20}),
])
async def test_a_corrected_item_leaves_no_value_in_logs_storage_or_chat(
    bot: BotDriver, referrer: TeamsUser, settings: Settings, caplog: pytest.LogCaptureFixture,
    item: str, form: dict[str, str], refused: dict[str, str],
) -> None:
    """An address or a name (which the log filter cannot recognise, unlike a phone number), refused once, then sent."""
    caplog.set_level(logging.DEBUG)
    await link(bot, ocmw_worker())
    reference, worker = await send_and_deliver(bot, referrer)
    await bot.act(worker, "ack.receive", {"reference": reference})
    correction_id = await reported_wrong(bot, referrer, worker, reference, item)
    again = await bot.act(referrer, "correction.submit", {"correctionId": correction_id, **form, **refused})
    assert "correction.submit" in actions(again), "refused, the card kept"
    queued = await bot.act(referrer, "correction.submit", {"correctionId": correction_id, **form})
    assert f"{reference}-2" in texts(queued) and _corrected_values_in(texts(queued).encode()) == []
    await bot.deliver()
    assert await left_in_folder(settings.data_dir, lambda name, content: [] if name.endswith(".eml")
                                else _corrected_values_in(content)) == {}
    logged = "\n".join(record.getMessage() + str(record.__dict__) for record in caplog.records)
    assert _corrected_values_in(logged.encode()) == []
    assert _corrected_values_in(str(bot.connector.sent_activities()).encode()) == []


async def test_the_encrypted_package_leaves_no_bytes_in_the_database_files_once_delivered(
    bot: BotDriver, referrer: TeamsUser, settings: Settings
) -> None:
    """Under the protocol's password, which the bot keeps, the ZIP is still the family's data."""
    draft_id, _ = await reach_review(bot, referrer)
    await bot.act(referrer, "referral.send", {"draftId": draft_id})
    with contextlib.closing(sqlite3.connect(settings.database_path)) as db:
        [(payload,)] = db.execute("SELECT payload FROM outbox").fetchall()
    chunks = [bytes(payload)[start:start + 64] for start in range(0, len(payload) - 64, 64)]
    assert len(chunks) > 4
    await bot.deliver()

    def found(name: str, content: bytes) -> list[str]:
        hits = sum(chunk in content for chunk in chunks) if Path(name).name.startswith("bot.sqlite3") else 0
        return [f"{hits}/{len(chunks)} 64-byte pieces of the encrypted package"] if hits else []

    assert await left_in_folder(settings.data_dir, found) == {}
