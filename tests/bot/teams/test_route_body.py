"""The whole request is read however it arrives: in several TCP segments, with Content-Length or chunked.

Teams does not retry a 4xx; a card action answered "body is not JSON" because its body came in two
segments is a click lost. These tests write the HTTP request over a raw socket, pausing between
the pieces so each goes out as its own segment.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
import socket
from typing import Any
from urllib.parse import urlsplit

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.support.activities import TeamsUser
from tests.support.bot_server import BotDriver
from tests.support.card_reading import actions

PAUSE_SECONDS = 0.005


async def _raw_exchange(bot: BotDriver, pieces: list[bytes]) -> tuple[int, bytes]:
    """Write `pieces` with a pause between each (Nagle off: one segment each); read the whole answer."""
    address = urlsplit(bot.bot_url)
    reader, writer = await asyncio.open_connection(address.hostname, address.port)
    sock = writer.get_extra_info("socket")
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    try:
        for piece in pieces:
            writer.write(piece)
            await writer.drain()
            await asyncio.sleep(PAUSE_SECONDS)
        head = await reader.readuntil(b"\r\n\r\n")
        status = int(head.split(b" ", 2)[1])
        length = next(int(line.split(b":", 1)[1]) for line in head.split(b"\r\n")
                      if line.lower().startswith(b"content-length:"))
        return status, await reader.readexactly(length)
    finally:
        writer.close()
        await writer.wait_closed()


def _head(bot: BotDriver, extra: str) -> bytes:
    host = urlsplit(bot.bot_url).netloc
    return (f"POST /api/messages HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"
            f"Connection: close\r\n{extra}\r\n").encode()


def _card_action(bot: BotDriver, user: TeamsUser) -> bytes:
    return json.dumps(user.card_action(bot.service_url, "referral.start", {})).encode()


def _assert_card(status: int, body: bytes) -> None:
    assert status == 200, body[:200]
    answer: dict[str, Any] = json.loads(body)
    assert "referral.consent" in actions(answer["value"])


@pytest.mark.parametrize("split", ["at-byte-1", "in-the-middle", "every-1000-bytes"])
async def test_a_body_in_several_segments_with_content_length(
    bot: BotDriver, referrer: TeamsUser, split: str
) -> None:
    body = _card_action(bot, referrer)
    head = _head(bot, f"Content-Length: {len(body)}\r\n")
    cuts = {"at-byte-1": [1], "in-the-middle": [len(body) // 2],
            "every-1000-bytes": list(range(1000, len(body), 1000))}[split]
    bounds = [0, *cuts, len(body)]
    pieces = [head] + [body[start:end] for start, end in itertools.pairwise(bounds)]
    _assert_card(*await _raw_exchange(bot, pieces))


async def test_a_chunked_body(bot: BotDriver, referrer: TeamsUser) -> None:
    body = _card_action(bot, referrer)
    chunks = [body[:1], body[1:len(body) // 2], body[len(body) // 2:]]
    pieces = [_head(bot, "Transfer-Encoding: chunked\r\n")]
    pieces += [f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n" for chunk in chunks]
    pieces.append(b"0\r\n\r\n")
    _assert_card(*await _raw_exchange(bot, pieces))


async def test_a_chunked_body_over_the_limit_is_413(bot: BotDriver) -> None:
    chunk = b"x" * (64 * 1024)
    pieces = [_head(bot, "Transfer-Encoding: chunked\r\n")]
    pieces += [f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n" for _ in range(5)]
    pieces.append(b"0\r\n\r\n")
    status, _ = await _raw_exchange(bot, pieces)
    assert status == 413


async def test_a_message_in_segments_gets_its_reply(bot: BotDriver, referrer: TeamsUser) -> None:
    body = json.dumps(referrer.message(bot.service_url, "hulp")).encode()
    status, _ = await _raw_exchange(bot, [_head(bot, f"Content-Length: {len(body)}\r\n"), body[:7], body[7:]])
    assert status == 202
    await bot.settle()
    [reply] = bot.connector.calls
    assert "referral.start" in actions(reply.body["attachments"][0]["content"])


async def test_a_request_cut_off_in_its_body_is_no_server_error(
    metered_bot: BotDriver, referrer: TeamsUser, caplog: pytest.LogCaptureFixture
) -> None:
    """The sender goes away while the body is on its way (a connection reset, a front end recycled, anyone on
    the internet): nobody waits for an answer and the bot did nothing wrong. It was an ERROR traceback
    ("Error handling request", ConnectionResetError from `read_whole_body`) and a 500 on /api/messages, which
    the "5xx answers" alert counts as users seeing errors: three such cut-offs on a quiet evening page the
    operator. A client that goes away is 499, as when a turn is cancelled."""
    caplog.set_level(logging.INFO, logger="bot.teams.route")
    body = _card_action(metered_bot, referrer)
    address = urlsplit(metered_bot.bot_url)
    for _ in range(3):
        _, writer = await asyncio.open_connection(address.hostname, address.port)
        writer.write(_head(metered_bot, f"Content-Length: {len(body)}\r\n") + body[: len(body) // 2])
        await writer.drain()
        await asyncio.sleep(0.05)
        writer.close()
        await writer.wait_closed()
    status, _ = await _raw_exchange(metered_bot, [_head(metered_bot, f"Content-Length: {len(body)}\r\n"), body])
    assert status == 200  # the bot still answers
    view = metered_bot.services.metrics_view
    assert view is not None
    async with metered_bot.session.get(view.url) as response:
        families = {family.name: family.samples for family in text_string_to_metric_families(await response.text())}
    answered = {sample.labels["http_response_status_code"]: sample.value for sample in families["vd_http_responses"]
                if sample.labels["http_route"] == "/api/messages"}
    assert not [code for code in answered if code.startswith("5")], answered
    assert answered.get("499") == 3, answered  # the client went away, as when a turn is cancelled
    assert not [record.getMessage() for record in caplog.records if record.levelno >= logging.ERROR]
    cut_off = [record for record in caplog.records if record.getMessage().startswith("request body cut off")]
    assert len(cut_off) == 3 and all(r.levelno == logging.INFO and r.exc_info is None for r in cut_off)
