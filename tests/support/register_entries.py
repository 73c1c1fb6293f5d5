"""A register years old in a test: entries written straight into the SQLite file, chained as the bot chains them."""

from __future__ import annotations

import datetime as dt
import sqlite3
from pathlib import Path

from bot.evidence.register import entry_hash


def add_delivered_entries(database_path: Path, count: int, protocol_id: str) -> None:
    """`count` delivered-referral entries chained after the last one, written beside the running bot."""
    fields = {
        "event": "delivered", "actor_id": "bot:delivery", "actor_name": "Veilig doorverwijzen",
        "protocol_id": protocol_id,
        "purpose": "onderbescherming voorkomen", "legal_basis": f"art. 10/1; protocol {protocol_id}",
        "data_categories": "identification:name,contact:address", "recipient": "OCMW Sint-Gillis-Waas <w@s.be>",
        "recipient_category": "maatschappelijk werker", "consent_version": "2026-03", "entry_format": "2",
    }
    start = dt.datetime(2021, 12, 1, 9, 0, tzinfo=dt.UTC)
    with sqlite3.connect(database_path) as db:
        seq, previous = db.execute("SELECT seq, hash FROM register ORDER BY seq DESC LIMIT 1").fetchone()
        rows = []
        for number in range(1, count + 1):
            entry = {**fields, "at": (start + dt.timedelta(hours=number)).isoformat(timespec="microseconds"),
                     "reference": f"VD-20211201-{number:06d}", "detail": f"Message-ID <{number}@opgroeien.be>"}
            digest = entry_hash(previous, entry)
            rows.append({**entry, "seq": seq + number, "previous_hash": previous, "hash": digest})
            previous = digest
        columns = list(rows[0])
        db.executemany(f"INSERT INTO register ({', '.join(columns)}) VALUES ({', '.join('?' * len(columns))})",  # noqa: S608
                       [tuple(row[column] for column in columns) for row in rows])
