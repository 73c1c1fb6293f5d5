"""The processing register (verwerkingsregister): proof of every transfer, never its content.

Each entry says who did what, when, under which protocol and legal basis, and which categories of
data were involved. Entries are chained by SHA-256 so an altered, removed or reordered entry shows.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import sqlite3
from dataclasses import dataclass
from enum import StrEnum

from bot.database import to_text, transaction
from bot.referral import DATA_CATEGORIES, LEGAL_BASIS, RECIPIENT_CATEGORY

GENESIS_HASH = "0" * 64


class RegisterEvent(StrEnum):
    """What can happen to a referral, as the DPO reads it."""

    REFERRAL_STARTED = "referral_started"
    CONSENT_CONFIRMED = "consent_confirmed"
    PACKAGE_BUILT = "package_built"
    QUEUED = "queued"
    DELIVERED = "delivered"
    DELIVERY_FAILED = "delivery_failed"
    CANCELLED = "cancelled"


@dataclass(frozen=True)
class RegisterEntry:
    """One line of the register as written."""

    seq: int
    at: dt.datetime
    event: RegisterEvent
    actor_id: str
    actor_name: str
    protocol_id: str
    reference: str
    detail: str
    hash: str


class ProcessingRegister:
    """Append-only register in the bot's database."""

    def __init__(self, connection: sqlite3.Connection) -> None:
        self._db = connection

    def append(
        self,
        *,
        at: dt.datetime,
        event: RegisterEvent,
        actor_id: str,
        actor_name: str,
        protocol_id: str,
        reference: str = "",
        detail: str = "",
    ) -> str:
        """Add an entry chained to the previous one; returns its hash.

        `detail` is for facts such as the key version or the information points confirmed,
        never for client data.
        """
        fields = {
            "at": to_text(at),
            "event": event.value,
            "actor_id": actor_id,
            "actor_name": actor_name,
            "protocol_id": protocol_id,
            "reference": reference,
            "legal_basis": LEGAL_BASIS + f"; protocol {protocol_id}",
            "data_categories": ",".join(DATA_CATEGORIES),
            "recipient_category": RECIPIENT_CATEGORY,
            "detail": detail,
        }
        with transaction(self._db):
            row = self._db.execute("SELECT hash FROM register ORDER BY seq DESC LIMIT 1").fetchone()
            previous = GENESIS_HASH if row is None else str(row["hash"])
            digest = entry_hash(previous, fields)
            self._db.execute(
                "INSERT INTO register (at, event, actor_id, actor_name, protocol_id, reference, legal_basis,"
                " data_categories, recipient_category, detail, previous_hash, hash)"
                " VALUES (:at, :event, :actor_id, :actor_name, :protocol_id, :reference, :legal_basis,"
                " :data_categories, :recipient_category, :detail, :previous_hash, :hash)",
                {**fields, "previous_hash": previous, "hash": digest},
            )
        return digest

    def events_for(self, reference: str) -> list[str]:
        """The event names recorded for one reference, in order."""
        rows = self._db.execute("SELECT event FROM register WHERE reference = ? ORDER BY seq", (reference,))
        return [str(row["event"]) for row in rows]


def entry_hash(previous_hash: str, fields: dict[str, str]) -> str:
    """SHA-256 over the previous hash and the entry's fields in a canonical JSON form."""
    canonical = json.dumps(fields, sort_keys=True, ensure_ascii=True, separators=(",", ":"))
    return hashlib.sha256((previous_hash + canonical).encode("ascii")).hexdigest()
