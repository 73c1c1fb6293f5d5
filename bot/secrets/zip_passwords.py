"""Where the password of each protocol's encrypted ZIP comes from.

The embedded provider keeps one password in the data folder; the Key Vault provider (Azure)
reads the secret named in the protocol file. Both hand out the password with a version, which
goes into the mail so the OCMW knows which password opens a package after a rotation.
"""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from bot.core.protocols import DataSharingProtocol
from bot.secrets.local_secret_files import read_or_create_secret

#: 32 characters without look-alikes (0/O, 1/I): 24 of them carry 120 bits. An alphabet, not a password.
PASSWORD_ALPHABET = "23456789ABCDEFGHJKLMNPQRSTUVWXYZ"  # noqa: S105  # nosec B105
GENERATED_PASSWORD_LENGTH = 24
MIN_PASSWORD_LENGTH = 16
MAX_PASSWORD_LENGTH = 99  # 7-Zip refuses longer ZIP passwords


class ZipPasswordError(Exception):
    """No usable password; the message names the secret, never its value.

    `transient` is True when trying again later may help (vault unreachable, throttled).
    """

    def __init__(self, message: str, *, transient: bool = False) -> None:
        super().__init__(message)
        self.transient = transient


@dataclass(frozen=True)
class ZipPassword:
    """A password and the version that identifies it without revealing it."""

    value: bytes = field(repr=False)
    version: str


class ZipPasswordProvider(Protocol):
    """Gives the current ZIP password for a protocol."""

    async def password_for(self, protocol: DataSharingProtocol) -> ZipPassword:
        """The password the OCMW of `protocol` uses to open packages.

        A caller may stop waiting (it has a user to answer); a provider that fetches the password
        from elsewhere must then let the fetch finish, so the next caller finds it.
        """
        ...

    async def keep_warm(self, protocols: Callable[[], Iterable[DataSharingProtocol]]) -> None:
        """Have the passwords of `protocols()` ready before they are asked for; runs until cancelled.

        The app runs this in the background from start to stop; it must never raise for a
        password that cannot be had (that is logged), and may return at once when there is
        nothing to fetch.
        """
        ...


def generate_password() -> str:
    """A fresh 24-character password from the unambiguous alphabet."""
    return "".join(secrets.choice(PASSWORD_ALPHABET) for _ in range(GENERATED_PASSWORD_LENGTH))


def check_password(value: str, secret_name: str) -> bytes:
    """The password as bytes, or ZipPasswordError if 7-Zip could not use it or it is weak."""
    if not value.isascii() or not value.isprintable() or " " in value:
        raise ZipPasswordError(f"secret '{secret_name}' holds characters 7-Zip cannot use (printable ASCII only)")
    if not MIN_PASSWORD_LENGTH <= len(value) <= MAX_PASSWORD_LENGTH:
        raise ZipPasswordError(
            f"secret '{secret_name}' must be {MIN_PASSWORD_LENGTH} to {MAX_PASSWORD_LENGTH} characters long"
        )
    return value.encode("ascii")


def format_for_reading(password: str) -> str:
    """The password in groups of four, as it is read out to the OCMW."""
    return " ".join(password[index : index + 4] for index in range(0, len(password), 4))


class LocalZipPasswordProvider:
    """Embedded mode: one password for every protocol, from LOCAL_ZIP_PASSWORD or a 0600 file."""

    def __init__(self, *, configured: str | None, password_file: Path) -> None:
        if configured is not None:
            self._value = check_password(configured, "LOCAL_ZIP_PASSWORD")
            self.source = "LOCAL_ZIP_PASSWORD"
        else:
            stored = read_or_create_secret(password_file, lambda: generate_password().encode("ascii"))
            self._value = check_password(stored.decode("ascii", errors="replace"), str(password_file))
            self.source = str(password_file)
        # A short fingerprint names the version without helping anyone guess 120 random bits.
        self._version = "local-" + hashlib.sha256(self._value).hexdigest()[:8]

    async def password_for(self, protocol: DataSharingProtocol) -> ZipPassword:
        """The same local password for every protocol."""
        return ZipPassword(value=self._value, version=self._version)

    async def keep_warm(self, protocols: Callable[[], Iterable[DataSharingProtocol]]) -> None:
        """Nothing to fetch: the password was read when the provider was built."""
