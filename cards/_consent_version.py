"""Which version of the consent texts a family was told, and the proof that a version's words are fixed.

Every text under `consent.` in both catalogues (the consent card, the information sheet) belongs to
the version named in `consent.version`. The register and the package record that id with each
consent, so the DPO can later tell which words a family heard. An id means something only if its
words never change: `CONSENT_TEXT_VERSIONS` keeps the SHA-256 of each version's texts, and a test
fails when a `consent.` text changes while `consent.version` does not.

Changing a text: give `consent.version` a new id (`YYYY-MM-N`: the month the wording was settled
and a running number within it), add that id with the digest the failing test names at the end of
the table, and never change or remove an entry (the texts of an old version are in git history,
e.g. `git log -S '"consent.version": "2026-11-2"' -- cards/texts/nl.json`).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from types import MappingProxyType
from typing import Final

from bot.core.referral_values import UNVERSIONED_CONSENT_TEXT
from cards._errors import CardError
from cards._texts import LANGUAGES, catalogue

CONSENT_TEXT_PREFIX: Final = "consent."
VERSION_KEY: Final = "consent.version"
#: Every version of the consent texts, oldest first, with the SHA-256 of its texts
#: (`consent_texts_digest`). Append only.
CONSENT_TEXT_VERSIONS: Final[Mapping[str, str]] = MappingProxyType(
    {
        # The texts of 28 November 2026, before versions were recorded.
        UNVERSIONED_CONSENT_TEXT: "6645099255057ce77f9601730be570c976d1a741b05673e4ab96514592875b6d",
        # Issue 12: who is responsible, geïntegreerd breed onthaal explained, refusing changes nothing, how to
        # withdraw, the rights, both DPOs and the Vlaamse Toezichtcommissie; no "zo loop je niets mis"; the sheet.
        "2026-11-2": "2bbbd158aba2a3bf9c64bf64875e392e40cd8f4e2b41a209dae1148fa2e9cad8",
        # Issue 12 §6 (one word for each thing): English "email address", not "e-mail address"; Dutch unchanged.
        "2026-11-3": "acaa6d75c4094fa62705f92e38c248d9bcdd50a21cbacb66e9c9867b80113a57",
    }
)


def consent_text_version() -> str:
    """The id of the consent texts the catalogues hold now (the same in every language)."""
    versions = {catalogue(lang).get(VERSION_KEY, "") for lang in LANGUAGES}
    if len(versions) != 1 or "" in versions:
        raise CardError(f"every catalogue needs the same {VERSION_KEY!r}, found {sorted(versions)}")
    return versions.pop()


def consent_texts_digest() -> str:
    """The SHA-256 of every `consent.` text (the version id itself left out) in every language."""
    texts = {
        lang: {key: value for key, value in catalogue(lang).items()
               if key.startswith(CONSENT_TEXT_PREFIX) and key != VERSION_KEY}
        for lang in LANGUAGES
    }
    canonical = json.dumps(texts, ensure_ascii=False, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()
