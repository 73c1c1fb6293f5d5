"""A real SMTP server (aiosmtpd) on 127.0.0.1 for transport and outbox tests.

STARTTLS or implicit TLS with a certificate for 127.0.0.1 from a throwaway `trustme` CA, optional
AUTH (LOGIN only if asked, as Exchange Online), scripted refusals (421, 451, 550, ...) at AUTH, RCPT
or DATA, a connection dropped at the next MAIL
(a server that closed an idle session), and stop/start on the same port to play a server that goes
down and comes back. The server runs in its own thread (aiosmtpd's Controller),
so it answers while the test's event loop awaits the client.

    with smtp_server(tls="starttls", auth=("bot", "secret")) as server:
        transport = SmtpTransport(server.settings(username="bot", password="secret"))
        ...
        assert server.messages[0].rcpt_tos == ("welzijnshuis@sint-gillis-waas.be",)
"""

from __future__ import annotations

import asyncio
import socket
import ssl
import tempfile
import threading
from collections import deque
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import trustme
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session

from bot.delivery.smtp_transport import SmtpSettings

HOST = "127.0.0.1"
TlsMode = Literal["starttls", "implicit", "none"]
Stage = Literal["RCPT", "DATA"]


@dataclass(frozen=True)
class ReceivedMail:
    """One accepted message: the envelope and the exact bytes after DATA."""

    mail_from: str
    rcpt_tos: tuple[str, ...]
    data: bytes
    login: str | None  # the AUTH user name, None when the session did not log in
    tls: bool
    peer: Any = None  # the client's (host, port): the same for mails sent over one connection


class _Handler:
    """aiosmtpd handler; runs in the server thread, so every shared field goes through the lock."""

    def __init__(self, *, require_auth: bool) -> None:
        self._require_auth = require_auth
        self._lock = threading.Lock()
        self._messages: list[ReceivedMail] = []
        self._failures: dict[Stage, deque[int]] = {"RCPT": deque(), "DATA": deque()}
        self._login_failures: deque[str] = deque()  # whole replies, e.g. "454 4.7.0 ..."
        self._mail_script: deque[bool] = deque()  # per coming MAIL command: drop the connection?
        self._data_answer_delay = 0.0  # seconds between taking a message and saying so

    def fail_next(self, code: int, count: int, stage: Stage) -> None:
        with self._lock:
            self._failures[stage].extend([code] * count)

    def fail_next_login(self, reply: str, count: int) -> None:
        with self._lock:
            self._login_failures.extend([reply] * count)

    def take_login_failure(self) -> str | None:
        with self._lock:
            return self._login_failures.popleft() if self._login_failures else None

    def drop_next(self, count: int, after: int) -> None:
        with self._lock:
            self._mail_script.extend([False] * after + [True] * count)

    def answer_data_after(self, seconds: float) -> None:
        with self._lock:
            self._data_answer_delay = seconds

    def _take_drop(self) -> bool:
        with self._lock:
            return self._mail_script.popleft() if self._mail_script else False

    def messages(self) -> list[ReceivedMail]:
        with self._lock:
            return list(self._messages)

    def _take(self, stage: Stage) -> int | None:
        with self._lock:
            queue = self._failures[stage]
            return queue.popleft() if queue else None

    async def handle_MAIL(  # aiosmtpd hook names
        self, server: SMTP, session: Session, envelope: Envelope, address: str, mail_options: list[str]
    ) -> str:
        # aiosmtpd's own auth_required cannot be combined with implicit TLS (it only counts STARTTLS
        # as TLS), so the handler enforces it, with the same reply.
        if self._require_auth and not session.authenticated:
            return "530 5.7.0 Authentication required"
        if self._take_drop() and server.transport is not None:
            server.transport.close()  # as a server does that timed out an idle session: no reply at all
            return "421 4.4.2 connection dropped"  # written to a closed transport, so never seen
        envelope.mail_from = address
        envelope.mail_options.extend(mail_options)
        return "250 OK"

    async def handle_RCPT(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, rcpt_options: list[str]
    ) -> str:
        code = self._take("RCPT")
        if code is not None:
            # Like real servers, the refusal quotes the address: the transport must not pass it on.
            return f"{code} {code // 100}.1.1 <{address}>: recipient address rejected"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        code = self._take("DATA")
        if code is not None:
            recipients = ", ".join(envelope.rcpt_tos)
            return f"{code} {code // 100}.7.1 message from <{envelope.mail_from}> to <{recipients}> not accepted"
        content = envelope.original_content or envelope.content or b""
        auth_data = session.auth_data if session.authenticated else None
        login = auth_data.login.decode() if isinstance(auth_data, LoginPassword) else None
        mail = ReceivedMail(
            mail_from=str(envelope.mail_from),
            rcpt_tos=tuple(envelope.rcpt_tos),
            data=content if isinstance(content, bytes) else content.encode(),
            login=login,
            tls=session.ssl is not None or _over_tls(server),
            peer=session.peer,
        )
        with self._lock:
            self._messages.append(mail)
            delay = self._data_answer_delay
        if delay:  # the message is taken; the client hears so only later (or never, if it hangs up)
            await asyncio.sleep(delay)
        return "250 2.0.0 OK: queued"


def _over_tls(server: SMTP) -> bool:
    """Implicit TLS: aiosmtpd only fills `session.ssl` after STARTTLS, so ask the transport."""
    transport = server.transport
    return transport is not None and transport.get_extra_info("ssl_object") is not None


class SmtpTestServer:
    """The running server plus what a test needs: port, CA path, received messages, failure script."""

    def __init__(
        self,
        *,
        tls: TlsMode,
        auth: tuple[str, str] | None,
        ca: trustme.CA,
        ca_path: Path,
        cert_names: tuple[str, ...] = (HOST, "localhost"),
        login_only: bool = False,
    ) -> None:
        if auth is not None and tls == "none":
            raise ValueError("aiosmtpd refuses AUTH without TLS; use starttls or implicit with auth")
        self.host = HOST
        self.tls: TlsMode = tls
        self.auth = auth
        self.ca_path = ca_path
        self.port = free_port()
        self._login_only = login_only
        self._handler = _Handler(require_auth=auth is not None)
        self._server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ca.issue_cert(*cert_names).configure_cert(self._server_context)
        self._controller: Controller | None = None
        self._silent: socket.socket | None = None

    @property
    def messages(self) -> list[ReceivedMail]:
        """A snapshot of the accepted messages, oldest first."""
        return self._handler.messages()

    @property
    def running(self) -> bool:
        return self._controller is not None

    def fail_next(self, code: int, count: int = 1, *, stage: Stage = "DATA") -> None:
        """Answer the next `count` RCPT or DATA commands with `code` instead of accepting."""
        self._handler.fail_next(code, count, stage)

    def fail_next_login(self, reply: str, count: int = 1) -> None:
        """Answer the next `count` AUTH attempts with `reply` (a whole line: code and text), right password or not."""
        self._handler.fail_next_login(reply, count)

    def drop_next(self, count: int = 1, *, after: int = 0) -> None:
        """Close the connection, without a reply, at `count` MAIL commands after the next `after` ones."""
        self._handler.drop_next(count, after)

    def answer_data_after(self, seconds: float) -> None:
        """Take each message at once but answer its DATA only `seconds` later (a relay that is slow to confirm)."""
        self._handler.answer_data_after(seconds)

    def settings(self, **overrides: Any) -> SmtpSettings:
        """SmtpSettings that reach this server and trust its CA; `overrides` replace any field."""
        values: dict[str, Any] = {
            "host": self.host,
            "port": self.port,
            "tls": self.tls,
            "ca_file": None if self.tls == "none" else self.ca_path,
            "username": self.auth[0] if self.auth else None,
            "password": self.auth[1] if self.auth else None,
            "timeout_seconds": 5,
        }
        values.update(overrides)
        return SmtpSettings(**values)

    def start(self) -> None:
        """Listen on `port` (the same port after a `stop()` or `hang()`); blocks until the server answers."""
        self._close_silent()
        if self._controller is not None:
            return
        parameters: dict[str, Any] = {}
        if self.tls == "starttls":
            parameters.update(tls_context=self._server_context, require_starttls=True)
        if self.auth is not None:
            # With implicit TLS the whole session is encrypted, but aiosmtpd would not offer AUTH.
            parameters.update(authenticator=self._authenticate, auth_require_tls=self.tls != "implicit")
            if self._login_only:  # one mechanism: a client cannot try another after a refusal
                parameters.update(auth_exclude_mechanism=["PLAIN"])
        controller = Controller(
            self._handler,
            hostname=HOST,
            port=self.port,
            ssl_context=self._server_context if self.tls == "implicit" else None,
            server_hostname="smtp.test",  # else aiosmtpd asks DNS for this machine's name
            ready_timeout=10,
            **parameters,
        )
        controller.start()
        self._controller = controller

    def stop(self) -> None:
        """Close the listener and every open session: clients now get "connection refused"."""
        self._close_silent()
        controller, self._controller = self._controller, None
        if controller is not None:
            # A session the client just ended (QUIT) has its transport closing: let the server's loop
            # finish that before it stops, or the half-closed transport warns when it is collected,
            # in whichever test is running then.
            asyncio.run_coroutine_threadsafe(asyncio.sleep(0.02), controller.loop).result(timeout=5)
            controller.stop()

    def hang(self) -> None:
        """A relay that hangs: connections are taken but never greeted (clients time out); `start()` ends it.

        Nothing is accepted meanwhile; the connections still waiting when it ends are reset.
        """
        self.stop()
        silent = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        silent.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        silent.bind((HOST, self.port))
        silent.listen(128)
        self._silent = silent

    def _close_silent(self) -> None:
        silent, self._silent = self._silent, None
        if silent is not None:
            silent.close()

    def _authenticate(
        self, server: SMTP, session: Session, envelope: Envelope, mechanism: str, auth_data: Any
    ) -> AuthResult:
        failure = self._handler.take_login_failure()
        if failure is not None:
            return AuthResult(success=False, handled=False, message=failure)
        expected = self.auth
        if (
            expected is not None
            and isinstance(auth_data, LoginPassword)
            and auth_data.login == expected[0].encode()
            and auth_data.password == expected[1].encode()
        ):
            return AuthResult(success=True, auth_data=auth_data)
        return AuthResult(success=False, handled=False)  # aiosmtpd answers 535


def free_port() -> int:
    """A port nothing listens on right now (also what a "server down" test connects to)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((HOST, 0))
        port: int = probe.getsockname()[1]
        return port


@contextmanager
def smtp_server(
    tls: TlsMode = "starttls",
    auth: tuple[str, str] | None = None,
    *,
    cert_names: tuple[str, ...] = (HOST, "localhost"),
    login_only: bool = False,
) -> Iterator[SmtpTestServer]:
    """A started server with its own CA (written to a temporary `ca_path`); stopped on exit.

    `cert_names` are the names in the server certificate; give others to test a name mismatch.
    `login_only` offers AUTH LOGIN alone (not PLAIN too).
    """
    with tempfile.TemporaryDirectory(prefix="smtp-test-") as folder:
        ca = trustme.CA()
        ca_path = Path(folder) / "ca.pem"
        ca.cert_pem.write_to_path(str(ca_path))
        server = SmtpTestServer(
            tls=tls, auth=auth, ca=ca, ca_path=ca_path, cert_names=cert_names, login_only=login_only
        )
        server.start()
        try:
            yield server
        finally:
            server.stop()
