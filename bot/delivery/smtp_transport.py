"""Delivery over SMTP (the OCMW's or the organisation's relay) with `aiosmtplib`.

TLS is STARTTLS or implicit TLS, always with certificate verification; plaintext only to a loopback
relay. Failures become `MailDeliveryError`s whose reason holds a reply code and a fixed text, never
the server's own words: a refusal may echo the recipient address or parts of the message.
"""

from __future__ import annotations

import errno
import ipaddress
import ssl
from collections.abc import Iterator
from dataclasses import dataclass, field
from email.message import EmailMessage
from pathlib import Path
from typing import Literal, TypeVar

import aiosmtplib

from bot.delivery.mail_transport import MailDeliveryError

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
    """Sends each message in its own SMTP session: connect, TLS, EHLO, optional login, MAIL, QUIT.

    A session per message keeps the transport stateless; referrals are a few a day, so a kept-open
    connection would only add a failure mode (a server that silently dropped it).
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
        if settings.timeout_seconds <= 0:
            raise ValueError("SMTP timeout must be positive")
        if (settings.username is None) != (settings.password is None):
            raise ValueError("SMTP username and password must be given together")
        self._settings = settings
        self._tls_context = None if settings.tls == "none" else _verifying_context(settings.ca_file)

    async def send(self, message: EmailMessage) -> None:
        """Deliver `message` to its `To`/`Cc`/`Bcc` recipients; every refusal raises."""
        try:
            async with self._session() as client:
                refused = await client.send_message(message)
        except aiosmtplib.SMTPRecipientsRefused as error:
            raise _recipients_error(error.recipients) from error
        except MailDeliveryError:
            raise
        except Exception as error:
            raise _delivery_error(error) from error
        # With several recipients the server may refuse some and accept others: still a failure.
        errors, _ = refused
        if errors:
            first_code = next(iter(errors.values())).code
            raise _reply_error(first_code, "to a recipient (RCPT)")

    async def check(self) -> str:
        """Connect, TLS, EHLO, login if configured, QUIT; sends nothing."""
        try:
            async with self._session():
                pass
        except MailDeliveryError:
            raise
        except Exception as error:
            raise _delivery_error(error) from error
        settings = self._settings
        tls = {"starttls": "STARTTLS", "implicit": "implicit TLS", "none": "no TLS (loopback)"}[settings.tls]
        login = ", logged in" if settings.username is not None else ""
        return f"SMTP server {settings.host}:{settings.port} reachable ({tls}{login})"

    def _session(self) -> _Session:
        settings = self._settings
        client = aiosmtplib.SMTP(
            hostname=settings.host,
            port=settings.port,
            use_tls=settings.tls == "implicit",
            start_tls=False,  # done by `_Session` itself, so a server without STARTTLS is an error
            tls_context=self._tls_context,
            timeout=settings.timeout_seconds,
        )
        return _Session(client, settings, self._tls_context)


class _Session:
    """`async with`: an open, secured, logged-in SMTP session that always ends with QUIT or close."""

    def __init__(self, client: aiosmtplib.SMTP, settings: SmtpSettings, tls_context: ssl.SSLContext | None) -> None:
        self._client = client
        self._settings = settings
        self._tls_context = tls_context

    async def __aenter__(self) -> aiosmtplib.SMTP:
        client, settings = self._client, self._settings
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
        return client

    async def __aexit__(self, *_: object) -> None:
        client = self._client
        if not client.is_connected:
            return
        try:
            await client.quit()
        except (aiosmtplib.SMTPException, OSError, TimeoutError):
            pass  # the mail went out (or the error is already raised): a failed QUIT changes nothing
        finally:
            client.close()


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
    (aiosmtplib.SMTPAuthenticationError, "to login (AUTH)"),
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
    if isinstance(error, aiosmtplib.SMTPAuthenticationError):
        return MailDeliveryError(f"SMTP {error.code} from server: login refused", transient=False)
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
    """All recipients refused: permanent only when every refusal is permanent."""
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
