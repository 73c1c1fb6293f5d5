"""`python -m bot register verify|export`, run through `bot.cli.register` on a real data folder."""

from __future__ import annotations

import argparse
import asyncio
import csv
import datetime as dt
import io
import json
import tracemalloc
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from bot.cli.register import add_register_commands, run_register_command
from bot.config import Settings
from bot.evidence.register import EXPORT_COLUMNS, ProcessingRegister, RegisterEvent
from bot.storage.database import Database
from tests.support.databases import sql, sqlite_database
from tests.support.register_entries import add_delivered_entries

NOW = dt.datetime(2026, 11, 28, 9, 0, tzinfo=dt.UTC)


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings.from_mapping({"BOT_DATA_DIR": str(tmp_path / "data")})


@pytest.fixture
async def filled(settings: Settings) -> Database:
    """A register of five entries: 27 Nov (Brussels), three on 28 Nov, one on 29 Nov."""
    db = await sqlite_database(settings.database_path)
    register = ProcessingRegister(db)
    moments = [
        dt.datetime(2026, 11, 27, 22, 0, tzinfo=dt.UTC),
        dt.datetime(2026, 11, 27, 23, 30, tzinfo=dt.UTC),  # 00:30 on the 28th in Brussels
        NOW,
        dt.datetime(2026, 11, 28, 22, 30, tzinfo=dt.UTC),  # 23:30 on the 28th in Brussels
        dt.datetime(2026, 11, 28, 23, 30, tzinfo=dt.UTC),
    ]
    for index, moment in enumerate(moments, start=1):
        await register.append(at=moment, event=RegisterEvent.DELIVERED, actor_id=f"aad-{index}",
                        actor_name="=HYPERLINK(\"http://evil\")" if index == 3 else "Zoë Dewaele-D'Hondt",
                        protocol_id="OR-KG-NOW-OCMW-SGW-2026", reference=f"VD-20261128-K7M2Q{index}",
                        detail=f"entry {index}")
    return db


def _parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bot")
    add_register_commands(parser.add_subparsers(dest="command"))
    return parser.parse_args(argv)


async def _run(settings: Settings, *argv: str) -> int:
    """The command as `python -m bot` runs it: in a thread of its own, with its own event loop."""
    return await asyncio.to_thread(run_register_command, _parse(*argv), settings)


async def test_verify_an_intact_register(
    settings: Settings, filled: Database, capsys: pytest.CaptureFixture[str]
) -> None:
    assert await _run(settings, "register", "verify") == 0
    assert capsys.readouterr().out == "register intact: 5 entries\n"


async def test_verify_says_where_a_pruned_register_starts(
    settings: Settings, filled: Database, capsys: pytest.CaptureFixture[str]
) -> None:
    await ProcessingRegister(filled).prune_through(2, at=NOW + dt.timedelta(days=5 * 366), rule="test")
    assert await _run(settings, "register", "verify") == 0
    assert capsys.readouterr().out == (
        "register intact: 4 entries (entries up to 2 removed under the retention periods, anchor in entry 6)\n")


async def test_verify_reports_each_problem_on_a_line(
    settings: Settings, filled: Database, capsys: pytest.CaptureFixture[str]
) -> None:
    sql(filled, "UPDATE register SET detail = 'entry two, edited' WHERE seq = 2")
    sql(filled, "DELETE FROM register WHERE seq = 4")
    assert await _run(settings, "register", "verify") == 1
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 2
    assert lines[0].startswith("seq 2: altered:")
    assert lines[1].startswith("seq 5: removed:") and "4" in lines[1]


async def test_verify_reports_swapped_entries(
    settings: Settings, filled: Database, capsys: pytest.CaptureFixture[str]
) -> None:
    rows = [sql(filled, "SELECT * FROM register WHERE seq = ?", (seq,)).fetchone() for seq in (3, 4)]
    columns = [name for name in rows[0].keys() if name != "seq"]  # noqa: SIM118 - sqlite3.Row
    assignments = ", ".join(f"{name} = ?" for name in columns)
    for target, source in ((3, rows[1]), (4, rows[0])):
        sql(filled, f"UPDATE register SET {assignments} WHERE seq = ?",  # noqa: S608 - test's own names
                         [source[name] for name in columns] + [target])
    assert await _run(settings, "register", "verify") == 1
    out = capsys.readouterr().out
    assert out.splitlines()[0].startswith("seq 3: reordered:")


async def test_verify_without_a_database_says_where_it_looked(
    settings: Settings, capsys: pytest.CaptureFixture[str]
) -> None:
    assert await _run(settings, "register", "verify") == 2
    assert str(settings.database_path) in capsys.readouterr().err
    assert not settings.database_path.exists(), "a read-only command creates nothing"


async def test_export_csv_to_stdout(
    settings: Settings, filled: Database, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ("register", "export", "--from", "2026-11-28", "--to", "2026-11-28", "--format", "csv")
    assert await _run(settings, *argv) == 0
    out = capsys.readouterr().out
    rows = list(csv.DictReader(io.StringIO(out, newline=""), delimiter=";"))  # Excel's list separator in nl-BE
    assert rows and list(rows[0]) == list(EXPORT_COLUMNS)
    assert [row["seq"] for row in rows] == ["2", "3", "4"]
    assert rows[0]["actor_name"] == "Zoë Dewaele-D'Hondt"
    assert rows[1]["actor_name"] == "'=HYPERLINK(\"http://evil\")", "a formula is defused for spreadsheets"
    assert all(dt.datetime.fromisoformat(row["at"]).utcoffset() == dt.timedelta(0) for row in rows)


async def test_export_json_to_a_private_file(
    settings: Settings, filled: Database, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    target = tmp_path / "register-2026-11.json"
    target.write_text("old content, world-readable")
    target.chmod(0o644)
    argv = ("register", "export", "--from", "2026-11-27", "--to", "2026-11-29", "--format", "json",
            "--output", str(target))
    assert await _run(settings, *argv) == 0
    assert capsys.readouterr().out == ""
    rows = json.loads(target.read_text(encoding="utf-8"))
    assert [row["seq"] for row in rows] == ["1", "2", "3", "4", "5"]
    assert all(list(row) == list(EXPORT_COLUMNS) for row in rows)
    assert rows[2]["actor_name"] == "=HYPERLINK(\"http://evil\")", "JSON is exact"
    assert rows[0]["reference"] == "VD-20261128-K7M2Q1"
    assert target.stat().st_mode & 0o777 == 0o600


async def test_export_csv_file_opens_in_excel_with_accents(
    settings: Settings, filled: Database, tmp_path: Path
) -> None:
    target = tmp_path / "register.csv"
    assert await _run(settings, "register", "export", "--from", "2026-11-29", "--to", "2026-11-29", "--output",
                str(target)) == 0
    raw = target.read_bytes()
    assert raw.startswith(b"\xef\xbb\xbf"), "UTF-8 BOM, or Excel shows mojibake"
    [row] = list(csv.DictReader(io.StringIO(raw.decode("utf-8-sig"), newline=""), delimiter=";"))
    assert raw.decode("utf-8-sig").split("\r\n")[0].split(";") == list(EXPORT_COLUMNS), (
        "a Belgian Excel splits a double-clicked CSV at its list separator ';': with ',' every column was in A")
    assert (row["seq"], row["actor_name"]) == ("5", "Zoë Dewaele-D'Hondt")


async def test_export_of_an_empty_period_has_only_the_header(
    settings: Settings, filled: Database, capsys: pytest.CaptureFixture[str]
) -> None:
    assert await _run(settings, "register", "export", "--from", "2027-01-01", "--to", "2027-01-31") == 0
    assert capsys.readouterr().out == ";".join(EXPORT_COLUMNS) + "\r\n"


async def test_export_refuses_a_reversed_period(
    settings: Settings, filled: Database, capsys: pytest.CaptureFixture[str]
) -> None:
    assert await _run(settings, "register", "export", "--from", "2026-11-29", "--to", "2026-11-28") == 2
    assert "before" in capsys.readouterr().err


@pytest.mark.parametrize("argv", [
    ("register", "export", "--from", "28/11/2026", "--to", "2026-11-28"),
    ("register", "export", "--from", "2026-11-28"),
    ("register", "export", "--from", "2026-11-28", "--to", "2026-11-28", "--format", "xlsx"),
    ("register",),
])
def test_bad_arguments_are_usage_errors(argv: tuple[str, ...], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        _parse(*argv)
    assert exit_info.value.code == 2
    capsys.readouterr()


async def test_commands_leave_the_database_untouched(settings: Settings, filled: Database) -> None:
    before = sql(filled, "SELECT * FROM register ORDER BY seq").fetchall()
    assert await _run(settings, "register", "verify") == 0
    assert await _run(settings, "register", "export", "--from", "2026-11-27", "--to", "2026-11-29") == 0
    await ProcessingRegister(filled).append(at=NOW, event=RegisterEvent.CANCELLED, actor_id="a", actor_name="A",
                                        protocol_id="P")  # the bot can still write afterwards
    assert sql(filled, "SELECT * FROM register ORDER BY seq").fetchall()[:5] == before


#: The most `register export` may hold at once (Python allocations): a page of `PAGE_SIZE` entries, not the
#: register. Built whole, 40 000 entries took 166 MB for a 32 MB JSON file.
LARGEST_EXPORT_MEMORY = 16 * 1024 * 1024


async def test_an_export_of_40000_entries_holds_a_page_of_them_in_memory_not_the_whole_register(
    settings: Settings, filled: Database, tmp_path: Path
) -> None:
    """Run beside the bot on the same instance, the export took the register's size several times over."""
    add_delivered_entries(settings.database_path, 40_000, "OR-KG-NOW-OCMW-SGW-2026")
    target = tmp_path / "register.json"
    argv = ("register", "export", "--from", "2021-12-01", "--to", "2026-11-29", "--format", "json",
            "--output", str(target))
    tracemalloc.start()
    try:
        assert await _run(settings, *argv) == 0
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    with target.open("rb") as file:
        assert sum(line.count(b'"seq": ') for line in file) == 40_005
    assert peak <= LARGEST_EXPORT_MEMORY, f"held at once (bytes): {peak}, file {target.stat().st_size} bytes"


EARLIER_EXPORT = "\ufeffseq;at;...\r\n1;2026-10-01T08:00:00+00:00;an earlier export the DPO keeps for an audit\r\n"


class ConnectionLost(Exception):
    """The database going away in the middle of an export."""


@pytest.mark.parametrize("fault", ["not_a_database", "no_register_table", "midway"])
async def test_a_failed_export_leaves_the_earlier_export_at_its_path_as_it_was(
    fault: str, settings: Settings, filled: Database, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The file was truncated before the database was read: a header or half a CSV took an audit's export's place."""
    target = tmp_path / "exports" / "register-2026-10.csv"
    target.parent.mkdir()
    target.write_bytes(EARLIER_EXPORT.encode("utf-8"))
    target.chmod(0o600)
    expected: type[BaseException] = Exception
    if fault == "not_a_database":
        await filled.close()
        settings.database_path.write_bytes(b"not a database, or not one that can be read " * 200)
    elif fault == "no_register_table":  # it opens, and fails at the first page
        sql(filled, "DROP TABLE register")
    else:
        pages = ProcessingRegister.export_pages

        async def export_pages_then_lose_the_connection(
            self: ProcessingRegister, *args: object, **kwargs: object
        ) -> AsyncIterator[list[dict[str, str]]]:
            async for page in pages(self, *args, **kwargs):  # type: ignore[arg-type]
                yield page
            raise ConnectionLost("server closed the connection unexpectedly")

        monkeypatch.setattr(ProcessingRegister, "export_pages", export_pages_then_lose_the_connection)
        expected = ConnectionLost
    with pytest.raises(expected):
        await _run(settings, "register", "export", "--from", "2026-11-27", "--to", "2026-11-29", "--output",
                   str(target))
    assert target.read_bytes() == EARLIER_EXPORT.encode("utf-8"), "the earlier export is untouched"
    assert target.stat().st_mode & 0o777 == 0o600
    assert sorted(path.name for path in target.parent.iterdir()) == [target.name], "no partial file is left"


@pytest.mark.parametrize("export_format", ["csv", "json"])
async def test_an_export_over_an_earlier_one_writes_what_standard_output_gets_and_leaves_nothing_else(
    export_format: str, settings: Settings, filled: Database, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    period = ("register", "export", "--from", "2026-11-27", "--to", "2026-11-29", "--format", export_format)
    assert await _run(settings, *period) == 0
    written = capsys.readouterr().out.encode("utf-8")
    target = tmp_path / "exports" / f"register.{export_format}"
    target.parent.mkdir()
    target.write_bytes(EARLIER_EXPORT.encode("utf-8") * 3)
    target.chmod(0o644)
    assert await _run(settings, *period, "--output", str(target)) == 0
    assert target.read_bytes() == (b"\xef\xbb\xbf" if export_format == "csv" else b"") + written
    assert target.stat().st_mode & 0o777 == 0o600
    assert sorted(path.name for path in target.parent.iterdir()) == [target.name]
    assert capsys.readouterr().err == f"5 entries written to {target}\n"
