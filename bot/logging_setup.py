"""Log lines with the structured ids we log: JSON lines in production, readable in development.

The code never logs client values on purpose (only ids and facts). `RedactingFilter` is the second
line of defence for the day a value slips into a message, an `extra` field or an exception text:
whatever looks like an e-mail address or a phone number becomes `[redacted]` before it is written.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import re
import sys
from collections.abc import Mapping

#: The `extra` fields our code logs; each is an id or a fact, never a client value. They come
#: first, in this order; any other `extra` field follows (redacted like the rest).
STRUCTURED_FIELDS: tuple[str, ...] = (
    "reference",
    "draft_id",
    "protocol_id",
    "verb",
    "fields",
    "reason",
    "activity_type",
    "secret",
)

REDACTED = "[redacted]"

#: Attributes every LogRecord has; everything else on a record came in through `extra`.
_RECORD_ATTRIBUTES = frozenset(logging.LogRecord("", 0, "", 0, "", None, None).__dict__) | {"message", "asctime"}

_EMAIL = re.compile(r"[\w.!#$%&'*+/=?^`{|}~-]+@[\w-]+(?:\.[\w-]+)+")
#: Belgian and international numbers as people write them: `0470 98 76 54`, `03/123.45.67`,
#: `(03) 123 45 67`, `+32 (0)470 98 76 54`, `0032 470 98 76 54`, `+31-6-12345678`, `+1 (555) 123-4567`.
#: A number starts with `0`+digit (national) or `+`/`00`+country code, and never inside a word,
#: a longer number or a dotted/hyphenated run: so `VD-20261128-K7M2QX`, UUIDs, ISO times,
#: IP addresses, ports and hex hashes are left alone.
_PHONE = re.compile(
    r"""
    (?<![\w.+/\\-])
    (?:
        (?:\+|00)[ \u00a0\u2007\u2009\u202f]?\(?[1-9]\d{0,2}\)?          # country code
        (?:[ \u00a0\u2007\u2009\u202f./-]?\(\d{1,4}\))?                  # (0) or an area code in brackets
        (?:[ \u00a0\u2007\u2009\u202f./-]?\d){6,12}
      | \(0[1-9]\d{0,3}\)(?:[ \u00a0\u2007\u2009\u202f./-]?\d){5,9}      # national, area code in brackets
      | 0[1-9](?:[ \u00a0\u2007\u2009\u202f./-]?\d){7,9}                 # national: trunk 0, 9 to 11 digits
    )
    (?![\w:]|[.\-/]\d)
    """,
    re.VERBOSE,
)


#: The token of a DPO's register download link (`bot.oversight.register_export`), e.g. in aiohttp's access log.
_LINK_TOKEN = re.compile(r"(?<=/register/export/)[A-Za-z0-9_-]+")


def redact(text: str) -> str:
    """`text` with anything that looks like an e-mail address, a phone number or a download token replaced."""
    return _PHONE.sub(REDACTED, _EMAIL.sub(REDACTED, _LINK_TOKEN.sub(REDACTED, text)))


def _redact_value(value: object) -> object:
    if isinstance(value, str):
        return redact(value)
    if value is None or isinstance(value, bool | int | float):
        return value
    if isinstance(value, list | tuple | set | frozenset):
        return [_redact_value(item) for item in value]
    if isinstance(value, Mapping):
        return {str(key): _redact_value(item) for key, item in value.items()}
    return redact(str(value))


def extra_fields(record: logging.LogRecord) -> dict[str, object]:
    """The record's `extra` fields: `STRUCTURED_FIELDS` first, then any others by name."""
    others = sorted(name for name in record.__dict__ if name not in _RECORD_ATTRIBUTES and not name.startswith("_"))
    names = [name for name in STRUCTURED_FIELDS if hasattr(record, name)]
    names += [name for name in others if name not in STRUCTURED_FIELDS]
    return {name: getattr(record, name) for name in names}


class RedactingFilter(logging.Filter):
    """Redacts the final message, every `extra` field, the exception and stack text; never drops.

    It rewrites the record in place (the message formatted, its arguments dropped) so every
    handler after it sees only redacted text; running it twice changes nothing more.
    """

    def __init__(self) -> None:
        super().__init__()
        self._exception_formatter = logging.Formatter()

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # a bad format string must not raise into the code that logged
            message = f"{record.msg!s} (log arguments did not fit the message)"
        record.msg, record.args = redact(message), ()
        for name, value in extra_fields(record).items():
            setattr(record, name, _redact_value(value))
        if record.exc_info and not record.exc_text:
            record.exc_text = self._exception_formatter.formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redact(record.exc_text)
        if record.stack_info:
            record.stack_info = redact(record.stack_info)
        return True


class StructuredFormatter(logging.Formatter):
    """`time level logger: message key=value ...` for people reading a terminal."""

    def format(self, record: logging.LogRecord) -> str:
        base = super().format(record)
        pairs = [f"{name}={value}" for name, value in extra_fields(record).items()]
        if not pairs:
            return base
        first_line, newline, rest = base.partition("\n")  # keep the pairs beside the message, not the traceback
        return f"{first_line} {' '.join(pairs)}{newline}{rest}"


class JsonLinesFormatter(logging.Formatter):
    """One JSON object per line: time (UTC), level, logger, message, extra fields, exc_info.

    ASCII-only output, so a container with a C locale never fails to write a log line, and a
    newline inside a message can never start a forged line.
    """

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, object] = {
            "time": dt.datetime.fromtimestamp(record.created, dt.UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for name, value in extra_fields(record).items():
            entry.setdefault(name, value)
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            entry["exc_info"] = record.exc_text
        if record.stack_info:
            entry["stack_info"] = record.stack_info
        return json.dumps(entry, ensure_ascii=True, default=str)


def configure_logging(level: str, *, json_lines: bool = False) -> None:
    """Send the bot's logs to stderr at `level`: JSON lines in production, readable otherwise."""
    handler = logging.StreamHandler(sys.stderr)
    handler.addFilter(RedactingFilter())
    if json_lines:
        handler.setFormatter(JsonLinesFormatter())
    else:
        handler.setFormatter(StructuredFormatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    for name, floor in QUIET_LIBRARY_LOGGERS.items():
        logging.getLogger(name).setLevel(max(floor, logging.getLevelName(level)))


#: The Agents SDK logs every connector call at INFO (ids and URLs, per message), and the activity
#: model logs a refused request's field values in full (which could be anything a caller typed):
#: the bot's route already logs a refusal by its reason only.
#: SQLAlchemy logs every statement at INFO (its parameters hidden by `hide_parameters`, but the
#: statements and pool chatter are noise per request); Alembic says each revision it applies, which
#: `bot.storage.schema_migration` reports itself.
QUIET_LIBRARY_LOGGERS: dict[str, int] = {
    "microsoft_agents": logging.WARNING,
    "microsoft_agents.activity": logging.CRITICAL,
    "sqlalchemy": logging.WARNING,
    "aiosqlite": logging.WARNING,
    "asyncpg": logging.WARNING,
    "alembic": logging.WARNING,
}
