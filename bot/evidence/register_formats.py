"""The register's export formats: CSV for a spreadsheet, JSON as stored. Both the CLI and Teams use them."""

from __future__ import annotations

import csv
import io
import json

from bot.evidence.register import EXPORT_COLUMNS

_FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def export_csv(rows: list[dict[str, str]]) -> str:
    """CSV with a header row of `EXPORT_COLUMNS`, separated by ';'; formula-like cells defused.

    ';' because a double-clicked .csv opens in Excel with the Windows list separator, ';' in nl-BE:
    with ',' every column landed in column A. Otherwise RFC 4180 (quoting, CRLF).
    """
    buffer = io.StringIO(newline="")
    writer = csv.DictWriter(buffer, fieldnames=EXPORT_COLUMNS, delimiter=";", lineterminator="\r\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({column: _defuse(value) for column, value in row.items()})
    return buffer.getvalue()


def export_json(rows: list[dict[str, str]]) -> str:
    """A JSON array of objects keyed by `EXPORT_COLUMNS`, exactly as stored."""
    return json.dumps(rows, ensure_ascii=False, indent=2) + "\n"


def _defuse(value: str) -> str:
    return "'" + value if value.startswith(_FORMULA_STARTS) else value
