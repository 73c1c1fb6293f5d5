"""Drafts: sealed at rest, compare-and-set transitions, wiped when done or idle."""

from __future__ import annotations

import contextlib
import datetime as dt
from pathlib import Path

import pytest

from bot.database import open_database
from bot.draft_cipher import DraftCipher, DraftCipherError
from bot.drafts import DraftState, DraftStore
from bot.referral import UNVERSIONED_CONSENT_TEXT, ClientDetails, ConsentRecord

NOW = dt.datetime(2026, 11, 28, 9, 0, tzinfo=dt.UTC)
DETAILS = ClientDetails("Zoëlle", "Vandenbroeckx", "Kerkstraatje", "127", "9170", "Meerdonk", "+32470987654", None)


@pytest.fixture
def store(tmp_path: Path) -> DraftStore:
    cipher = DraftCipher.from_key_file(tmp_path / "draft.key")
    return DraftStore(open_database(tmp_path / "db.sqlite3"), cipher, dt.timedelta(minutes=30))


def test_details_are_sealed_in_the_database(store: DraftStore, tmp_path: Path) -> None:
    draft = store.create("user", "conv", NOW, NOW.date())
    updated = store.advance(draft, DraftState.REVIEW, NOW, details=DETAILS)
    assert updated is not None
    again = store.get(draft.id)
    assert again is not None and again.details is not None and again.details.values() == DETAILS.values()
    raw = b"".join(path.read_bytes() for path in tmp_path.iterdir() if path.is_file())
    assert b"Vandenbroeckx" not in raw and "Zoëlle".encode() not in raw


def test_the_consent_keeps_its_text_version(store: DraftStore, tmp_path: Path) -> None:
    consent = ConsentRecord(True, True, True, True, True, NOW, text_version="2026-11-2")
    draft = store.advance(store.create("user", "conv", NOW, NOW.date()), DraftState.DETAILS, NOW, consent=consent)
    assert draft is not None
    again = store.get(draft.id)
    assert again is not None and again.consent == consent


def test_a_consent_stored_before_versions_has_the_unversioned_texts(store: DraftStore, tmp_path: Path) -> None:
    """A draft consented before an upgrade goes on after it: its parents heard the texts without a version."""
    consent = ConsentRecord(True, True, True, True, True, NOW, text_version="removed below")
    draft = store.advance(store.create("user", "conv", NOW, NOW.date()), DraftState.DETAILS, NOW, consent=consent)
    assert draft is not None
    with contextlib.closing(open_database(tmp_path / "db.sqlite3")) as database, database:
        database.execute("UPDATE drafts SET consent_json = json_remove(consent_json, '$.text_version')")
    again = store.get(draft.id)
    assert again is not None and again.consent is not None
    assert again.consent.text_version == UNVERSIONED_CONSENT_TEXT == "2026-11-1"


def test_a_stale_copy_cannot_advance(store: DraftStore) -> None:
    draft = store.create("user", "conv", NOW, NOW.date())
    assert store.advance(draft, DraftState.DETAILS, NOW + dt.timedelta(seconds=1)) is not None
    assert store.advance(draft, DraftState.DETAILS, NOW + dt.timedelta(seconds=2)) is None


def test_closing_wipes_the_data_and_keeps_the_reference(store: DraftStore, tmp_path: Path) -> None:
    draft = store.advance(store.create("user", "conv", NOW, NOW.date()), DraftState.REVIEW, NOW, details=DETAILS)
    assert draft is not None
    assert store.close(draft, DraftState.SENT, NOW)
    closed = store.get(draft.id)
    assert closed is not None and closed.details is None and closed.state == DraftState.SENT
    assert closed.reference == draft.reference


def test_sweep_expires_idle_drafts_and_keeps_their_tombstones(store: DraftStore) -> None:
    idle = store.advance(store.create("u", "c", NOW, NOW.date()), DraftState.REVIEW, NOW, details=DETAILS)
    assert idle is not None
    store.remember_card(idle.id, '{"conversation": {"id": "a:1"}}', "card-7", "en")
    replaced: list[str] = []
    assert store.sweep(NOW + dt.timedelta(minutes=29), lambda card: replaced.append(card.activity_id)) == []
    [shown] = store.sweep(NOW + dt.timedelta(minutes=31), lambda card: replaced.append(card.activity_id))
    assert (shown.activity_id, shown.lang) == ("card-7", "en")
    assert replaced == ["card-7"], "the card's replacement is asked for inside the sweep"
    expired = store.get(idle.id)
    assert expired is not None and expired.state == DraftState.EXPIRED and expired.details is None
    store.sweep(NOW + dt.timedelta(days=30), lambda card: replaced.append(card.activity_id))
    tombstone = store.get(idle.id)
    assert tombstone is not None and tombstone.state == DraftState.EXPIRED, "bot.retention removes tombstones"


def test_a_blob_cannot_be_moved_to_another_draft(tmp_path: Path) -> None:
    cipher = DraftCipher.from_key_file(tmp_path / "k")
    sealed = cipher.seal("draft-a", b"data")
    with pytest.raises(DraftCipherError):
        cipher.open("draft-b", sealed)
    assert cipher.open("draft-a", sealed) == b"data"


def test_the_key_file_is_private_and_reused(tmp_path: Path) -> None:
    first = DraftCipher.from_key_file(tmp_path / "k")
    assert (tmp_path / "k").stat().st_mode & 0o777 == 0o600
    assert DraftCipher.from_key_file(tmp_path / "k").open("d", first.seal("d", b"x")) == b"x"


def test_references_are_unique_per_draft(store: DraftStore) -> None:
    references = {store.create("u", "c", NOW, NOW.date()).reference for _ in range(200)}
    assert len(references) == 200
    assert all(reference.startswith("VD-20261128-") for reference in references)


def test_a_draft_sealed_with_another_key_reads_as_expired(tmp_path: Path) -> None:
    connection = open_database(tmp_path / "db.sqlite3")
    old = DraftStore(connection, DraftCipher.from_key_file(tmp_path / "old.key"), dt.timedelta(minutes=30))
    draft = old.advance(old.create("u", "c", NOW, NOW.date()), DraftState.REVIEW, NOW, details=DETAILS)
    assert draft is not None
    rotated = DraftStore(connection, DraftCipher.from_key_file(tmp_path / "new.key"), dt.timedelta(minutes=30))
    again = rotated.get(draft.id)
    assert again is not None and again.state == DraftState.EXPIRED and again.details is None
