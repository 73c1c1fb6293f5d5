"""An SMTP relay that accepts every mail, in a process of its own: `python -m benchmarks.mail_sink SMTP HTTP`.

aiosmtpd on 127.0.0.1:SMTP without TLS (the bot runs with `SMTP_TLS=none` and
`SMTP_ALLOW_PLAINTEXT_ON_LOOPBACK=1`), in the process's own event loop, so its CPU is neither the
bot's nor the load generator's. It keeps only each mail's Message-ID. `GET /_bench/mails` on
127.0.0.1:HTTP answers `{"count": accepted, "distinct": distinct Message-IDs, "more_than_once": [...]}`:
equal counts mean every mail arrived once. `GET /_bench/mails/<reference>` answers 200 once the mail
whose Message-ID holds that referral's reference has arrived (waiting for it up to 60 s; then 504),
so a referrer can wait for its referral to be delivered before it starts the next. `DELETE /_bench/mails`
forgets every mail (a new phase on a new database may draw a reference an earlier one had).
"""

from __future__ import annotations

import argparse
import asyncio
import re
from collections import Counter, defaultdict
from typing import Any

from aiohttp import web
from aiosmtpd.smtp import SMTP

MAILS_PATH = "/_bench/mails"
WAIT_SECONDS = 60.0
_MESSAGE_ID = re.compile(rb"^Message-ID:[ \t]*(<[^>\r\n]*>)", re.IGNORECASE | re.MULTILINE)
_REFERENCE = re.compile(rb"VD-\d{8}-[0-9A-Z]{6}")


class _Handler:
    """Accepts every message; counts its Message-ID (from the headers only)."""

    def __init__(self) -> None:
        self.message_ids: Counter[bytes] = Counter()
        self.arrived: defaultdict[str, asyncio.Event] = defaultdict(asyncio.Event)

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:  # aiosmtpd's hook name
        content = envelope.original_content or envelope.content or b""
        head = content[: content.find(b"\r\n\r\n")] if isinstance(content, bytes) else b""
        match = _MESSAGE_ID.search(head)
        message_id = match.group(1) if match else b""
        self.message_ids[message_id] += 1
        reference = _REFERENCE.search(message_id)
        if reference is not None:
            self.arrived[reference.group(0).decode()].set()
        return "250 2.0.0 OK: queued"


async def serve(smtp_port: int, http_port: int) -> None:
    """Listen on both ports until cancelled."""
    handler = _Handler()
    loop = asyncio.get_running_loop()
    smtp = await loop.create_server(lambda: SMTP(handler, hostname="sink.test"), "127.0.0.1", smtp_port)

    async def mails(_: web.Request) -> web.Response:
        twice = sorted(message_id.decode() for message_id, count in handler.message_ids.items() if count > 1)
        return web.json_response({"count": sum(handler.message_ids.values()), "distinct": len(handler.message_ids),
                                  "more_than_once": twice})

    async def wait_for(request: web.Request) -> web.Response:
        arrived = handler.arrived[request.match_info["reference"]]
        try:
            await asyncio.wait_for(arrived.wait(), WAIT_SECONDS)
        except TimeoutError:
            return web.Response(status=504)
        return web.Response(status=200)

    async def forget(_: web.Request) -> web.Response:
        handler.message_ids.clear()
        handler.arrived.clear()
        return web.Response(status=204)

    app = web.Application()
    app.router.add_get(MAILS_PATH, mails)
    app.router.add_delete(MAILS_PATH, forget)
    app.router.add_get(MAILS_PATH + "/{reference}", wait_for)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", http_port).start()
    try:
        await asyncio.Event().wait()
    finally:
        smtp.close()
        await runner.cleanup()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("smtp_port", type=int)
    parser.add_argument("http_port", type=int)
    arguments = parser.parse_args()
    asyncio.run(serve(arguments.smtp_port, arguments.http_port))


if __name__ == "__main__":
    main()
