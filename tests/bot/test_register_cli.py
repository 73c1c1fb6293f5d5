"""`python -m bot register verify|export`, run through `bot.register_cli` on a real data folder."""

from __future__ import annotations

import argparse
import csv
import datetime as dt
import io
import json
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest

from bot.config import Settings
from bot.database import open_database
from bot.register import EXPORT_COLUMNS, ProcessingRegister, RegisterEvent
from bot.register_cli import add_register_commands, run_register_command

NOW = dt.datetime(2026, 11, 28, 9, 0, tzinfo=dt.UTC)


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings.from_mapping({"BOT_DATA_DIR": str(tmp_path / "data")})


@pytest.fixture
def database(settings: Settings) -> Iterator[sqlite3.Connection]:
    """A register of five entries: 27 Nov (Brussels), three on 28 Nov, one on 29 Nov."""
    db = open_database(settings.database_path)
    register = ProcessingRegister(db)
    moments = [
        dt.datetime(2026, 11, 27, 22, 0, tzinfo=dt.UTC),
        dt.datetime(2026, 11, 27, 23, 30, tzinfo=dt.UTC),  # 00:30 on the 28th in Brussels
        NOW,
        dt.datetime(2026, 11, 28, 22, 30, tzinfo=dt.UTC),  # 23:30 on the 28th in Brussels
        dt.datetime(2026, 11, 28, 23, 30, tzinfo=dt.UTC),
    ]
    for index, moment in enumerate(moments, start=1):
        register.append(at=moment, event=RegisterEvent.DELIVERED, actor_id=f"aad-{index}",
                        actor_name="=HYPERLINK(\"http://evil\")" if index == 3 else "Zoë Dewaele-D'Hondt",
                        protocol_id="OR-KG-NOW-OCMW-SGW-2026", reference=f"VD-20261128-K7M2Q{index}",
                        detail=f"entry {index}")
    yield db
    db.close()


def _parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bot")
    add_register_commands(parser.add_subparsers(dest="command"))
    return parser.parse_args(argv)


def _run(settings: Settings, *argv: str) -> int:
    return run_register_command(_parse(*argv), settings)


def test_verify_an_intact_register(
    settings: Settings, database: sqlite3.Connection, capsys: pytest.CaptureFixture[str]
) -> None:
    assert _run(settings, "register", "verify") == 0
    assert capsys.readouterr().out == "register intact: 5 entries\n"


def test_verify_says_where_a_pruned_register_starts(
    settings: Settings, database: sqlite3.Connection, capsys: pytest.CaptureFixture[str]
) -> None:
    ProcessingRegister(database).prune_through(2, at=NOW + dt.timedelta(days=5 * 366), rule="test")
    assert _run(settings, "register", "verify") == 0
    assert capsys.readouterr().out == (
        "register intact: 4 entries (entries up to 2 removed under the retention periods, anchor in entry 6)\n")


def test_verify_reports_each_problem_on_a_line(
    settings: Settings, database: sqlite3.Connection, capsys: pytest.CaptureFixture[str]
) -> None:
    database.execute("UPDATE register SET detail = 'entry two, edited' WHERE seq = 2")
    database.execute("DELETE FROM register WHERE seq = 4")
    assert _run(settings, "register", "verify") == 1
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 2
    assert lines[0].startswith("seq 2: altered:")
    assert lines[1].startswith("seq 5: removed:") and "4" in lines[1]


def test_verify_reports_swapped_entries(
    settings: Settings, database: sqlite3.Connection, capsys: pytest.CaptureFixture[str]
) -> None:
    rows = [database.execute("SELECT * FROM register WHERE seq = ?", (seq,)).fetchone() for seq in (3, 4)]
    columns = [name for name in rows[0].keys() if name != "seq"]  # noqa: SIM118 - sqlite3.Row
    assignments = ", ".join(f"{name} = ?" for name in columns)
    for target, source in ((3, rows[1]), (4, rows[0])):
        database.execute(f"UPDATE register SET {assignments} WHERE seq = ?",  # noqa: S608 - test's own names
                         [source[name] for name in columns] + [target])
    assert _run(settings, "register", "verify") == 1
    out = capsys.readouterr().out
    assert out.splitlines()[0].startswith("seq 3: reordered:")


def test_verify_without_a_database_says_where_it_looked(
    settings: Settings, capsys: pytest.CaptureFixture[str]
) -> None:
    assert _run(settings, "register", "verify") == 2
    assert str(settings.database_path) in capsys.readouterr().err
    assert not settings.database_path.exists(), "a read-only command creates nothing"


def test_export_csv_to_stdout(
    settings: Settings, database: sqlite3.Connection, capsys: pytest.CaptureFixture[str]
) -> None:
    assert _run(settings, "register", "export", "--from", "2026-11-28", "--to", "2026-11-28", "--format", "csv") == 0
    out = capsys.readouterr().out
    rows = list(csv.DictReader(io.StringIO(out, newline="")))
    assert rows and list(rows[0]) == list(EXPORT_COLUMNS)
    assert [row["seq"] for row in rows] == ["2", "3", "4"]
    assert rows[0]["actor_name"] == "Zoë Dewaele-D'Hondt"
    assert rows[1]["actor_name"] == "'=HYPERLINK(\"http://evil\")", "a formula is defused for spreadsheets"
    assert all(dt.datetime.fromisoformat(row["at"]).utcoffset() == dt.timedelta(0) for row in rows)


def test_export_json_to_a_private_file(
    settings: Settings, database: sqlite3.Connection, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    target = tmp_path / "register-2026-11.json"
    target.write_text("old content, world-readable")
    target.chmod(0o644)
    argv = ("register", "export", "--from", "2026-11-27", "--to", "2026-11-29", "--format", "json",
            "--output", str(target))
    assert _run(settings, *argv) == 0
    assert capsys.readouterr().out == ""
    rows = json.loads(target.read_text(encoding="utf-8"))
    assert [row["seq"] for row in rows] == ["1", "2", "3", "4", "5"]
    assert all(list(row) == list(EXPORT_COLUMNS) for row in rows)
    assert rows[2]["actor_name"] == "=HYPERLINK(\"http://evil\")", "JSON is exact"
    assert rows[0]["reference"] == "VD-20261128-K7M2Q1"
    assert target.stat().st_mode & 0o777 == 0o600


def test_export_csv_file_opens_in_excel_with_accents(
    settings: Settings, database: sqlite3.Connection, tmp_path: Path
) -> None:
    target = tmp_path / "register.csv"
    assert _run(settings, "register", "export", "--from", "2026-11-29", "--to", "2026-11-29", "--output",
                str(target)) == 0
    raw = target.read_bytes()
    assert raw.startswith(b"\xef\xbb\xbf"), "UTF-8 BOM, or Excel shows mojibake"
    [row] = list(csv.DictReader(io.StringIO(raw.decode("utf-8-sig"), newline="")))
    assert (row["seq"], row["actor_name"]) == ("5", "Zoë Dewaele-D'Hondt")


def test_export_of_an_empty_period_has_only_the_header(
    settings: Settings, database: sqlite3.Connection, capsys: pytest.CaptureFixture[str]
) -> None:
    assert _run(settings, "register", "export", "--from", "2027-01-01", "--to", "2027-01-31") == 0
    assert capsys.readouterr().out == ",".join(EXPORT_COLUMNS) + "\r\n"


def test_export_refuses_a_reversed_period(
    settings: Settings, database: sqlite3.Connection, capsys: pytest.CaptureFixture[str]
) -> None:
    assert _run(settings, "register", "export", "--from", "2026-11-29", "--to", "2026-11-28") == 2
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


def test_commands_leave_the_database_untouched(settings: Settings, database: sqlite3.Connection) -> None:
    before = database.execute("SELECT * FROM register ORDER BY seq").fetchall()
    assert _run(settings, "register", "verify") == 0
    assert _run(settings, "register", "export", "--from", "2026-11-27", "--to", "2026-11-29") == 0
    ProcessingRegister(database).append(at=NOW, event=RegisterEvent.CANCELLED, actor_id="a", actor_name="A",
                                        protocol_id="P")  # the bot can still write afterwards
    assert database.execute("SELECT * FROM register ORDER BY seq").fetchall()[:5] == before
