"""The consent texts' version id: one per wording, so a recorded id says which words the parents heard."""

from __future__ import annotations

import re

import pytest

import cards
from cards import _texts
from cards._consent_version import CONSENT_TEXT_VERSIONS, VERSION_KEY, consent_text_version, consent_texts_digest

VERSION_FORMAT = re.compile(r"^20[0-9]{2}-(0[1-9]|1[0-2])-[1-9][0-9]*$")  # YYYY-MM-N


def test_the_consent_texts_are_the_ones_their_version_was_given_to() -> None:
    version = consent_text_version()
    assert version in CONSENT_TEXT_VERSIONS, (
        f"consent.version {version!r} is not in CONSENT_TEXT_VERSIONS (cards/_consent_version.py): "
        f"add it with the digest {consent_texts_digest()}"
    )
    assert CONSENT_TEXT_VERSIONS[version] == consent_texts_digest(), (
        "a consent.* text changed but consent.version did not: give the texts a new version in both "
        f"catalogues and add it to CONSENT_TEXT_VERSIONS with the digest {consent_texts_digest()}"
    )


def test_the_current_version_is_the_newest_and_every_wording_has_one_id() -> None:
    assert list(CONSENT_TEXT_VERSIONS)[-1] == consent_text_version(), "append new versions at the end"
    assert all(VERSION_FORMAT.match(version) for version in CONSENT_TEXT_VERSIONS)
    digests = list(CONSENT_TEXT_VERSIONS.values())
    assert len(set(digests)) == len(digests), "two ids for the same words"
    assert all(re.fullmatch(r"[0-9a-f]{64}", digest) for digest in digests)


def test_both_catalogues_carry_the_same_version() -> None:
    assert cards.text("nl", VERSION_KEY) == cards.text("en", VERSION_KEY) == cards.consent_text_version()


@pytest.mark.parametrize(
    ("lang", "key"),
    [("nl", "consent.purpose.text"), ("en", "consent.data.heading"), ("nl", "consent.missing.summary")],
)
def test_changing_any_consent_text_changes_the_digest(
    monkeypatch: pytest.MonkeyPatch, lang: cards.Language, key: str
) -> None:
    before = consent_texts_digest()
    changed = {**_texts.catalogue(lang), key: _texts.catalogue(lang)[key] + " Zo loop je niets mis."}
    real = _texts.catalogue
    monkeypatch.setattr("cards._consent_version.catalogue", lambda wanted: changed if wanted == lang else real(wanted))
    assert consent_texts_digest() != before


def test_the_version_itself_and_other_texts_are_not_in_the_digest(monkeypatch: pytest.MonkeyPatch) -> None:
    before = consent_texts_digest()
    nl = _texts.catalogue("nl")
    changed = {**nl, VERSION_KEY: "2099-01-1", "action.continue": "Doorgaan"}
    real = _texts.catalogue
    monkeypatch.setattr("cards._consent_version.catalogue", lambda wanted: changed if wanted == "nl" else real(wanted))
    assert consent_texts_digest() == before


def test_catalogues_that_disagree_on_the_version_are_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    en = {**_texts.catalogue("en"), VERSION_KEY: "2099-01-1"}
    real = _texts.catalogue
    monkeypatch.setattr("cards._consent_version.catalogue", lambda wanted: en if wanted == "en" else real(wanted))
    with pytest.raises(cards.CardError, match=r"consent\.version"):
        consent_text_version()
