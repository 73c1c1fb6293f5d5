"""The register's export files hold every entry exactly as stored, whatever characters a name or detail carries,
and a file written a page at a time is the file written whole."""

from __future__ import annotations

import csv
import io
import json

from bot.evidence.register import EXPORT_COLUMNS
from bot.evidence.register_formats import CsvExport, JsonExport, export_csv, export_json

#: What a display name or a detail may hold: quotes, backslashes, control characters, the line and paragraph
#: separators JSON leaves unescaped (U+2028, U+2029, U+0085), a character outside the BMP, spreadsheet formulas.
AWKWARD = ['Ann "Nanny" De\\Smet', "regel\nvolgende\r\tregel", "\x00\x1f\x7f", "voor\u2028na\u2029eind\x85.",
           "\x0b\x0c\x1c\x1d\x1e", "Zoë 👶 Çelik", "=HYPERLINK(\"http://evil\")", "+32 3 123", "-1", "@sum", "", " "]


def _entries(count: int) -> list[dict[str, str]]:
    return [{column: f"{AWKWARD[(n + i) % len(AWKWARD)]}{n}" for i, column in enumerate(EXPORT_COLUMNS)}
            for n in range(count)]


def test_the_json_file_is_the_entries_exactly_as_json_writes_them() -> None:
    entries = _entries(3 * len(AWKWARD))
    written = export_json(entries)
    assert written == json.dumps(entries, ensure_ascii=False, indent=2) + "\n"
    assert json.loads(written) == entries


def test_a_value_with_a_line_separator_is_exported_as_stored_not_indented_inside() -> None:
    [entry] = _entries(1)
    entry["actor_name"] = "Ann\u2028Peeters"
    assert json.loads(export_json([entry]))[0]["actor_name"] == "Ann\u2028Peeters"


def test_the_json_file_written_a_page_at_a_time_is_the_file_written_whole() -> None:
    entries = _entries(50)
    writer = JsonExport()
    paged = writer.begin() + "".join(writer.page(entries[start:start + 7]) for start in range(0, 50, 7)) + writer.end()
    assert paged == export_json(entries)
    assert export_json([]) == "[]\n" and json.loads(export_json([])) == []


def test_the_csv_file_reads_back_as_the_entries_with_formulas_defused() -> None:
    entries = _entries(3 * len(AWKWARD))
    written = export_csv(entries)
    read = list(csv.DictReader(io.StringIO(written, newline=""), delimiter=";"))
    assert [tuple(row) for row in read] == [EXPORT_COLUMNS] * len(entries)
    defused = [{column: "'" + value if value[:1] in ("=", "+", "-", "@", "\t", "\r") else value
                for column, value in entry.items()} for entry in entries]
    assert read == defused
    assert any(value.startswith("'=HYPERLINK") for row in read for value in row.values())


def test_the_csv_file_written_a_page_at_a_time_is_the_file_written_whole() -> None:
    entries = _entries(50)
    writer = CsvExport()
    paged = writer.begin() + "".join(writer.page(entries[start:start + 7]) for start in range(0, 50, 7)) + writer.end()
    assert paged == export_csv(entries)
    assert export_csv([]).splitlines() == [";".join(EXPORT_COLUMNS)]
