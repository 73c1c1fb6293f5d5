"""Readable log lines with the structured ids we log (never client data: we never pass any)."""

from __future__ import annotations

import logging
import sys

#: The `extra` fields our code logs; each is an id or a fact, never a client value.
STRUCTURED_FIELDS: tuple[str, ...] = (
    "reference",
    "draft_id",
    "protocol_id",
    "verb",
    "fields",
    "reason",
    "activity_type",
)


class StructuredFormatter(logging.Formatter):
    """`time level logger message key=value ...` for the known structured fields."""

    def format(self, record: logging.LogRecord) -> str:
        base = super().format(record)
        pairs = [f"{name}={getattr(record, name)}" for name in STRUCTURED_FIELDS if hasattr(record, name)]
        return f"{base} {' '.join(pairs)}" if pairs else base


def configure_logging(level: str) -> None:
    """Send the bot's logs to stderr at `level`."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(StructuredFormatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
