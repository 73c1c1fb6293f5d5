"""How a finished mail leaves the bot.

`MailTransport` is the one interface; the embedded default writes each message as an RFC 5322
`.eml` file into an outbox folder: exactly the bytes an SMTP server would receive. That folder
keeps a copy of what was sent, so it also is a `SentCopies`: the copy goes when the OCMW confirms
it deleted the data. SMTP and Graph keep nothing (`NoSentCopies`).

A transport may also offer `session()`: several mails, one after the other, over one connection
(`mail_session` falls back to the transport itself).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager
from pathlib import Path
from typing import Protocol, runtime_checkable

from bot.delivery.mail_message import OutgoingMail


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


class PartlyDelivered(MailDeliveryError):
    """The mail went to some recipients (`accepted`) and not to the others (`refused`): `reason` says why not.

    Only SMTP can say so (a mail with several recipients, some refused at RCPT); sending it again as it was
    would give the ones in `accepted` another copy. `transient` is True when any refusal may heal.
    """

    def __init__(self, failure: MailDeliveryError, *, accepted: tuple[str, ...], refused: tuple[str, ...]) -> None:
        super().__init__(failure.reason, transient=failure.transient, retry_after=failure.retry_after)
        self.accepted = accepted
        self.refused = refused


class MailTransport(Protocol):
    """Delivers one complete message, its bytes as they are; raises MailDeliveryError when it cannot."""

    async def send(self, mail: OutgoingMail) -> None:
        """Deliver `mail.data` to `mail.recipients`."""
        ...

    async def check(self) -> str:
        """Verify the transport is reachable and authenticated without sending; returns a short
        description for `python -m bot check`, raises MailDeliveryError when it is not."""
        ...


class MailSender(Protocol):
    """What sends one mail: a transport, or one of its sessions."""

    async def send(self, mail: OutgoingMail) -> None:
        """Deliver `mail`; raise MailDeliveryError when it cannot."""
        ...


@runtime_checkable
class SessionTransport(Protocol):
    """A transport that can keep one connection for several mails sent one after the other."""

    def session(self) -> AbstractAsyncContextManager[MailSender]:
        """A sender whose connection opens with its first mail and closes when the block ends."""
        ...


@contextlib.asynccontextmanager
async def mail_session(transport: MailTransport) -> AsyncIterator[MailSender]:
    """The transport's session when it has them, else the transport itself (a connection per mail)."""
    if isinstance(transport, SessionTransport):
        async with transport.session() as session:
            yield session
    else:
        yield transport


@runtime_checkable
class SentCopies(Protocol):
    """A transport that keeps a copy of each sent message on this machine."""

    def remove_copy(self, message_id: str) -> None:
        """Remove the copy of the message with this Message-ID, if there is one; OSError if it cannot."""
        ...

    def holds_any(self) -> bool:
        """Whether any copy (or half-written one) is kept now: with none, a sweep has nothing to look up."""
        ...


class NoSentCopies:
    """What SMTP and Graph keep once a message left: nothing, so there is nothing to remove."""

    def remove_copy(self, message_id: str) -> None:
        """Nothing kept, nothing to do."""

    def holds_any(self) -> bool:
        """Never."""
        return False


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

    async def send(self, mail: OutgoingMail) -> None:
        """Write the message; a full disk or a permission problem is a transient failure."""
        if not mail.message_id:
            raise MailDeliveryError("message has no Message-ID", transient=False)
        try:
            await asyncio.to_thread(_write_atomically, self._file_for(mail.message_id), mail.data)
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

    def holds_any(self) -> bool:
        """A `.eml` or `.tmp` file is in the folder (one directory read); True when it cannot be read."""
        try:
            with os.scandir(self._folder) as entries:
                return any(entry.name.endswith((".eml", ".tmp")) for entry in entries)
        except FileNotFoundError:
            return False
        except OSError:
            return True  # let the removals try, and log what stops them

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
