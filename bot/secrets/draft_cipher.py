"""Encryption at rest for unfinished referrals (AES-256-GCM).

While a referral is being entered, the client's data lives in the database only in this form,
bound to its draft id so one draft's blob cannot be pasted into another.

The same key also gives a short keyed fingerprint of a draft's data (`fingerprint`), which a card
carries to say which data it showed without revealing any of it.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from bot.secrets.local_secret_files import read_or_create_secret

_NONCE_BYTES = 12
#: The fingerprint key is derived from the draft key with this label, so the two uses never share a key.
_FINGERPRINT_LABEL = b"veilig-doorverwijzen draft details fingerprint v1"
#: 96 bits of HMAC-SHA256: 16 characters on a card, far beyond guessing which of two versions is which.
_FINGERPRINT_BYTES = 12


class DraftCipherError(Exception):
    """A sealed draft cannot be opened (wrong key, tampered or truncated)."""


class DraftCipher:
    """Seals and opens draft data with one 256-bit key."""

    def __init__(self, key: bytes) -> None:
        if len(key) != 32:
            raise ValueError("the draft key must be 32 bytes")
        self._aead = AESGCM(key)
        self._fingerprint_key = hmac.new(key, _FINGERPRINT_LABEL, hashlib.sha256).digest()

    @classmethod
    def from_key_file(cls, path: Path) -> DraftCipher:
        """The embedded mode's key, created once in the data folder with mode 0600."""
        hex_key = read_or_create_secret(path, lambda: AESGCM.generate_key(bit_length=256).hex().encode("ascii"))
        try:
            return cls(bytes.fromhex(hex_key.decode("ascii")))
        except ValueError as error:
            raise DraftCipherError(f"{path} does not hold a 256-bit hex key") from error

    def seal(self, draft_id: str, plaintext: bytes) -> bytes:
        """Nonce and ciphertext, authenticated together with the draft id."""
        nonce = os.urandom(_NONCE_BYTES)
        return nonce + self._aead.encrypt(nonce, plaintext, draft_id.encode("utf-8"))

    def open(self, draft_id: str, sealed: bytes) -> bytes:
        """The plaintext, or DraftCipherError if the blob is not this draft's."""
        try:
            return self._aead.decrypt(sealed[:_NONCE_BYTES], sealed[_NONCE_BYTES:], draft_id.encode("utf-8"))
        except (InvalidTag, ValueError) as error:
            raise DraftCipherError("sealed draft data cannot be opened") from error

    def fingerprint(self, draft_id: str, plaintext: bytes) -> str:
        """A short keyed digest (truncated HMAC-SHA256, URL-safe base64) of `plaintext` for this draft.

        The same data gives the same fingerprint, any change another; without the draft key it
        tells nothing about the data, so a card may carry it.
        """
        message = draft_id.encode("utf-8") + b"\0" + plaintext  # a draft id holds no NUL: unambiguous
        digest = hmac.new(self._fingerprint_key, message, hashlib.sha256).digest()[:_FINGERPRINT_BYTES]
        return base64.urlsafe_b64encode(digest).decode("ascii")
