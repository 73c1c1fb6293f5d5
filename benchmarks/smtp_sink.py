"""An SMTP server that accepts every mail, in a process of its own: `python -m benchmarks.smtp_sink SMTP HTTP`.

The benchmark's mail relay: aiosmtpd on 127.0.0.1:SMTP without TLS (the bot runs with `SMTP_TLS=none`
and `SMTP_ALLOW_PLAINTEXT_ON_LOOPBACK=1`), keeping for each mail only its Message-ID and the moment
it was accepted (`time.monotonic()`, the machine-wide clock the load generator reads too). Its CPU is
not the bot's, and it does not share the bot's CPU. `GET /_bench/mails?after=N` on 127.0.0.1:HTTP
answers `{"count": total, "mails": [[message_id, monotonic], ...]}` for the mails after the first N.
"""

from __future__ import annotations

import argparse
import asyncio
import re
import threading
import time
from typing import Any

from aiohttp import web
from aiosmtpd.controller import Controller

MAILS_PATH = "/_bench/mails"
_MESSAGE_ID = re.compile(rb"^Message-ID:[ \t]*(<[^>\r\n]*>)", re.IGNORECASE | re.MULTILINE)


class _Handler:
    """Accepts every message; records (Message-ID, time accepted). Runs in aiosmtpd's thread."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.mails: list[tuple[str, float]] = []

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:  # aiosmtpd's hook name
        content = envelope.original_content or envelope.content or b""
        head = content[: content.find(b"\r\n\r\n")] if isinstance(content, bytes) else b""
        match = _MESSAGE_ID.search(head)
        with self._lock:
            self.mails.append((match.group(1).decode("ascii", "replace") if match else "", time.monotonic()))
        return "250 2.0.0 OK: queued"

    def after(self, index: int) -> tuple[int, list[tuple[str, float]]]:
        with self._lock:
            return len(self.mails), self.mails[index:]


def make_app(handler: _Handler) -> web.Application:
    """The stats route."""

    async def mails(request: web.Request) -> web.Response:
        count, tail = handler.after(int(request.query.get("after", "0")))
        return web.json_response({"count": count, "mails": tail})

    app = web.Application()
    app.router.add_get(MAILS_PATH, mails)
    return app


async def _serve(smtp_port: int, http_port: int) -> None:
    handler = _Handler()
    controller = Controller(handler, hostname="127.0.0.1", port=smtp_port, server_hostname="bench.sink",
                            ready_timeout=10)
    controller.start()
    runner = web.AppRunner(make_app(handler), access_log=None)
    await runner.setup()
    try:
        await web.TCPSite(runner, "127.0.0.1", http_port).start()
        await asyncio.Event().wait()  # until SIGTERM ends the process
    finally:
        await runner.cleanup()
        controller.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("smtp_port", type=int)
    parser.add_argument("http_port", type=int)
    arguments = parser.parse_args()
    asyncio.run(_serve(arguments.smtp_port, arguments.http_port))


if __name__ == "__main__":
    main()
