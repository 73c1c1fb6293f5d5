"""Which Teams conversation is the OCMW's for a protocol, and the one-time codes that link it.

An administrator runs `python -m bot link-ocmw <protocol-id>` and passes the code to the OCMW;
a worker types `koppel <code>` in the OCMW's channel. Only a hash of the code is stored; a code
works once, within 24 hours.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import secrets
from dataclasses import dataclass

from bot.core.reference import REFERENCE_ALPHABET
from bot.storage.database import Database, Row, from_text, to_text

CODE_LIFETIME = dt.timedelta(hours=24)
_CODE_LENGTH = 8


@dataclass(frozen=True)
class OcmwLink:
    """The OCMW conversation of one protocol."""

    protocol_id: str
    conversation_id: str  # the channel or group chat, without a thread's ";messageid=" suffix
    conversation_ref: str
    linked_by_id: str
    linked_by: str
    linked_at: dt.datetime
    #: The channel's Teams team (`channelData.team.id`), "" for links made before it was kept: Teams names
    #: the team, not the channel, when the app is added to it again or it is unarchived or restored.
    team_id: str = ""


def base_conversation_id(conversation_id: str) -> str:
    """A Teams channel thread id without its ";messageid=..." part: the channel itself."""
    return conversation_id.split(";messageid=", 1)[0]


def normalise_code(typed: str) -> str:
    """What was typed, without spaces and dashes, upper case."""
    return "".join(char for char in typed.upper() if char.isalnum())


def display_code(typed: str) -> str:
    """A code as the administrator got it: `K7M2-QX9P`."""
    code = normalise_code(typed)
    return f"{code[:4]}-{code[4:]}" if len(code) == _CODE_LENGTH else code


def _hash(code: str) -> str:
    return hashlib.sha256(normalise_code(code).encode("ascii", errors="replace")).hexdigest()


class OcmwLinks:
    """Pairing codes and links in the database."""

    def __init__(self, db: Database) -> None:
        self._db = db

    async def new_code(self, protocol_id: str, now: dt.datetime) -> str:
        """A fresh single-use code like `K7M2-QX9P`, valid for 24 hours; only its hash is kept."""
        code = "".join(secrets.choice(REFERENCE_ALPHABET) for _ in range(_CODE_LENGTH))
        await self._db.execute(
            "INSERT INTO pairing_codes (code_hash, protocol_id, created_at, expires_at)"
            " VALUES (:hash, :protocol, :now, :expires)",
            {"hash": _hash(code), "protocol": protocol_id, "now": to_text(now),
             "expires": to_text(now + CODE_LIFETIME)},
        )
        return f"{code[:4]}-{code[4:]}"

    async def protocol_for_code(self, code: str, now: dt.datetime) -> str | None:
        """The protocol a valid (known, unused, unexpired) code links, without using it up."""
        row = await self._db.fetch_one(
            "SELECT protocol_id, expires_at, used_at FROM pairing_codes WHERE code_hash = :hash", {"hash": _hash(code)})
        if row is None or row["used_at"] is not None or from_text(row["expires_at"]) <= now:
            return None
        return str(row["protocol_id"])

    async def link(self, code: str, link: OcmwLink, now: dt.datetime) -> bool:
        """Use the code and make `link` the protocol's conversation (replacing any earlier one)."""
        async with self._db.transaction():
            cursor = await self._db.execute(
                "UPDATE pairing_codes SET used_at = :now WHERE code_hash = :hash AND used_at IS NULL"
                " AND expires_at > :now AND protocol_id = :protocol",
                {"now": to_text(now), "hash": _hash(code), "protocol": link.protocol_id},
            )
            if cursor.rowcount != 1:
                return False
            await self._db.execute(
                "INSERT INTO ocmw_links (protocol_id, conversation_id, conversation_ref, linked_by_id, linked_by,"
                " linked_at, team_id) VALUES (:protocol, :conversation, :ref, :by_id, :by, :at, :team)"
                " ON CONFLICT (protocol_id) DO UPDATE SET conversation_id = excluded.conversation_id,"
                " conversation_ref = excluded.conversation_ref, linked_by_id = excluded.linked_by_id,"
                " linked_by = excluded.linked_by, linked_at = excluded.linked_at, team_id = excluded.team_id",
                {"protocol": link.protocol_id, "conversation": link.conversation_id, "ref": link.conversation_ref,
                 "by_id": link.linked_by_id, "by": link.linked_by, "at": to_text(link.linked_at),
                 "team": link.team_id or None},
            )
        return True

    async def for_protocol(self, protocol_id: str) -> OcmwLink | None:
        """The linked conversation of a protocol, if any."""
        row = await self._db.fetch_one("SELECT * FROM ocmw_links WHERE protocol_id = :protocol",
                                       {"protocol": protocol_id})
        return None if row is None else _link(row)

    async def for_conversation(self, conversation_id: str) -> list[OcmwLink]:
        """The protocols linked to this conversation (a channel may serve several)."""
        rows = await self._db.fetch_all(
            "SELECT * FROM ocmw_links WHERE conversation_id = :conversation ORDER BY protocol_id",
            {"conversation": base_conversation_id(conversation_id)},
        )
        return [_link(row) for row in rows]

    async def in_place(self, conversation_id: str, team_id: str) -> list[OcmwLink]:
        """The protocols linked to this conversation, or to a channel of this Teams team (`team_id`, may be "")."""
        rows = await self._db.fetch_all(
            "SELECT * FROM ocmw_links WHERE conversation_id = :conversation OR team_id = :team ORDER BY protocol_id",
            {"conversation": base_conversation_id(conversation_id), "team": team_id or None},
        )
        return [_link(row) for row in rows]


def _link(row: Row) -> OcmwLink:
    return OcmwLink(
        protocol_id=row["protocol_id"],
        conversation_id=row["conversation_id"],
        conversation_ref=row["conversation_ref"],
        linked_by_id=row["linked_by_id"],
        linked_by=row["linked_by"],
        linked_at=from_text(row["linked_at"]),
        team_id=row["team_id"] or "",
    )
