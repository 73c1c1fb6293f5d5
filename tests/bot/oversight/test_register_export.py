"""The DPO's register without shell access, over HTTP: `register` in the personal chat, the summary
card, a download link that works once and for 15 minutes, refusals for everyone else, and every
download in the register itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import csv
import datetime as dt
import gc
import io
import json
import logging
import sqlite3
import tracemalloc
import urllib.parse
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

import cards
from bot.app import create_app
from bot.config import Settings
from bot.evidence.register import EXPORT_COLUMNS, entry_hash
from tests.conftest import ZIP_PASSWORD
from tests.support.activities import TeamsUser
from tests.support.bot_server import BotDriver, running_bot
from tests.support.card_reading import texts, walk
from tests.support.clock import ManualClock
from tests.support.referral_flow import PROTOCOL_ID, reach_review
from tests.support.register_entries import add_delivered_entries

SHIPPED = Path(__file__).resolve().parents[3] / "infra" / "protocols" / "sint-gillis-waas.toml"
OCMW_DPO_ID = "7d1e2f3a-4b5c-4d6e-8f70-8192a3b4c5d6"
OPGROEIEN_DPO_ID = "0a1b2c3d-4e5f-4a6b-8c7d-9e0f1a2b3c4d"
BASE_URL = "https://veilig-doorverwijzen.example.test"
OTHER_PROTOCOL = "OR-KG-NOW-OCMW-BEV-2026"


def _protocols(folder: Path) -> Path:
    """The shipped protocol naming a DPO on each side, and a second one (not yet in force) naming none."""
    folder.mkdir()
    text = SHIPPED.read_text(encoding="utf-8")
    text = text.replace('dpo = "dpo@opgroeien.be"',
                        f'dpo = "dpo@opgroeien.be"\ndpo_object_ids = ["{OPGROEIEN_DPO_ID}"]')
    text = text.replace('dpo = "informatica@sint-gillis-waas.be"',
                        f'dpo = "informatica@sint-gillis-waas.be"\ndpo_object_ids = ["{OCMW_DPO_ID.upper()}"]')
    (folder / "sint-gillis-waas.toml").write_text(text, encoding="utf-8")
    other = SHIPPED.read_text(encoding="utf-8").replace("OR-KG-NOW-OCMW-SGW-2026", OTHER_PROTOCOL)
    other = other.replace('"9170"', '"9120"').replace("in_force_from = 2026-03-01", "in_force_from = 2027-03-01")
    (folder / "beveren.toml").write_text(other, encoding="utf-8")
    return folder


def _settings(tmp_path: Path, **extra: str) -> Settings:
    return Settings.from_mapping({
        "BOT_DATA_DIR": str(tmp_path / "data"),
        "PROTOCOLS_DIR": str(_protocols(tmp_path / "protocols")),
        "LOCAL_ZIP_PASSWORD": ZIP_PASSWORD,
        **extra,
    })


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return _settings(tmp_path, PUBLIC_BASE_URL=BASE_URL + "/")


@pytest.fixture
async def bot(settings: Settings, clock: ManualClock) -> AsyncIterator[BotDriver]:
    async with running_bot(create_app(settings, clock=clock, run_worker=False)) as driver:
        yield driver


@pytest.fixture
def dpo() -> TeamsUser:
    return TeamsUser(OCMW_DPO_ID, "Dirk Pé-O", "a:personal-dpo")


async def _a_delivered_referral(bot: BotDriver, referrer: TeamsUser) -> None:
    draft_id, _ = await reach_review(bot, referrer)
    await bot.act(referrer, "referral.send", {"draftId": draft_id})
    await bot.deliver()


async def _card(bot: BotDriver, user: TeamsUser, word: str = "register") -> dict[str, Any]:
    [reply] = await bot.say(user, word)
    assert reply.get("attachments"), reply
    card: dict[str, Any] = reply["attachments"][0]["content"]
    return card


def _links(card: dict[str, Any]) -> list[str]:
    return [element["url"] for element in walk(card) if element.get("type") == "Action.OpenUrl"]


async def _get(bot: BotDriver, url: str, method: str = "GET") -> tuple[int, dict[str, str], bytes]:
    """Open a card's link against the running bot (the card names the public address, the test its own)."""
    assert url.startswith(BASE_URL + "/register/export/"), url
    async with bot.session.request(method, bot.bot_url + url.removeprefix(BASE_URL)) as response:
        return response.status, dict(response.headers), await response.read()


def _register_rows(settings: Settings, event: str) -> list[sqlite3.Row]:
    with sqlite3.connect(settings.database_path) as db:
        db.row_factory = sqlite3.Row
        return db.execute("SELECT * FROM register WHERE event = ? ORDER BY seq", (event,)).fetchall()


async def test_a_dpo_gets_the_summary_and_downloads_the_protocols_register_once(
    bot: BotDriver, referrer: TeamsUser, dpo: TeamsUser, settings: Settings
) -> None:
    await _a_delivered_referral(bot, referrer)
    head = await bot.services.register.summary(PROTOCOL_ID)
    card = await _card(bot, dpo)
    shown = texts(card)
    assert "Verwerkingsregister" in shown and "OCMW Sint-Gillis-Waas, protocol OR-KG-NOW-OCMW-SGW-2026" in shown
    assert OTHER_PROTOCOL not in shown, "only the protocols that name this DPO"
    assert "De hashketen van het hele register klopt" in shown
    assert head.last_hash is not None and head.last_hash in shown and f"nr. {head.last_seq}" in shown
    assert "tot 28/11/2026 10:15 (15 minuten)" in shown
    csv_link, json_link = _links(card)
    assert json_link.endswith("?format=json") and csv_link.split("/")[-1] != json_link.split("/")[-1].split("?")[0]

    status, headers, body = await _get(bot, csv_link)
    assert status == 200
    assert headers["Content-Type"] == "text/csv; charset=utf-8"
    assert headers["Content-Disposition"] == f'attachment; filename="verwerkingsregister-{PROTOCOL_ID}-20261128.csv"'
    assert headers["Cache-Control"] == "no-store"
    assert body.startswith(b"\xef\xbb\xbf"), "Excel reads UTF-8 with the BOM"
    rows = list(csv.DictReader(io.StringIO(body.decode("utf-8-sig"), newline=""), delimiter=";"))  # nl-BE Excel
    assert list(rows[0]) == list(EXPORT_COLUMNS)
    assert {row["protocol_id"] for row in rows} == {PROTOCOL_ID}
    assert [row["event"] for row in rows] == ["referral_started", "consent_confirmed", "package_built", "queued",
                                              "delivered"]
    assert (rows[-1]["seq"], rows[-1]["hash"]) == (str(head.last_seq), head.last_hash)
    delivered = rows[-1]
    assert delivered["actor_id"] == "bot:delivery" and "contact:email" in delivered["data_categories"]
    assert delivered["recipient"] == "OCMW Sint-Gillis-Waas <welzijnshuis@sint-gillis-waas.be>"
    fields = {name: delivered[name] for name in EXPORT_COLUMNS if name not in ("seq", "previous_hash", "hash")}
    assert entry_hash(delivered["previous_hash"], fields) == delivered["hash"], "each row checks on its own"

    [exported] = _register_rows(settings, "register_exported")
    assert (exported["actor_id"], exported["actor_name"], exported["protocol_id"]) == (OCMW_DPO_ID, "Dirk Pé-O",
                                                                                       PROTOCOL_ID)
    assert exported["detail"].startswith("csv; 5 entries; period 2026-11-28 to 2026-11-28; last entry")
    assert head.last_hash in exported["detail"]
    assert (exported["data_categories"], exported["recipient"]) == ("", "")

    again, _, refusal = await _get(bot, csv_link)
    assert again == 404 and "werkt één keer" in refusal.decode() and "works once" in refusal.decode()
    assert len(_register_rows(settings, "register_exported")) == 1, "a refused link records nothing"
    assert await bot.services.register.verify() == []


async def test_the_json_link_gives_the_exact_register(bot: BotDriver, referrer: TeamsUser, dpo: TeamsUser) -> None:
    await _a_delivered_referral(bot, referrer)
    card = await _card(bot, dpo, "Verwerkingsregister")
    status, headers, body = await _get(bot, _links(card)[1])
    assert status == 200 and headers["Content-Type"] == "application/json; charset=utf-8"
    rows = json.loads(body)
    assert [list(row) for row in rows] == [list(EXPORT_COLUMNS)] * 5
    first = await _register_rows_in(bot, "register_exported")
    assert first[0]["detail"].startswith("json; 5 entries")


async def _register_rows_in(bot: BotDriver, event: str) -> list[dict[str, str]]:
    return [row for row in await bot.services.register.export_protocol(PROTOCOL_ID) if row["event"] == event]


async def test_a_link_no_longer_works_after_15_minutes(
    bot: BotDriver, dpo: TeamsUser, clock: ManualClock, settings: Settings
) -> None:
    csv_link, json_link = _links(await _card(bot, dpo))
    clock.advance(dt.timedelta(minutes=15))
    for link in (csv_link, json_link):
        status, _, _ = await _get(bot, link)
        assert status == 404
    assert _register_rows(settings, "register_exported") == []
    with sqlite3.connect(settings.database_path) as db:
        assert db.execute("SELECT COUNT(*) FROM register_links").fetchone()[0] == 0, "expired links are forgotten"


async def test_links_are_stored_only_as_hashes_and_a_head_request_uses_nothing(
    bot: BotDriver, dpo: TeamsUser, settings: Settings
) -> None:
    csv_link = _links(await _card(bot, dpo))[0]
    token = urllib.parse.urlsplit(csv_link).path.rsplit("/", 1)[1]
    assert len(token) == 43
    with sqlite3.connect(settings.database_path) as db:
        stored = " ".join(str(value) for row in db.execute("SELECT * FROM register_links") for value in row)
    assert token not in stored and OCMW_DPO_ID in stored
    head, _, _ = await _get(bot, csv_link, "HEAD")
    assert head == 405, "a link checker's HEAD must not use the link up"
    status, _, _ = await _get(bot, csv_link)
    assert status == 200


@pytest.mark.parametrize("path", ["not-a-token", "A" * 43, "A" * 43 + "?format=xlsx", "%2e%2e%2fbot.sqlite3"])
async def test_anything_but_a_valid_token_gets_the_one_refusal(bot: BotDriver, path: str) -> None:
    status, headers, body = await _get(bot, f"{BASE_URL}/register/export/{path}")
    assert status == 404 and headers["Cache-Control"] == "no-store"
    assert b"ZIP" not in body and b"seq" not in body


async def test_the_opgroeien_dpo_is_named_too(bot: BotDriver) -> None:
    card = await _card(bot, TeamsUser(OPGROEIEN_DPO_ID, "Dana DPO", "a:personal-dpo-2"))
    assert "protocol OR-KG-NOW-OCMW-SGW-2026" in texts(card) and len(_links(card)) == 2
    assert "nog geen regels" in texts(card), "nothing was recorded under the protocol yet"


async def test_someone_no_protocol_names_as_dpo_is_refused_and_logged(
    bot: BotDriver, referrer: TeamsUser, caplog: pytest.LogCaptureFixture, settings: Settings
) -> None:
    caplog.set_level(logging.INFO)
    [reply] = await bot.say(referrer, "register")
    assert "alleen voor de DPO's die in een protocol genoemd zijn" in reply["text"]
    assert not reply.get("attachments")
    assert any("no protocol file names as DPO: refused" in record.getMessage()
               and getattr(record, "user_id", "") == "aad-referrer-1" for record in caplog.records)
    with sqlite3.connect(settings.database_path) as db:
        assert db.execute("SELECT COUNT(*) FROM register_links").fetchone()[0] == 0


async def test_outside_the_personal_chat_even_a_dpo_gets_no_link(bot: BotDriver, settings: Settings) -> None:
    in_channel = TeamsUser(OCMW_DPO_ID, "Dirk Pé-O", "19:ocmw-welzijnshuis@thread.tacv2", channel=True)
    [reply] = await bot.say(in_channel, "<at>Veilig doorverwijzen</at> register")
    assert "persoonlijke chat" in reply["text"] and not reply.get("attachments")
    with sqlite3.connect(settings.database_path) as db:
        assert db.execute("SELECT COUNT(*) FROM register_links").fetchone()[0] == 0


async def test_a_dpo_removed_from_the_protocol_file_can_no_longer_download(
    bot: BotDriver, dpo: TeamsUser, settings: Settings
) -> None:
    csv_link = _links(await _card(bot, dpo))[0]
    path = settings.protocols_dir / "sint-gillis-waas.toml"
    path.write_text(path.read_text(encoding="utf-8").replace(OCMW_DPO_ID.upper(), OPGROEIEN_DPO_ID),
                    encoding="utf-8")
    status, _, _ = await _get(bot, csv_link)  # every request rereads a changed protocol folder
    assert status == 404
    assert _register_rows(settings, "register_exported") == []


async def test_without_a_public_address_the_card_says_what_is_needed(
    tmp_path: Path, clock: ManualClock, dpo: TeamsUser
) -> None:
    app = create_app(_settings(tmp_path), clock=clock, run_worker=False)
    async with running_bot(app) as bot:
        card = await _card(bot, dpo)
    assert _links(card) == []
    assert "PUBLIC_BASE_URL" in texts(card) and "Laatste hash" not in texts(card)


async def test_a_broken_chain_is_on_the_card(
    bot: BotDriver, referrer: TeamsUser, dpo: TeamsUser, settings: Settings
) -> None:
    await _a_delivered_referral(bot, referrer)
    with sqlite3.connect(settings.database_path) as db:
        db.execute("UPDATE register SET actor_name = 'Iemand Anders' WHERE seq = 2")
    shown = texts(await _card(bot, dpo))
    assert "De hashketen klopt NIET: het eerste probleem zit bij regel 2 (in totaal 1)" in shown



# --- a DPO named in many protocols (Opgroeien's: one protocol per OCMW) -------------------------------

def _many_protocols(folder: Path, count: int) -> Path:
    folder.mkdir()
    text = SHIPPED.read_text(encoding="utf-8").replace(
        'dpo = "dpo@opgroeien.be"', f'dpo = "dpo@opgroeien.be"\ndpo_object_ids = ["{OPGROEIEN_DPO_ID}"]')
    for n in range(count):
        municipality = f"Gemeente {n:02d}"
        (folder / f"p{n:02d}.toml").write_text(
            text.replace("OR-KG-NOW-OCMW-SGW-2026", f"OR-KG-NOW-OCMW-G{n:02d}-2026")
            .replace("OCMW Sint-Gillis-Waas", f"OCMW {municipality}")
            .replace('municipality = "Sint-Gillis-Waas"', f'municipality = "{municipality}"')
            .replace('["Sint-Gillis-Waas", "De Klinge", "Meerdonk", "Sint-Pauwels"]', f'["{municipality}"]')
            .replace('"9170"', f'"{9200 + n}"'), encoding="utf-8")
    return folder


async def test_a_dpo_of_many_protocols_gets_a_card_teams_takes_and_narrows_it_by_name(
    tmp_path: Path, clock: ManualClock
) -> None:
    """Teams refuses a bot message over 40 KB: at ~1.1 KB a protocol, 36 protocols gave the DPO no card at all."""
    settings = Settings.from_mapping({"BOT_DATA_DIR": str(tmp_path / "data"), "LOCAL_ZIP_PASSWORD": ZIP_PASSWORD,
                                      "PROTOCOLS_DIR": str(_many_protocols(tmp_path / "protocols", 45)),
                                      "PUBLIC_BASE_URL": BASE_URL})
    dpo = TeamsUser(OPGROEIEN_DPO_ID, "Olivia Pé-O", "a:personal-opgroeien-dpo")
    async with running_bot(create_app(settings, clock=clock, run_worker=False)) as bot:
        [answer] = await bot.say(dpo, "register")
        card = answer["attachments"][0]["content"]
        shown = [block["text"] for block in walk(card) if "protocol OR-KG-NOW-OCMW-G" in str(block.get("text"))]
        assert len(json.dumps(answer).encode()) < 28 * 1024, "within what Teams takes"
        assert len(shown) == cards.REGISTER_MAX_PROTOCOLS
        assert f"nog {45 - cards.REGISTER_MAX_PROTOCOLS} protocollen" in texts(card)
        [narrowed] = await bot.say(dpo, "register gemeente 4")
        narrowed_card = narrowed["attachments"][0]["content"]
        assert [block["text"] for block in walk(narrowed_card) if "protocol OR-KG-NOW-OCMW-G" in str(
            block.get("text"))] == [f"OCMW Gemeente {n}, protocol OR-KG-NOW-OCMW-G{n}-2026" for n in range(40, 45)]
        [none] = await bot.say(dpo, "register Brugge")
        assert "brugge" in none["text"].lower() and "Geen protocol" in none["text"]


# -- a register years old: the command and the download leave the other users' turns running ---------

MANY_ENTRIES = 40_000
#: The longest the bot may keep every other user's turn waiting while a DPO asks for the register. Measured with
#: the garbage collector paused: 13-26 ms alone, 26-42 ms with two busy processes on this machine's two cores
#: (before the pages were made text and files in worker threads with C encoders: 10-35 ms and 20-65 ms). Running,
#: the collector's full passes over the whole test run's heap were the pauses (0.10-0.16 s alone, 0.89 s in CI),
#: which `serve` keeps to a few ms by freezing its start-up objects.
LONGEST_STALL_SECONDS = 0.1


class _StallMeter:
    """A task that wants to run every 10 ms, as another user's turn does; `longest` is its longest wait."""

    def __init__(self) -> None:
        self.longest = 0.0
        self._task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> _StallMeter:
        self._task = asyncio.create_task(self._tick())
        await asyncio.sleep(0.02)
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await asyncio.sleep(0.02)
        assert self._task is not None
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task

    async def _tick(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            before = loop.time()
            await asyncio.sleep(0.01)
            self.longest = max(self.longest, loop.time() - before - 0.01)


async def test_a_register_of_40000_entries_keeps_the_other_users_turns_running(
    bot: BotDriver, referrer: TeamsUser, dpo: TeamsUser, settings: Settings
) -> None:
    await _a_delivered_referral(bot, referrer)
    add_delivered_entries(settings.database_path, MANY_ENTRIES, PROTOCOL_ID)
    with _collector_paused():
        stalls = await _stalls_of_a_register_and_its_downloads(bot, dpo)
    assert max(stalls.values()) <= LONGEST_STALL_SECONDS, f"the event loop stalled (seconds): {stalls}"
    assert await bot.services.register.verify() == []


@contextlib.contextmanager
def _collector_paused() -> Iterator[None]:
    """The bot's own work measured, not the garbage collector's: this process is the test run's, whose whole heap
    a full pass walks while the loop waits (`serve` freezes its start-up objects, so its passes take a few ms).
    Paused, not frozen: freezing and unfreezing here moved earlier tests' garbage (and its ResourceWarnings) into
    later tests."""
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


async def _stalls_of_a_register_and_its_downloads(bot: BotDriver, dpo: TeamsUser) -> dict[str, float]:
    """The loop's longest pause during the `register` command, its CSV download and its JSON download."""
    async with _StallMeter() as command:
        card = await _card(bot, dpo)
    assert "De hashketen van het hele register klopt" in texts(card)
    assert f"{MANY_ENTRIES + 5}" in texts(card).replace(".", "").replace(" ", "")
    async with _StallMeter() as csv_download:
        status, pieces = await _pieces(bot, _links(card)[0])
    assert status == 200 and len(b"".join(pieces).decode("utf-8-sig").splitlines()) == MANY_ENTRIES + 6
    async with _StallMeter() as json_download:
        status, pieces = await _pieces(bot, _links(await _card(bot, dpo))[1])
    # The register's entries, and the csv download's own entry.
    assert status == 200 and len(json.loads(b"".join(pieces))) == MANY_ENTRIES + 5 + 1
    return {"register": command.longest, "csv": csv_download.longest, "json": json_download.longest}


async def _pieces(bot: BotDriver, url: str) -> tuple[int, list[bytes]]:
    """Status and body of a download as it arrived, not yet joined: joining 32 MB is the browser's work, which this
    test's loop (the bot's too) would otherwise count as the bot's stall."""
    async with bot.session.get(bot.bot_url + url.removeprefix(BASE_URL)) as response:
        return response.status, [piece async for piece in response.content.iter_any()]


# -- a register years old: a download holds a page of it in memory, not all of it --------------------

#: The most a download may hold at once (Python allocations, the bot's and this test client's). Built whole,
#: the 40 000 entries took 124 MB for an 18 MB CSV file and 225 MB for a 32 MB JSON file; sent a page of
#: `PAGE_SIZE` entries at a time, 10.5 MB and 12 MB (a page read while the one before it is sent).
LARGEST_DOWNLOAD_MEMORY = 16 * 1024 * 1024
#: What a refused link may cost: the register is not read before the link is known to be valid.
LARGEST_REFUSAL_MEMORY = 1024 * 1024


async def _read_streamed(bot: BotDriver, url: str) -> tuple[int, int, int]:
    """Status, size and lines of a download read in pieces, as a browser saves it: the test keeps none of it."""
    size, lines = 0, 0
    async with bot.session.get(bot.bot_url + url.removeprefix(BASE_URL)) as response:
        async for piece in response.content.iter_chunked(64 * 1024):
            size += len(piece)
            lines += piece.count(b"\n")
        return response.status, size, lines


async def test_a_download_of_40000_entries_holds_a_page_of_them_in_memory_not_the_whole_register(
    bot: BotDriver, referrer: TeamsUser, dpo: TeamsUser, settings: Settings
) -> None:
    """Issue 14 keeps the bot's RSS flat: a download built whole took the register's size again per DPO click."""
    await _a_delivered_referral(bot, referrer)
    add_delivered_entries(settings.database_path, MANY_ENTRIES, PROTOCOL_ID)
    tracemalloc.start()
    try:
        status, _, _ = await _read_streamed(bot, f"{BASE_URL}/register/export/{'A' * 43}")
        refusal_peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert status == 404 and refusal_peak <= LARGEST_REFUSAL_MEMORY, f"a refused link read the register: {refusal_peak}"
    measured = {}
    for index, file_format in enumerate(("csv", "json")):
        link = _links(await _card(bot, dpo))[index]
        tracemalloc.start()
        try:
            status, size, lines = await _read_streamed(bot, link)
            measured[file_format] = (tracemalloc.get_traced_memory()[1], size)
        finally:
            tracemalloc.stop()
        assert status == 200
        if file_format == "csv":
            assert lines == MANY_ENTRIES + 6, "the header, the referral's five entries and the 40 000"
    assert all(peak <= LARGEST_DOWNLOAD_MEMORY for peak, _ in measured.values()), (
        f"held at once while downloading (peak bytes, file bytes): {measured}")
    assert await bot.services.register.verify() == []


async def test_the_register_command_on_40000_entries_checks_the_chain_a_page_at_a_time(
    bot: BotDriver, referrer: TeamsUser, dpo: TeamsUser, settings: Settings
) -> None:
    """The summary card checks the whole hash chain. Read whole, the 40 000 entries were held at once on every
    DPO's `register` (the RSS issue 14 keeps flat), and their tens of thousands of objects made Python's full
    garbage collections, which stop every thread, the event loop's longest pauses. A page at a time: a page held."""
    await _a_delivered_referral(bot, referrer)
    add_delivered_entries(settings.database_path, MANY_ENTRIES, PROTOCOL_ID)
    tracemalloc.start()
    try:
        card = await _card(bot, dpo)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert "De hashketen van het hele register klopt" in texts(card)
    assert peak <= LARGEST_DOWNLOAD_MEMORY, f"held at once while checking the chain: {peak} bytes"
