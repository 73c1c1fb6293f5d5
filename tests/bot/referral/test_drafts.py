"""Drafts: sealed at rest, compare-and-set transitions, wiped when done or idle; on both backends."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import pytest

from bot.core.referral_values import UNVERSIONED_CONSENT_TEXT, ClientDetails, ConsentRecord
from bot.referral.drafts import DraftState, DraftStore, ShownCard
from bot.secrets.draft_cipher import DraftCipher, DraftCipherError
from bot.storage.database import Database

NOW = dt.datetime(2026, 11, 28, 9, 0, tzinfo=dt.UTC)
DETAILS = ClientDetails("Zoëlle", "Vandenbroeckx", "Kerkstraatje", "127", "9170", "Meerdonk", "+32470987654", None)


@pytest.fixture
def store(database: Database, tmp_path: Path) -> DraftStore:
    cipher = DraftCipher.from_key_file(tmp_path / "draft.key")
    return DraftStore(database, cipher, dt.timedelta(minutes=30))


async def test_details_are_sealed_in_the_database(store: DraftStore, database: Database, tmp_path: Path) -> None:
    draft = await store.create("user", "conv", NOW, NOW.date())
    updated = await store.advance(draft, DraftState.REVIEW, NOW, details=DETAILS)
    assert updated is not None
    again = await store.get(draft.id)
    assert again is not None and again.details is not None and again.details.values() == DETAILS.values()
    stored = b"".join(bytes(value) if isinstance(value, (bytes, memoryview)) else str(value).encode()
                      for row in await database.fetch_all("SELECT * FROM drafts") for value in row.values())
    assert b"Vandenbroeckx" not in stored and "Zoëlle".encode() not in stored
    if database.sqlite_path is not None:  # and not in the file either (WAL included)
        raw = b"".join(path.read_bytes() for path in tmp_path.iterdir() if path.is_file())
        assert b"Vandenbroeckx" not in raw and "Zoëlle".encode() not in raw


async def test_the_consent_keeps_its_text_version(store: DraftStore, tmp_path: Path) -> None:
    consent = ConsentRecord(True, True, True, True, True, NOW, text_version="2026-11-2")
    created = await store.create("user", "conv", NOW, NOW.date())
    draft = await store.advance(created, DraftState.DETAILS, NOW, consent=consent)
    assert draft is not None
    again = await store.get(draft.id)
    assert again is not None and again.consent == consent


async def test_a_consent_stored_before_versions_has_the_unversioned_texts(
    store: DraftStore, database: Database
) -> None:
    """A draft consented before an upgrade goes on after it: its parents heard the texts without a version."""
    consent = ConsentRecord(True, True, True, True, True, NOW, text_version="removed below")
    created = await store.create("user", "conv", NOW, NOW.date())
    draft = await store.advance(created, DraftState.DETAILS, NOW, consent=consent)
    assert draft is not None
    removed = "(consent_json::jsonb - 'text_version')::text" if database.is_postgres \
        else "json_remove(consent_json, '$.text_version')"
    await database.execute(f"UPDATE drafts SET consent_json = {removed}")  # noqa: S608 - the test's own SQL
    again = await store.get(draft.id)
    assert again is not None and again.consent is not None
    assert again.consent.text_version == UNVERSIONED_CONSENT_TEXT == "2026-11-1"


async def test_a_stale_copy_cannot_advance(store: DraftStore) -> None:
    draft = await store.create("user", "conv", NOW, NOW.date())
    assert await store.advance(draft, DraftState.DETAILS, NOW + dt.timedelta(seconds=1)) is not None
    assert await store.advance(draft, DraftState.DETAILS, NOW + dt.timedelta(seconds=2)) is None


async def test_closing_wipes_the_data_and_keeps_the_reference(store: DraftStore, tmp_path: Path) -> None:
    created = await store.create("user", "conv", NOW, NOW.date())
    draft = await store.advance(created, DraftState.REVIEW, NOW, details=DETAILS)
    assert draft is not None
    assert await store.close(draft, DraftState.SENT, NOW)
    closed = await store.get(draft.id)
    assert closed is not None and closed.details is None and closed.state == DraftState.SENT
    assert closed.reference == draft.reference


async def test_sweep_expires_idle_drafts_and_keeps_their_tombstones(store: DraftStore) -> None:
    idle = await store.advance(await store.create("u", "c", NOW, NOW.date()), DraftState.REVIEW, NOW, details=DETAILS)
    assert idle is not None
    await store.remember_card(idle, ShownCard('{"conversation": {"id": "a:1"}}', "card-7", "en"))
    replaced: list[str] = []

    async def replace(card: ShownCard) -> None:
        replaced.append(card.activity_id)

    assert await store.sweep(NOW + dt.timedelta(minutes=29), replace) == []
    [shown] = await store.sweep(NOW + dt.timedelta(minutes=31), replace)
    assert (shown.activity_id, shown.lang) == ("card-7", "en")
    assert replaced == ["card-7"], "the card's replacement is asked for inside the sweep"
    expired = await store.get(idle.id)
    assert expired is not None and expired.state == DraftState.EXPIRED and expired.details is None
    await store.sweep(NOW + dt.timedelta(days=30), replace)
    tombstone = await store.get(idle.id)
    assert tombstone is not None and tombstone.state == DraftState.EXPIRED, "bot.oversight.retention removes tombstones"


def test_a_blob_cannot_be_moved_to_another_draft(tmp_path: Path) -> None:
    cipher = DraftCipher.from_key_file(tmp_path / "k")
    sealed = cipher.seal("draft-a", b"data")
    with pytest.raises(DraftCipherError):
        cipher.open("draft-b", sealed)
    assert cipher.open("draft-a", sealed) == b"data"


def test_the_fingerprint_is_keyed_bound_to_the_draft_and_known(tmp_path: Path) -> None:
    """What a card carries to say which data it showed: HMAC-SHA256 under a key derived from the draft key."""
    cipher = DraftCipher(bytes(range(32)))
    assert cipher.fingerprint("draft-a", b"data") == "SjnVJeDJh4CiKiNW"  # known answer: a change breaks old cards
    assert cipher.fingerprint("draft-b", b"data") != cipher.fingerprint("draft-a", b"data")
    assert cipher.fingerprint("draft-a", b"dat4") != cipher.fingerprint("draft-a", b"data")
    assert DraftCipher(bytes(32)).fingerprint("draft-a", b"data") != cipher.fingerprint("draft-a", b"data")


async def test_the_details_fingerprint_follows_every_change_and_shows_no_data(store: DraftStore) -> None:
    import base64
    import dataclasses
    import hashlib

    same = dataclasses.replace(DETAILS)
    other_phone = dataclasses.replace(DETAILS, phone="+32499112233")
    fingerprint = store.details_fingerprint("draft-a", DETAILS)
    assert store.details_fingerprint("draft-a", same) == fingerprint, "the same data: the same card still holds"
    assert store.details_fingerprint("draft-a", other_phone) != fingerprint
    assert len(fingerprint) == 16
    plain = json.dumps(dataclasses.asdict(DETAILS)).encode("utf-8")
    unkeyed = {hashlib.sha256(plain).hexdigest(), base64.urlsafe_b64encode(hashlib.sha256(plain).digest()).decode()}
    assert not any(value.startswith(fingerprint) for value in unkeyed), "not an unkeyed hash of the data"
    assert "470987654" not in fingerprint and "Vandenbroeckx" not in fingerprint


def test_the_key_file_is_private_and_reused(tmp_path: Path) -> None:
    first = DraftCipher.from_key_file(tmp_path / "k")
    assert (tmp_path / "k").stat().st_mode & 0o777 == 0o600
    assert DraftCipher.from_key_file(tmp_path / "k").open("d", first.seal("d", b"x")) == b"x"


async def test_references_are_unique_per_draft(store: DraftStore) -> None:
    references = {(await store.create("u", "c", NOW, NOW.date())).reference for _ in range(200)}
    assert len(references) == 200
    assert all(reference.startswith("VD-20261128-") for reference in references)


async def test_a_draft_sealed_with_another_key_reads_as_expired(database: Database, tmp_path: Path) -> None:
    connection = database
    old = DraftStore(connection, DraftCipher.from_key_file(tmp_path / "old.key"), dt.timedelta(minutes=30))
    draft = await old.advance(await old.create("u", "c", NOW, NOW.date()), DraftState.REVIEW, NOW, details=DETAILS)
    assert draft is not None
    rotated = DraftStore(connection, DraftCipher.from_key_file(tmp_path / "new.key"), dt.timedelta(minutes=30))
    again = await rotated.get(draft.id)
    assert again is not None and again.state == DraftState.EXPIRED and again.details is None


async def test_where_the_card_is_is_written_when_it_changes(store: DraftStore) -> None:
    """Another click on the same card answers another activity: the chat is the same, nothing to write."""
    def reference(activity: str, service: str = "https://smba.trafficmanager.net/emea/") -> str:
        return json.dumps({"activityId": activity, "serviceUrl": service, "conversation": {"id": "a:1"}})

    draft = await store.create("user", "conv", NOW, NOW.date())
    await store.remember_card(draft, ShownCard(reference("incoming-1"), "card-1", "nl"))
    remembered = await store.get(draft.id)
    assert remembered is not None and remembered.shown == ShownCard(reference("incoming-1"), "card-1", "nl")

    async def stored_after(card: ShownCard) -> ShownCard | None:
        assert remembered is not None
        await store.remember_card(remembered, card)
        again = await store.get(draft.id)
        assert again is not None
        return again.shown

    assert await stored_after(ShownCard(reference("incoming-2"), "card-1", "nl")) == remembered.shown, "same place"
    for moved in (ShownCard(reference("incoming-2", "https://smba.trafficmanager.net/amer/"), "card-1", "nl"),
                  ShownCard(reference("incoming-2"), "card-2", "nl"),
                  ShownCard(reference("incoming-2"), "card-1", "en")):
        assert await stored_after(moved) == moved
