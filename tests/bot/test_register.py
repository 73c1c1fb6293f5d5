"""The processing register: each entry chained to the previous, legal basis and categories filled."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

from bot.database import open_database
from bot.register import GENESIS_HASH, ProcessingRegister, RegisterEvent, entry_hash

NOW = dt.datetime(2026, 11, 28, 9, 0, tzinfo=dt.UTC)


def test_entries_are_chained(tmp_path: Path) -> None:
    db = open_database(tmp_path / "db")
    register = ProcessingRegister(db)
    first = register.append(at=NOW, event=RegisterEvent.CONSENT_CONFIRMED, actor_id="a", actor_name="A",
                            protocol_id="P", reference="VD-20261128-AAAAAA")
    second = register.append(at=NOW, event=RegisterEvent.DELIVERED, actor_id="a", actor_name="A",
                             protocol_id="P", reference="VD-20261128-AAAAAA")
    rows = db.execute("SELECT * FROM register ORDER BY seq").fetchall()
    assert rows[0]["previous_hash"] == GENESIS_HASH and rows[1]["previous_hash"] == first
    assert rows[1]["hash"] == second != first
    names = [name for name in rows[1].keys() if name not in ("seq", "previous_hash", "hash")]  # noqa: SIM118
    fields = {name: rows[1][name] for name in names}
    assert entry_hash(first, fields) == second
    assert "10/1" in rows[0]["legal_basis"] and "P" in rows[0]["legal_basis"]
    assert register.events_for("VD-20261128-AAAAAA") == ["consent_confirmed", "delivered"]
