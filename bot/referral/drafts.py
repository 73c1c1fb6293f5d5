"""Unfinished referrals: who started them, which step they are at, and the sealed data.

Client data is kept only sealed (`DraftCipher`) and only until the referral is sent, cancelled
or expires; after that a tombstone without data remains, so a replayed card action gets a clear
answer ("already sent as VD-..."); tombstones go after their protocol's `tombstone_days`
(`bot.oversight.retention`).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import logging
import secrets
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from bot.core.reference import new_reference
from bot.core.referral_values import UNVERSIONED_CONSENT_TEXT, ClientDetails, ConsentRecord
from bot.secrets.draft_cipher import DraftCipher, DraftCipherError
from bot.storage.database import Database, Row, from_text, to_text

logger = logging.getLogger(__name__)

_REFERENCE_ATTEMPTS = 8


class DraftState(StrEnum):
    """Where a referral is in the dialogue; see `bot.referral.dialogue.TRANSITIONS`."""

    CONSENT = "consent"
    DETAILS = "details"
    REVIEW = "review"
    SENDING = "sending"
    SENT = "sent"
    CANCELLED = "cancelled"
    EXPIRED = "expired"


@dataclass(frozen=True, repr=False)
class Draft:
    """One referral in progress (or its tombstone)."""

    id: str
    owner_id: str
    conversation_id: str
    state: DraftState
    created_at: dt.datetime
    updated_at: dt.datetime
    protocol_id: str | None = None
    consent: ConsentRecord | None = None
    details: ClientDetails | None = None
    reference: str = ""
    #: The `[[sender.teams]]` name the referral goes out as, fixed at consent; None before.
    sender_team: str | None = None
    #: Where the chat shows the draft's card, as last remembered (`remember_card`); None before a click.
    shown: ShownCard | None = None

    def __repr__(self) -> str:
        return f"Draft(id={self.id!r}, state={self.state.value!r})"


@dataclass(frozen=True)
class ShownCard:
    """A card message in a chat: where it is, and the language it speaks."""

    conversation_ref: str
    activity_id: str
    lang: str


@dataclass(frozen=True)
class InterruptedSend:
    """A draft whose send a crash interrupted: its reference, and the chat to tell (None if unknown)."""

    reference: str
    conversation_ref: str | None
    lang: str


#: The states of a draft still in progress (the sweep wipes them once idle).
_OPEN_STATES = (DraftState.CONSENT, DraftState.DETAILS, DraftState.REVIEW, DraftState.SENDING)


class DraftStore:
    """Drafts in the database; every state change is a compare-and-set, so a double click sends once."""

    def __init__(self, db: Database, cipher: DraftCipher, ttl: dt.timedelta) -> None:
        self._db = db
        self._cipher = cipher
        self.ttl = ttl

    async def create(self, owner_id: str, conversation_id: str, now: dt.datetime, today: dt.date) -> Draft:
        """A new draft at the consent step, with its reference (dated `today`) fixed from the start."""
        for _ in range(_REFERENCE_ATTEMPTS):
            draft = Draft(
                id=secrets.token_urlsafe(18),
                owner_id=owner_id,
                conversation_id=conversation_id,
                state=DraftState.CONSENT,
                created_at=now,
                updated_at=now,
                reference=new_reference(today),
            )
            inserted = await self._db.execute(
                "INSERT INTO drafts (id, owner_id, conversation_id, state, reference, created_at, updated_at)"
                " VALUES (:id, :owner, :conversation, :state, :reference, :now, :now) ON CONFLICT DO NOTHING",
                {"id": draft.id, "owner": owner_id, "conversation": conversation_id, "state": draft.state.value,
                 "reference": draft.reference, "now": to_text(now)},
            )
            if inserted.rowcount == 1:
                return draft
            # the same reference twice in a day: draw again
        raise RuntimeError("could not draw a unique reference")

    async def get(self, draft_id: str) -> Draft | None:
        """The draft with this id, its data unsealed, or None."""
        row = await self._db.fetch_one("SELECT * FROM drafts WHERE id = :id", {"id": draft_id})
        return None if row is None else self._from_row(row)

    @property
    def idle_minutes(self) -> str:
        """The time-to-live (DRAFT_TTL_MINUTES) as the cards say it: the `minutes` of a problem text."""
        return str(self.ttl // dt.timedelta(minutes=1))

    def is_expired(self, draft: Draft, now: dt.datetime) -> bool:
        """True when the draft was left untouched for longer than the time-to-live."""
        return now - draft.updated_at > self.ttl

    def details_fingerprint(self, draft_id: str, details: ClientDetails) -> str:
        """The fingerprint a card showing `details` carries (keyed with the draft key: no client data in it).

        Equal for the same data of the same draft, different after any change of it.
        """
        return self._cipher.fingerprint(draft_id, _details_bytes(details))

    async def advance(self, draft: Draft, new_state: DraftState, now: dt.datetime, **changes: Any) -> Draft | None:
        """Move `draft` to `new_state` with `changes` if nobody changed it since it was read.

        Returns the updated draft, or None when another request got there first.
        """
        updated = dataclasses.replace(draft, state=new_state, updated_at=now, **changes)
        sealed = None
        if updated.details is not None:
            sealed = self._cipher.seal(draft.id, _details_bytes(updated.details))
        consent = None if updated.consent is None else _consent_to_json(updated.consent)
        cursor = await self._db.execute(
            "UPDATE drafts SET state = :state, protocol_id = :protocol, consent_json = :consent,"
            " sealed_details = :sealed, reference = :reference, sender_team = :team, updated_at = :now"
            " WHERE id = :id AND state = :was_state AND updated_at = :was_updated",
            {
                "state": new_state.value,
                "protocol": updated.protocol_id,
                "consent": consent,
                "sealed": sealed,
                "reference": updated.reference,
                "team": updated.sender_team,
                "now": to_text(now),
                "id": draft.id,
                "was_state": draft.state.value,
                "was_updated": to_text(draft.updated_at),
            },
        )
        return updated if cursor.rowcount == 1 else None

    async def close(self, draft: Draft, final_state: DraftState, now: dt.datetime) -> bool:
        """Wipe the client data and leave a tombstone in `final_state` (sent or cancelled).

        The WAL is emptied of the old page versions once the wipe is committed (`note_wipe`).
        """
        async with self._db.transaction(savepoint=False):  # one statement: nothing half done
            cursor = await self._db.execute(
                "UPDATE drafts SET state = :state, sealed_details = NULL, consent_json = NULL,"
                " updated_at = :now WHERE id = :id AND state = :was_state",
                {"state": final_state.value, "now": to_text(now), "id": draft.id, "was_state": draft.state.value},
            )
            if cursor.rowcount != 1:
                return False
            self._db.note_wipe()
        return True

    async def release_interrupted_sends(self, now: dt.datetime,
                                        idle_for: dt.timedelta | None) -> list[InterruptedSend]:
        """Drafts left `sending` for longer than `idle_for` (the process died mid-send) go back to review.

        `idle_for` None: every draft left `sending` (nothing else can be sending), also one whose last
        change lies in the future because the clock was stepped back since. Nothing of theirs was
        committed (the package, the referral and the wipe commit together), so the data is still
        there and pressing "Verstuur" again sends them. Call inside a transaction
        with whatever tells the users. Returns the drafts released, with where their card is.
        """
        rows = await self._db.fetch_all(
            "UPDATE drafts SET state = :review, updated_at = :now"
            " WHERE state = :sending AND (:every OR updated_at <= :cutoff)"
            " RETURNING reference, conversation_ref, lang",
            {"review": DraftState.REVIEW.value, "now": to_text(now), "sending": DraftState.SENDING.value,
             "every": idle_for is None, "cutoff": to_text(now - (idle_for or dt.timedelta(0)))},
        )
        return [InterruptedSend(str(row["reference"]), row["conversation_ref"], row["lang"] or "nl") for row in rows]

    async def remember_card(self, draft: Draft, card: ShownCard) -> None:
        """Where the draft's card is shown, so an expired draft's card can be blanked in the chat.

        Written only when it changed: every click on a card would otherwise be a transaction and a
        durable commit of its own, for the same card in the same chat.
        """
        if draft.shown is not None and _same_place(draft.shown, card):
            return
        await self._db.execute(
            "UPDATE drafts SET conversation_ref = :ref, card_activity_id = :activity, lang = :lang WHERE id = :id",
            {"ref": card.conversation_ref, "activity": card.activity_id, "lang": card.lang, "id": draft.id},
        )

    async def sweep(self, now: dt.datetime, replace_card: Callable[[ShownCard], Awaitable[None]]) -> list[ShownCard]:
        """Wipe drafts idle past the time-to-live (and empty the WAL).

        The tombstones stay for `bot.oversight.retention`.

        The chat may still show a wiped draft's review card with the client's data: `replace_card`
        is called for each such card inside the same transaction (it queues the replacement), so
        the wipe and the promise to blank the card commit together. Returns those cards.
        """
        open_states = [state.value for state in _OPEN_STATES]
        async with self._db.transaction():
            idle = await self._db.fetch_all(
                "SELECT id, conversation_ref, card_activity_id, lang FROM drafts"  # noqa: S608  # nosec B608  # + a constant clause
                " WHERE state IN :open AND updated_at < :cutoff" + self._db.skip_locked,
                {"open": open_states, "cutoff": to_text(now - self.ttl)},
            )
            if not idle:
                return []
            await self._db.execute(
                "UPDATE drafts SET state = :expired, sealed_details = NULL, consent_json = NULL, updated_at = :now,"
                " conversation_ref = NULL, card_activity_id = NULL"
                " WHERE id IN :ids AND state IN :open AND updated_at < :cutoff",
                {"expired": DraftState.EXPIRED.value, "now": to_text(now), "ids": [row["id"] for row in idle],
                 "open": open_states, "cutoff": to_text(now - self.ttl)},
            )
            self._db.note_wipe()  # the WAL is truncated when this transaction commits
            shown = [ShownCard(row["conversation_ref"], row["card_activity_id"], row["lang"] or "nl")
                     for row in idle if row["card_activity_id"] is not None]
            for card in shown:
                await replace_card(card)
        return shown

    def _from_row(self, row: Row) -> Draft:
        details = None
        state = DraftState(row["state"])
        if row["sealed_details"] is not None:
            try:
                details = ClientDetails(**json.loads(self._cipher.open(row["id"], row["sealed_details"])))
            except DraftCipherError:
                # The draft key changed (rotated in Key Vault, or a new data folder key): the data
                # cannot be read any more, so the draft is as good as expired.
                logger.warning("draft data sealed with another key; treated as expired", extra={"draft_id": row["id"]})
                state = DraftState.EXPIRED
        consent = None if row["consent_json"] is None else _consent_from_json(row["consent_json"])
        return Draft(
            id=row["id"],
            owner_id=row["owner_id"],
            conversation_id=row["conversation_id"],
            state=state,
            created_at=from_text(row["created_at"]),
            updated_at=from_text(row["updated_at"]),
            protocol_id=row["protocol_id"],
            consent=consent,
            details=details,
            reference=row["reference"],
            sender_team=row["sender_team"],
            shown=ShownCard(row["conversation_ref"], row["card_activity_id"], row["lang"] or "nl")
            if row.get("conversation_ref") and row.get("card_activity_id") else None,
        )


def _details_bytes(details: ClientDetails) -> bytes:
    """The data as it is sealed and fingerprinted."""
    return json.dumps(dataclasses.asdict(details)).encode("utf-8")


def _same_place(stored: ShownCard, current: ShownCard) -> bool:
    """The same card in the same chat, in the same language.

    A stored conversation reference also names the activity it answered, which is another one at
    every click; the chat it reaches is the rest of it.
    """
    if (stored.activity_id, stored.lang) != (current.activity_id, current.lang):
        return False
    if stored.conversation_ref == current.conversation_ref:
        return True
    try:
        before, now = json.loads(stored.conversation_ref), json.loads(current.conversation_ref)
    except ValueError:
        return False
    if not isinstance(before, dict) or not isinstance(now, dict):
        return False
    before.pop("activityId", None)
    now.pop("activityId", None)
    return bool(before == now)


def _consent_to_json(consent: ConsentRecord) -> str:
    values = dataclasses.asdict(consent)
    values["confirmed_at"] = to_text(consent.confirmed_at)
    return json.dumps(values)


def _consent_from_json(text: str) -> ConsentRecord:
    values = json.loads(text)
    values["confirmed_at"] = from_text(values["confirmed_at"])
    # A draft consented before versions were recorded was read the texts that had no version yet.
    values.setdefault("text_version", UNVERSIONED_CONSENT_TEXT)
    return ConsentRecord(**values)
