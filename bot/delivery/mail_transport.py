"""How a finished mail leaves the bot.

`MailTransport` is the one interface; the embedded default writes each message as an RFC 5322
`.eml` file into an outbox folder: exactly the bytes an SMTP server would receive. That folder
keeps a copy of what was sent, so it also is a `SentCopies`: the copy goes when the OCMW confirms
it deleted the data. SMTP and Graph keep nothing (`NoSentCopies`).
"""

from __future__ import annotations

import asyncio
import os
import re
from email.message import EmailMessage
from email.policy import SMTP
from pathlib import Path
from typing import Protocol, runtime_checkable


class MailDeliveryError(Exception):
    """The mail did not go out.

    `reason` is safe to log and show to support (never client data); `transient` says whether
    trying again later may help; `retry_after` is the server's own hint in seconds, if it gave one.
    """

    def __init__(self, reason: str, *, transient: bool, retry_after: float | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.transient = transient
        self.retry_after = retry_after


class MailTransport(Protocol):
    """Delivers one complete message; raises MailDeliveryError when it cannot."""

    async def send(self, message: EmailMessage) -> None:
        """Deliver `message` to its `To` recipients."""
        ...

    async def check(self) -> str:
        """Verify the transport is reachable and authenticated without sending; returns a short
        description for `python -m bot check`, raises MailDeliveryError when it is not."""
        ...


@runtime_checkable
class SentCopies(Protocol):
    """A transport that keeps a copy of each sent message on this machine."""

    def remove_copy(self, message_id: str) -> None:
        """Remove the copy of the message with this Message-ID, if there is one; OSError if it cannot."""
        ...


class NoSentCopies:
    """What SMTP and Graph keep once a message left: nothing, so there is nothing to remove."""

    def remove_copy(self, message_id: str) -> None:
        """Nothing kept, nothing to do."""


def sent_copies(transport: MailTransport) -> SentCopies:
    """The transport itself when it keeps copies, else `NoSentCopies`."""
    return transport if isinstance(transport, SentCopies) else NoSentCopies()


_UNSAFE_FILE_CHARACTERS = re.compile(r"[^A-Za-z0-9@._-]")


class OutboxFolderTransport:
    """Writes `<message-id>.eml` files atomically (temp file, fsync, rename), mode 0600.

    The file name comes from the Message-ID, which is derived from the reference only, so a
    resend replaces the same file instead of making a second one.
    """

    def __init__(self, folder: Path) -> None:
        self._folder = folder

    async def send(self, message: EmailMessage) -> None:
        """Write the message; a full disk or a permission problem is a transient failure."""
        message_id = message["Message-ID"]
        if not message_id:
            raise MailDeliveryError("message has no Message-ID", transient=False)
        data = message.as_bytes(policy=SMTP)
        try:
            await asyncio.to_thread(_write_atomically, self._file_for(str(message_id)), data)
        except OSError as error:
            raise MailDeliveryError(f"outbox folder not writable ({error.strerror})", transient=True) from error

    def remove_copy(self, message_id: str) -> None:
        """Remove `<message-id>.eml` and a half-written `.tmp` a crash may have left beside it.

        Unlinked, not overwritten: on journaling file systems and SSDs an overwrite in place is no
        guarantee either, and the file holds the data only inside the AES-256 ZIP.
        """
        target = self._file_for(message_id)
        target.unlink(missing_ok=True)
        target.with_suffix(".tmp").unlink(missing_ok=True)

    def _file_for(self, message_id: str) -> Path:
        return self._folder / (_UNSAFE_FILE_CHARACTERS.sub("_", message_id.strip("<> ")) + ".eml")

    async def check(self) -> str:
        """The outbox folder exists (or can be made) and is writable."""
        try:
            await asyncio.to_thread(self._folder.mkdir, parents=True, exist_ok=True)
        except OSError as error:
            raise MailDeliveryError(f"outbox folder cannot be created ({error.strerror})", transient=False) from error
        if not os.access(self._folder, os.W_OK):
            raise MailDeliveryError("outbox folder is not writable", transient=False)
        return f"outbox folder {self._folder} is writable"


def _write_atomically(target: Path, data: bytes) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    temporary = target.with_suffix(".tmp")
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        with os.fdopen(descriptor, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, target)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
