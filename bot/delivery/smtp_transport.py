"""Delivery over SMTP (the OCMW's or the organisation's relay) with `aiosmtplib`.

TLS is STARTTLS or implicit TLS, always with certificate verification; plaintext only to a loopback
relay. Failures become `MailDeliveryError`s whose reason holds a reply code and a fixed text, never
the server's own words: a refusal may echo the recipient address or parts of the message.
"""

from __future__ import annotations

import asyncio
import contextlib
import email
import email.policy
import errno
import ipaddress
import socket
import ssl
from collections.abc import AsyncIterator, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, TypeVar

import aiosmtplib
from aiosmtplib.email import parse_address
from aiosmtplib.protocol import normalize_message_line_endings

from bot.delivery.mail_message import OutgoingMail
from bot.delivery.mail_transport import MailDeliveryError, PartlyDelivered

TlsMode = Literal["starttls", "implicit", "none"]
_TLS_MODES: tuple[TlsMode, ...] = ("starttls", "implicit", "none")
_E = TypeVar("_E", bound=BaseException)


@dataclass(frozen=True)
class SmtpSettings:
    """Where and how to reach the SMTP server; validated by `SmtpTransport`."""

    host: str
    port: int
    tls: TlsMode = "starttls"
    ca_file: Path | None = None
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    timeout_seconds: float = 30
    #: The wait for the reply to the message's end (a relay may scan it first): RFC 5321 4.5.3.2.6's 10 minutes,
    #: bounded by the delivery worker's cut-off of a send (`wiring.build_mail_transport`).
    final_reply_seconds: float = 600


def is_loopback_host(host: str) -> bool:
    """True for `localhost` and loopback IP literals: the only hosts plaintext SMTP may go to."""
    name = host.strip().rstrip(".").lower()
    if name == "localhost" or name.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(name.strip("[]")).is_loopback
    except ValueError:
        return False


class SmtpTransport:
    """Sends over SMTP: connect, TLS, EHLO, optional login, one MAIL transaction per message, QUIT.

    `send` uses a session of its own; `send_many` sends several messages over one session and answers
    for each on its own; `session()` keeps one connection for mails sent one after the other (each of
    the outbox worker's lanes has one for its pass). The bytes go as they are: no parsing, no
    re-encoding (unless a message has 8-bit content and the server lacks 8BITMIME). Nothing stays open
    beyond such a call or block, so the transport holds no state a silently dropped connection could spoil.
    """

    def __init__(self, settings: SmtpSettings) -> None:
        if settings.tls not in _TLS_MODES:
            raise ValueError(f"SMTP TLS mode must be one of {', '.join(_TLS_MODES)}")
        if settings.tls == "none" and not is_loopback_host(settings.host):
            raise ValueError(
                "SMTP without TLS is only allowed to a loopback host (localhost, 127.0.0.1, ::1); "
                "use tls='starttls' or tls='implicit' for any other server"
            )
        if not 0 < settings.port < 65536:
            raise ValueError("SMTP port must be between 1 and 65535")
        if settings.timeout_seconds <= 0 or settings.final_reply_seconds <= 0:
            raise ValueError("SMTP timeouts must be positive")
        if (settings.username is None) != (settings.password is None):
            raise ValueError("SMTP username and password must be given together")
        self._settings = settings
        self._tls_context = None if settings.tls == "none" else _verifying_context(settings.ca_file)
        self._hostname: str | None = None

    async def _local_hostname(self) -> str:
        """This machine's name for EHLO, looked up once: aiosmtplib asks DNS (in a thread) per connection."""
        if self._hostname is None:
            self._hostname = await asyncio.to_thread(socket.getfqdn)
        return self._hostname

    async def send(self, mail: OutgoingMail) -> None:
        """Deliver `mail` to its envelope recipients; every refusal raises."""
        (result,) = await self.send_many([mail])
        if result is not None:
            raise result

    async def send_many(self, mails: Sequence[OutgoingMail]) -> list[MailDeliveryError | None]:
        """Deliver each mail over one session; per mail, in order, None (accepted) or why not.

        A refusal (4xx/5xx) of one mail does not touch the others: the envelope is reset and the next
        mail goes. A connection the server dropped after an earlier mail (an idle timeout, 421) is
        opened again, and the mail that found it gone is sent once more over the new one. When a
        session cannot be opened at all (server down, TLS, login), that reason is every remaining
        mail's: trying each again at once would only repeat it.
        """
        results: list[MailDeliveryError | None] = []
        session = _Session(self._settings, self._tls_context, await self._local_hostname())
        try:
            for mail in mails:
                if session.unavailable is not None:
                    results.append(session.unavailable)
                    continue
                results.append(await session.deliver(mail))
        finally:
            await session.close()
        return results

    @contextlib.asynccontextmanager
    async def session(self) -> AsyncIterator[SmtpSession]:
        """One connection for the mails `send` gets inside the block (opened with the first), QUIT at its end."""
        session = SmtpSession(_Session(self._settings, self._tls_context, await self._local_hostname()))
        try:
            yield session
        finally:
            await session.close()

    async def check(self) -> str:
        """Connect, TLS, EHLO, login if configured, QUIT; sends nothing."""
        session = _Session(self._settings, self._tls_context, await self._local_hostname())
        try:
            await session.open()
        except MailDeliveryError:
            raise
        except Exception as error:
            raise _delivery_error(error) from error
        finally:
            await session.close()
        settings = self._settings
        tls = {"starttls": "STARTTLS", "implicit": "implicit TLS", "none": "no TLS (loopback)"}[settings.tls]
        login = ", logged in" if settings.username is not None else ""
        return f"SMTP server {settings.host}:{settings.port} reachable ({tls}{login})"


class SmtpSession:
    """`send` over one kept connection: a refusal raises for its mail only; a dropped connection is opened again.

    A send cut off midway (the worker's timeout) closes the connection: the server's state is unknown,
    so the next mail starts on a new one.
    """

    def __init__(self, session: _Session) -> None:
        self._session = session

    async def send(self, mail: OutgoingMail) -> None:
        self._session.unavailable = None  # each mail tries to connect: a server down for one may be back
        try:
            error = await self._session.deliver(mail)
        except BaseException:
            self._session.drop()
            raise
        if error is not None:
            raise error

    async def close(self) -> None:
        await self._session.close()


class _Session:
    """One SMTP connection at a time (opened when needed, again after a drop), always ended with QUIT or close."""

    def __init__(self, settings: SmtpSettings, tls_context: ssl.SSLContext | None, local_hostname: str) -> None:
        self._settings = settings
        self._tls_context = tls_context
        self._local_hostname = local_hostname
        self._client: aiosmtplib.SMTP | None = None
        self._used = 0  # MAIL transactions begun on the current connection
        #: Why no session could be opened; then every later mail gets this answer.
        self.unavailable: MailDeliveryError | None = None

    async def deliver(self, mail: OutgoingMail) -> MailDeliveryError | None:
        """One MAIL transaction; None when the server accepted it for every recipient, `PartlyDelivered` for some."""
        if not mail.sender or not mail.recipients:
            return MailDeliveryError("message has no From or no To address", transient=False)
        reused = self._client is not None and self._client.is_connected and self._used > 0
        error, dropped = await self._transaction(mail)
        if dropped and reused:  # the server closed a connection it kept after a mail: once more, on a fresh one
            error, _ = await self._transaction(mail)
        return error

    async def _transaction(self, mail: OutgoingMail) -> tuple[MailDeliveryError | None, bool]:
        """(why not accepted, or None; whether the connection turned out to be gone)."""
        try:
            client = await self._connected()
        except Exception as error:
            self.unavailable = error if isinstance(error, MailDeliveryError) else _caused(_delivery_error(error), error)
            return self.unavailable, False
        self._used += 1
        try:
            data = mail.data if mail.data.isascii() or client.supports_extension("8bitmime") else _seven_bit(mail.data)
            errors = await _mail_transaction(client, mail, data, self._settings.final_reply_seconds)
        except aiosmtplib.SMTPRecipientsRefused as error:
            return _caused(_recipients_error(error.recipients), error), False
        except Exception as error:
            # 421: "closing the transmission channel", as a server does at its session limit.
            gone = isinstance(error, aiosmtplib.SMTPServerDisconnected) or getattr(error, "code", None) == 421
            return _caused(_delivery_error(error), error), gone
        finally:
            if not client.is_connected:
                self.drop()  # dropped, a 421 or a timeout: the next mail opens a new connection
        if errors:  # taken for the others: they have it, whatever becomes of the refused ones
            accepted = tuple(address for address in mail.recipients if address not in errors)
            return PartlyDelivered(_recipients_error(list(errors.values())), accepted=accepted,
                                   refused=tuple(errors)), False
        return None, False

    async def open(self) -> aiosmtplib.SMTP:
        """Connect, secure, greet and log in; raises what aiosmtplib raises, or MailDeliveryError."""
        settings = self._settings
        client = aiosmtplib.SMTP(
            hostname=settings.host,
            port=settings.port,
            use_tls=settings.tls == "implicit",
            start_tls=False,  # done below, so a server without STARTTLS is an error
            tls_context=self._tls_context,
            timeout=settings.timeout_seconds,
            local_hostname=self._local_hostname,
        )
        try:
            await client.connect()
            await client.ehlo()
            if settings.tls == "starttls":
                if not client.supports_extension("starttls"):
                    raise MailDeliveryError("SMTP server does not offer STARTTLS", transient=False)
                await client.starttls(tls_context=self._tls_context)
                await client.ehlo()  # RFC 3207: what was announced before TLS no longer counts
            if settings.username is not None and settings.password is not None:
                if not client.supports_extension("auth"):
                    raise MailDeliveryError("SMTP server does not offer AUTH (login)", transient=False)
                await client.login(settings.username, settings.password)
        except BaseException:
            client.close()
            raise
        self._client, self._used = client, 0
        return client

    async def close(self) -> None:
        """QUIT if still connected; a failed QUIT changes nothing about what was delivered."""
        client, self._client = self._client, None
        if client is None or not client.is_connected:
            return
        try:
            await client.quit()
        except (aiosmtplib.SMTPException, OSError, TimeoutError):
            pass
        finally:
            client.close()

    async def _connected(self) -> aiosmtplib.SMTP:
        if self._client is not None and self._client.is_connected:
            return self._client
        self.drop()
        return await self.open()

    def drop(self) -> None:
        """Close the connection without QUIT (it may be mid-command); the next mail opens a new one."""
        client, self._client = self._client, None
        if client is not None:
            client.close()


def _caused(failure: MailDeliveryError, error: BaseException) -> MailDeliveryError:
    """Keep aiosmtplib's exception as the cause, for the log's traceback, as `raise ... from` would."""
    failure.__cause__ = error
    return failure


async def _mail_transaction(
    client: aiosmtplib.SMTP, mail: OutgoingMail, data: bytes, final_reply_seconds: float
) -> dict[str, aiosmtplib.SMTPRecipientRefused]:
    """MAIL, RCPT per recipient, DATA, as aiosmtplib's `sendmail`; the recipients refused while others took it.

    `sendmail` waits its one command timeout for every reply; here only the reply to the message's end (and
    DATA's 354) gets `final_reply_seconds`: a relay that scans the message before it answers has queued it, and
    giving up then would send it again. A refusal resets the envelope (RSET) for the next mail, as `sendmail` does.
    """
    for address in (mail.sender, *mail.recipients):
        parse_address(address)  # ValueError for an address unsafe on a command line, before the envelope begins
    utf8 = not (mail.sender.isascii() and all(address.isascii() for address in mail.recipients))
    encoding = "utf-8" if utf8 else "ascii"
    if utf8 and not client.supports_extension("smtputf8"):
        raise aiosmtplib.SMTPNotSupported("SMTPUTF8 is not supported by this server")
    options = _options(client, mail, data, utf8=utf8)
    try:
        await client.mail(mail.sender, options=options, encoding=encoding)
        refused: dict[str, aiosmtplib.SMTPRecipientRefused] = {}
        for recipient in mail.recipients:
            try:
                await client.rcpt(recipient, encoding=encoding)
            except aiosmtplib.SMTPRecipientRefused as error:
                refused[recipient] = error
        if len(refused) == len(mail.recipients):
            raise aiosmtplib.SMTPRecipientsRefused(list(refused.values()))
        await client.data(data, timeout=final_reply_seconds)
    except (aiosmtplib.SMTPResponseException, aiosmtplib.SMTPRecipientsRefused):
        with contextlib.suppress(ConnectionError, aiosmtplib.SMTPResponseException):
            await client.rset()
        raise
    return refused


def _options(client: aiosmtplib.SMTP, mail: OutgoingMail, data: bytes, *, utf8: bool) -> list[str]:
    """MAIL FROM parameters: SIZE when offered, SMTPUTF8 for non-ASCII addresses, BODY=8BITMIME for 8-bit content."""
    options = []
    if client.supports_extension("size"):  # RFC 1870: the octets as sent, CRLF line ends
        options.append(f"SIZE={len(normalize_message_line_endings(data))}")
    if utf8:
        options.append("SMTPUTF8")
    if not data.isascii() and client.supports_extension("8bitmime"):
        options.append("BODY=8BITMIME")
    return options


def _seven_bit(data: bytes) -> bytes:
    """The rare case (the referral mail is 7-bit already): what aiosmtplib's `send_message` did."""
    message = email.message_from_bytes(data, policy=email.policy.SMTP)
    return message.as_bytes(policy=email.policy.SMTP.clone(cte_type="7bit"))


def _verifying_context(ca_file: Path | None) -> ssl.SSLContext:
    """System trust plus `ca_file`; hostname and chain are always checked."""
    context = ssl.create_default_context()
    if ca_file is not None:
        try:
            context.load_verify_locations(cafile=str(ca_file))
        except (OSError, ssl.SSLError) as error:
            raise ValueError("SMTP CA file cannot be read as PEM certificates") from error
    return context


# Only the reply code reaches the reason: the server's text may quote the address or the subject.
_STAGES: tuple[tuple[type[aiosmtplib.SMTPResponseException], str], ...] = (
    (aiosmtplib.SMTPConnectResponseError, "on connect"),
    (aiosmtplib.SMTPHeloError, "to EHLO"),
    (aiosmtplib.SMTPAuthenticationError, "to login (AUTH)"),  # 454/421: the relay's login backend, for now
    (aiosmtplib.SMTPSenderRefused, "to the sender (MAIL FROM)"),
    (aiosmtplib.SMTPRecipientRefused, "to a recipient (RCPT)"),
    (aiosmtplib.SMTPDataError, "to the message (DATA)"),
)


def _delivery_error(error: BaseException) -> MailDeliveryError:
    """Map an aiosmtplib/ssl/socket failure to a reason without server text and a transient flag."""
    certificate = _find_in_chain(error, ssl.SSLCertVerificationError)
    if certificate is not None:
        detail = certificate.verify_message or "verification failed"
        return MailDeliveryError(f"SMTP server certificate not trusted ({detail})", transient=False)
    if isinstance(error, aiosmtplib.SMTPResponseException):
        stage = next((text for kind, text in _STAGES if isinstance(error, kind)), "to a command")
        return _reply_error(error.code, stage)
    if isinstance(error, TimeoutError):  # aiosmtplib's timeout errors are TimeoutErrors too
        return MailDeliveryError("SMTP server did not answer in time", transient=True)
    tls_failure = _find_in_chain(error, ssl.SSLError)
    if tls_failure is not None and not isinstance(tls_failure, ssl.SSLEOFError | ssl.SSLZeroReturnError):
        # A protocol mismatch (e.g. implicit TLS against a STARTTLS port) does not heal by itself.
        return MailDeliveryError(f"TLS handshake with the SMTP server failed ({tls_failure.reason})", transient=False)
    if isinstance(error, aiosmtplib.SMTPServerDisconnected) or tls_failure is not None:
        return MailDeliveryError("SMTP server closed the connection", transient=True)
    network = _find_in_chain(error, OSError)
    if network is not None:
        # aiosmtplib's SMTPConnectError is itself an OSError, without errno: name the cause's errno.
        numbers = [item.errno for item in _chain(error) if isinstance(item, OSError) and item.errno]
        name = errno.errorcode.get(numbers[0], "network error") if numbers else "network error"
        return MailDeliveryError(f"SMTP server not reachable ({name})", transient=True)
    if isinstance(error, aiosmtplib.SMTPNotSupported):
        return MailDeliveryError("SMTP server lacks an extension the message needs", transient=False)
    if isinstance(error, aiosmtplib.SMTPException):
        return MailDeliveryError(f"SMTP exchange failed ({type(error).__name__})", transient=False)
    return MailDeliveryError(f"SMTP delivery failed ({type(error).__name__})", transient=False)


def _recipients_error(refusals: list[aiosmtplib.SMTPRecipientRefused]) -> MailDeliveryError:
    """Recipients refused: permanent only when every refusal is permanent."""
    codes = [refusal.code for refusal in refusals] or [0]
    transient_codes = [code for code in codes if 400 <= code < 500]
    return _reply_error(transient_codes[0] if transient_codes else codes[0], "to a recipient (RCPT)")


def _reply_error(code: int, stage: str) -> MailDeliveryError:
    """4xx: try again later; 5xx: the server will keep saying no; anything else: a broken server."""
    if 400 <= code < 500:
        return MailDeliveryError(f"SMTP {code} from server {stage}: temporary failure", transient=True)
    if 500 <= code < 600:
        return MailDeliveryError(f"SMTP {code} from server {stage}: refused", transient=False)
    return MailDeliveryError(f"SMTP server sent an invalid reply {stage}", transient=True)


def _chain(error: BaseException) -> Iterator[BaseException]:
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        yield current
        current = current.__cause__ or current.__context__


def _find_in_chain(error: BaseException, kind: type[_E]) -> _E | None:
    return next((item for item in _chain(error) if isinstance(item, kind)), None)
