"""Log output: JSON lines or readable, and the redaction that stands behind "we never log client data"."""

from __future__ import annotations

import contextlib
import io
import json
import logging
from collections.abc import Iterator
from typing import Any

import pytest

from bot.logging_setup import (
    REDACTED,
    JsonLinesFormatter,
    RedactingFilter,
    StructuredFormatter,
    configure_logging,
    redact,
)

#: The way people write phone numbers and addresses, as they could slip into a message.
CLIENT_VALUES = [
    "0470 98 76 54",
    "0470/98.76.54",
    "0470987654",
    "0470-98-76-54",
    "03 123 45 67",
    "03/123.45.67",
    "(03) 123 45 67",
    "02-123-45-67",
    "+32 470 98 76 54",
    "+32470987654",
    "+32 (0)470 98 76 54",
    "0032 470 98 76 54",
    "0032470987654",
    "+32\u00a0470\u00a098\u00a076\u00a054",
    "0470\u202f98\u202f76\u202f54",  # narrow no-break spaces, as pasted from a web page
    "+32\u2009470\u200998\u200976\u200954",  # thin spaces
    "+31 6 12345678",
    "+31-6-12345678",
    "06 12345678",
    "+44 20 7946 0958",
    "+1 (555) 123-4567",
    "zoelle.vdbx@example.be",
    "ZOE@EXAMPLE.BE",
    "zoë.d'hondt+kind@sub.example.co.uk",
    "a@b.be",
]

#: What our logs do carry and must keep readable.
OUR_VALUES = [
    "VD-20261128-K7M2QX",
    "VD-20260101-AAAAAA",
    "2026-11-28T10:00:00.000Z",
    "2026-11-28T09:00:00.000000+00:00",
    "2026-11-28T10:00:00+0100",
    "2026-11-28 10:00:00,123",
    "0:00:05.123456",
    "1 day, 0:30:00",
    "127.0.0.1:3978",
    "http://127.0.0.1:39781/api/messages",
    "https://smba.trafficmanager.net/emea/v3/conversations/a:1abc/activities/1700000000000",
    "port 3978",
    "10.255.255.53",
    "0.0.0.0:8080",
    "72f988bf-0000-4000-8000-000000000001",
    "00000000-0000-0000-0000-000000000001",
    "01234567-8901-2345-6789-012345678901",
    "3f5a0470987654ab0470987654cd0032470987654e9f8a7b6c5d4e3f2a1b0c9d8e7f6a5b4c3d2e1f0a9b8c7d6e5f4",
    "0" * 64,
    "draft 0f9e8d7c6b5a4f3e2d1c0b9a8f7e6d5c",
    "after 0.123456789 s",
    "attempt 3 of 10, next in 30 s (HTTP 429)",
    "OR-KG-NOW-OCMW-SGW-2026",
    "key version 2026-03",
    "python3.11",
    "a:personal-referrer",
    "29:1abcDEF0470987654",
    "line 1234567",
]


@pytest.mark.parametrize("value", CLIENT_VALUES)
def test_client_values_are_redacted(value: str) -> None:
    assert redact(value) == REDACTED
    assert redact(f"bel ({value}), dan") == f"bel ({REDACTED}), dan"


@pytest.mark.parametrize("value", OUR_VALUES)
def test_our_ids_and_times_are_kept(value: str) -> None:
    assert redact(value) == value
    assert redact(f"referral {value} queued") == f"referral {value} queued"


def test_a_line_with_both_keeps_ours_and_redacts_theirs() -> None:
    line = "VD-20261128-K7M2QX at 2026-11-28T10:00:00.000Z for 0470 98 76 54 / zoe@example.be via 127.0.0.1:3978"
    expected = f"VD-20261128-K7M2QX at 2026-11-28T10:00:00.000Z for {REDACTED} / {REDACTED} via 127.0.0.1:3978"
    assert redact(line) == expected


class _Boom(Exception):
    pass


@contextlib.contextmanager
def configured(*, json_lines: bool) -> Iterator[tuple[logging.Logger, io.StringIO]]:
    """`configure_logging` writing into a buffer; pytest's own handlers put back afterwards.

    Used inside the test body: pytest adds and removes its handlers per phase.
    """
    root = logging.getLogger()
    saved_handlers, saved_level = root.handlers[:], root.level
    buffer = io.StringIO()
    try:
        with contextlib.redirect_stderr(buffer):
            configure_logging("DEBUG", json_lines=json_lines)
        yield logging.getLogger("bot.test"), buffer
    finally:
        root.handlers[:] = saved_handlers
        root.setLevel(saved_level)


def _log_everything(logger: logging.Logger) -> None:
    logger.info("referral %s queued for %s", "VD-20261128-K7M2QX", "zoe@example.be",
                extra={"reference": "VD-20261128-K7M2QX", "protocol_id": "OR-KG-NOW-OCMW-SGW-2026"})
    logger.warning("validation failed", extra={"draft_id": "d-1", "fields": ["phone", "0470 98 76 54"],
                                               "reason": "invalid +32 470 98 76 54"})
    try:
        raise _Boom("cannot parse 0470/98.76.54 for zoe@example.be")
    except _Boom:
        logger.exception("card action failed", extra={"verb": "referral.details"})


def test_json_lines_one_object_per_line_with_fields_and_redaction() -> None:
    with configured(json_lines=True) as (logger, stream):
        _log_everything(logger)
    lines = stream.getvalue().splitlines()
    assert len(lines) == 3, "a traceback stays inside its line"
    first, second, third = (json.loads(line) for line in lines)

    assert first["level"] == "INFO" and first["logger"] == "bot.test"
    assert first["time"].endswith("+00:00")
    assert first["message"] == f"referral VD-20261128-K7M2QX queued for {REDACTED}"
    assert first["reference"] == "VD-20261128-K7M2QX"
    assert first["protocol_id"] == "OR-KG-NOW-OCMW-SGW-2026"
    assert "exc_info" not in first

    assert second["fields"] == ["phone", REDACTED]
    assert second["reason"] == f"invalid {REDACTED}"

    assert third["level"] == "ERROR" and third["verb"] == "referral.details"
    assert "Traceback" in third["exc_info"] and "_Boom" in third["exc_info"]
    assert f"cannot parse {REDACTED} for {REDACTED}" in third["exc_info"]
    _assert_nothing_leaks(stream.getvalue())


def test_readable_lines_keep_the_current_format_and_redact() -> None:
    with configured(json_lines=False) as (logger, stream):
        _log_everything(logger)
    text = stream.getvalue()
    first = text.splitlines()[0]
    assert " INFO bot.test: referral VD-20261128-K7M2QX queued for [redacted] " in first
    assert first.endswith("reference=VD-20261128-K7M2QX protocol_id=OR-KG-NOW-OCMW-SGW-2026")
    assert "Traceback" in text and f"cannot parse {REDACTED}" in text
    assert "ERROR bot.test: card action failed verb=referral.details\nTraceback" in text
    _assert_nothing_leaks(text)


def _assert_nothing_leaks(text: str) -> None:
    for value in ("zoe@example.be", "0470", "98.76.54", "98 76 54"):
        assert value not in text, value


def test_json_lines_are_ascii_and_unforgeable() -> None:
    with configured(json_lines=True) as (logger, stream):
        logger.info("Zoë said\n{\"level\": \"CRITICAL\", \"message\": \"forged\"}\r\n", extra={"reason": "ünïcode"})
    [line] = stream.getvalue().splitlines()
    assert line.isascii()
    entry = json.loads(line)
    assert entry["message"].startswith("Zoë said\n") and entry["reason"] == "ünïcode"


def test_other_extra_fields_are_kept_and_redacted() -> None:
    with configured(json_lines=True) as (logger, stream):
        logger.info("x", extra={"secret": "zip-password-or-kg-now", "attempt": 3, "mailbox": "ocmw@example.be",
                                "level": "forged", "nested": {"to": ["zoe@example.be"], "ok": True},
                                "thing": object()})
    entry = json.loads(stream.getvalue())
    assert entry["secret"] == "zip-password-or-kg-now"
    assert entry["attempt"] == 3
    assert entry["mailbox"] == REDACTED
    assert entry["level"] == "INFO", "an extra field never replaces a core one"
    assert entry["nested"] == {"to": [REDACTED], "ok": True}
    assert entry["thing"].startswith("<object object")


def test_a_bad_format_string_does_not_raise_into_the_caller() -> None:
    with configured(json_lines=True) as (logger, stream):
        logger.info("%d items for %s", "not a number")  # wrong on purpose
    entry = json.loads(stream.getvalue())
    assert entry["message"].startswith("%d items for %s")


def test_the_filter_is_on_the_handler_and_idempotent() -> None:
    with configured(json_lines=True):
        [handler] = logging.getLogger().handlers
        assert any(isinstance(f, RedactingFilter) for f in handler.filters)
        assert isinstance(handler.formatter, JsonLinesFormatter)
        configure_logging("WARNING", json_lines=False)
        [handler] = logging.getLogger().handlers
        assert any(isinstance(f, RedactingFilter) for f in handler.filters)
        assert isinstance(handler.formatter, StructuredFormatter)
        assert logging.getLogger().level == logging.WARNING

    record = logging.LogRecord("bot", logging.INFO, __file__, 1, "to %s", ("zoe@example.be",), None)
    record.__dict__["reason"] = "0470 98 76 54"
    redactor = RedactingFilter()
    assert redactor.filter(record) and redactor.filter(record)
    assert (record.getMessage(), record.__dict__["reason"]) == (f"to {REDACTED}", REDACTED)


def test_stack_info_is_redacted() -> None:
    with configured(json_lines=True) as (logger, stream):

        def deep(value: Any) -> None:
            logger.info("here", stack_info=True)

        deep("zoe@example.be")  # the stack shows this source line
    entry = json.loads(stream.getvalue())
    assert "Stack (most recent call last)" in entry["stack_info"]
    assert f"deep(\"{REDACTED}\")" in entry["stack_info"]
    assert "zoe@example.be" not in entry["stack_info"]


def test_a_register_download_token_in_an_access_log_line_is_redacted() -> None:
    token = "q1W-_e2R3t4Y5u6I7o8P9a0SdFgHjKlZxCvBnM1q2W3"
    line = f'127.0.0.1 [28/Nov/2026:10:05:00 +0000] "GET /register/export/{token}?format=json HTTP/1.1" 200'
    assert redact(line) == ('127.0.0.1 [28/Nov/2026:10:05:00 +0000] "GET /register/export/[redacted]?format=json'
                            ' HTTP/1.1" 200')
