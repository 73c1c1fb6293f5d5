"""The register's export formats: CSV for a spreadsheet, JSON as stored. Both the CLI and Teams use them.

Each format is written a page of entries at a time (`begin`, `page` for each page, `end`): a download
or a CLI export then holds one page of a register years old, never all of it nor its whole text.
`export_csv` and `export_json` are the same for a list held already.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Sequence
from typing import Protocol

from bot.evidence.register import EXPORT_COLUMNS

#: A cell starting with one of these is a formula to a spreadsheet: it gets a leading "'".
_FORMULA_STARTS = frozenset("=+-@\t\r")
#: `json.dumps(ensure_ascii=False)`'s own string encoder.
_json_string = json.encoder.encode_basestring


class ExportWriter(Protocol):
    """A file of register entries written in pieces; concatenated, the pieces are the whole file."""

    def begin(self) -> str: ...

    def page(self, rows: Sequence[dict[str, str]]) -> str: ...

    def end(self) -> str: ...


class CsvExport:
    """CSV with a header row of `EXPORT_COLUMNS`, separated by ';'; formula-like cells defused.

    ';' because a double-clicked .csv opens in Excel with the Windows list separator, ';' in nl-BE:
    with ',' every column landed in column A. Otherwise RFC 4180 (quoting, CRLF).
    """

    def begin(self) -> str:
        return self._written(header=True, rows=())

    def page(self, rows: Sequence[dict[str, str]]) -> str:
        return self._written(header=False, rows=rows)

    def end(self) -> str:
        return ""

    @staticmethod
    def _written(*, header: bool, rows: Sequence[dict[str, str]]) -> str:
        buffer = io.StringIO(newline="")
        writer = csv.writer(buffer, delimiter=";", lineterminator="\r\n")
        if header:
            writer.writerow(EXPORT_COLUMNS)
        # Lists to the C writer, not dicts to `DictWriter` (whose Python per row made a page 54 ms of CPU).
        writer.writerows(["'" + value if value[:1] in _FORMULA_STARTS else value
                          for value in map(row.__getitem__, EXPORT_COLUMNS)] for row in rows)
        return buffer.getvalue()


class JsonExport:
    """A JSON array of objects keyed by `EXPORT_COLUMNS`, exactly as stored, as `json.dumps(indent=2)` writes it."""

    def __init__(self) -> None:
        self._empty = True

    def begin(self) -> str:
        return ""

    def page(self, rows: Sequence[dict[str, str]]) -> str:
        # This page's part of `json.dumps(entries, ensure_ascii=False, indent=2)` for rows of strings, with its
        # string encoder (C) and without its encoder's Python walk, which made a page 90 ms of CPU.
        pieces = []
        for row in rows:
            pieces.append(("[\n  {\n" if self._empty else ",\n  {\n")
                          + ",\n".join(f"    {_json_string(key)}: {_json_string(value)}" for key, value in row.items())
                          + "\n  }")
            self._empty = False
        return "".join(pieces)

    def end(self) -> str:
        return "[]\n" if self._empty else "\n]\n"


def export_csv(rows: Sequence[dict[str, str]]) -> str:
    """The whole CSV file of `rows` (see `CsvExport`)."""
    return _whole(CsvExport(), rows)


def export_json(rows: Sequence[dict[str, str]]) -> str:
    """The whole JSON file of `rows` (see `JsonExport`)."""
    return _whole(JsonExport(), rows)


def _whole(writer: ExportWriter, rows: Sequence[dict[str, str]]) -> str:
    return writer.begin() + writer.page(rows) + writer.end()

