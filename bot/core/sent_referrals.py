"""Referrals after "send": one explicit state machine, and a record that holds no client data.

    queued --> sent --> received --> help_wanted -----> data_deleted  (filed in the OCMW's own dossier)
       |                   |-------> no_help_wanted --> data_deleted
       v                   '-------> unreachable ----> data_deleted  (or help_wanted / no_help_wanted after all)
     failed
    sent | received | help_wanted | no_help_wanted | unreachable --> consent_withdrawn --> data_deleted
    sent | received --> data_deleted  (a correction version, when its referral's data is deleted)

A correction (`VD-...-2`) is a referral of its own for delivery and receipt; the outcome, the
deletion and a withdrawal are the family's, recorded on the first version and carried to the
others (`bot.ocmw.actions`).

A transition not in `TRANSITIONS` is refused (`IllegalTransition`), so a late or replayed click
cannot, say, record an outcome for a referral nobody acknowledged.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from bot.storage.database import Database, Row, from_text, to_text


class ReferralState(StrEnum):
    """What happened to a referral after the referrer pressed "send"."""

    QUEUED = "queued"  # in the outbox, not yet accepted by the mail system
    SENT = "sent"  # accepted by the mail system (or written to the outbox folder)
    FAILED = "failed"  # given up: the referrer was told it was NOT delivered
    RECEIVED = "received"  # the OCMW acknowledged receipt
    HELP_WANTED = "help_wanted"  # contact made, the family wants help: the OCMW opens a file
    NO_HELP_WANTED = "no_help_wanted"  # contact made, no help wanted: the data must go
    UNREACHABLE = "unreachable"  # no contact possible: the data must go
    DATA_DELETED = "data_deleted"  # the OCMW confirmed it deleted the mail and attachment
    CONSENT_WITHDRAWN = "consent_withdrawn"  # the parents withdrew consent: the OCMW must delete


OUTCOMES: Mapping[str, ReferralState] = {
    "contact_help_wanted": ReferralState.HELP_WANTED,
    "contact_no_help_wanted": ReferralState.NO_HELP_WANTED,
    "unreachable": ReferralState.UNREACHABLE,
}
_WITHDRAW = ReferralState.CONSENT_WITHDRAWN
_DELETED = ReferralState.DATA_DELETED
TRANSITIONS: Mapping[ReferralState, frozenset[ReferralState]] = {
    ReferralState.QUEUED: frozenset({ReferralState.SENT, ReferralState.FAILED}),
    ReferralState.SENT: frozenset({ReferralState.RECEIVED, _WITHDRAW, _DELETED}),
    ReferralState.RECEIVED: frozenset({*OUTCOMES.values(), _WITHDRAW, _DELETED}),
    ReferralState.NO_HELP_WANTED: frozenset({_DELETED, _WITHDRAW}),
    # Not reached at first, reached after all (a correction brought the right phone number):
    ReferralState.UNREACHABLE: frozenset({_DELETED, _WITHDRAW, ReferralState.HELP_WANTED,
                                          ReferralState.NO_HELP_WANTED}),
    ReferralState.HELP_WANTED: frozenset({_DELETED, _WITHDRAW}),
    ReferralState.CONSENT_WITHDRAWN: frozenset({ReferralState.DATA_DELETED}),
    ReferralState.FAILED: frozenset(),
    ReferralState.DATA_DELETED: frozenset(),
}
#: States in which the OCMW still holds the data and may report it wrong (article 7).
HOLDS_DATA = frozenset({ReferralState.SENT, ReferralState.RECEIVED, ReferralState.HELP_WANTED,
                        ReferralState.NO_HELP_WANTED, ReferralState.UNREACHABLE})
#: States in which the OCMW still has to confirm that it deleted the data from the shared mailbox.
AWAITING_DELETION = frozenset({ReferralState.HELP_WANTED, ReferralState.NO_HELP_WANTED, ReferralState.UNREACHABLE,
                               ReferralState.CONSENT_WITHDRAWN})
#: States in which nothing more will be sent under the referral (no correction either).
CLOSED = frozenset({ReferralState.CONSENT_WITHDRAWN, ReferralState.DATA_DELETED, ReferralState.FAILED})
#: States the OCMW still has to act on.
OPEN_FOR_OCMW = frozenset({ReferralState.SENT, ReferralState.RECEIVED, *AWAITING_DELETION})
#: States in which someone still has to do something (the mail to leave, the OCMW to act): a referrer's list shows
#: these first.
STILL_OPEN = frozenset({ReferralState.QUEUED, *OPEN_FOR_OCMW})


def check_transitions(table: Mapping[ReferralState, frozenset[ReferralState]]) -> None:
    """Every state has a row, and every state can be reached from `queued`."""
    if set(table) != set(ReferralState):
        raise ValueError(f"states without a row: {sorted(set(ReferralState) - set(table))}")
    reached = {ReferralState.QUEUED}
    frontier = [ReferralState.QUEUED]
    while frontier:
        for target in table[frontier.pop()]:
            if target not in reached:
                reached.add(target)
                frontier.append(target)
    if reached != set(ReferralState):
        raise ValueError(f"unreachable states: {sorted(set(ReferralState) - reached)}")


check_transitions(TRANSITIONS)


class IllegalTransition(Exception):
    """The referral is not in a state where this step is allowed."""

    def __init__(self, reference: str, current: ReferralState, wanted: ReferralState) -> None:
        super().__init__(f"{reference}: {current.value} -> {wanted.value} is not allowed")
        self.current = current


@dataclass(frozen=True)
class SentReferral:
    """What the bot remembers of a referral, and where to report back about it."""

    reference: str
    protocol_id: str
    referrer_id: str
    referrer_name: str
    conversation_id: str
    conversation_ref: str  # serialized Teams conversation reference, for proactive messages
    card_activity_id: str | None  # the referrer's card to update in place when the state changes
    lang: str
    state: ReferralState
    key_version: str
    message_id: str
    created_at: dt.datetime
    queued_at: dt.datetime
    sent_at: dt.datetime | None = None
    failure_reason: str | None = None
    parent_reference: str | None = None  # set on a correction: the referral it corrects
    corrected_item: str | None = None
    acknowledged_by_id: str | None = None
    acknowledged_by: str | None = None
    acknowledged_at: dt.datetime | None = None
    outcome_by_id: str | None = None
    outcome_by: str | None = None
    outcome_at: dt.datetime | None = None
    deleted_by: str | None = None
    deleted_at: dt.datetime | None = None
    reported_items: tuple[str, ...] = ()
    withdrawn_by_id: str | None = None
    withdrawn_by: str | None = None
    withdrawn_at: dt.datetime | None = None
    #: What the package holds, as categories (never values), so its delivery is registered without client
    #: data; None for a referral queued before they were recorded (unknown).
    data_categories: tuple[str, ...] | None = None
    consent_version: str = ""  # the consent text the referrer confirmed (the first version's, for a correction)
    recipient: str = ""  # the package's addressee as the register names it: "OCMW X <mailbox>"
    #: The sending team named in the package and the mail (`[[sender.teams]]`); corrections name it too.
    #: None for referrals made before teams were recorded: their protocol's `[sender] team`.
    sender_team: str | None = None

    @property
    def sent_to_mailbox(self) -> str:
        """The mailbox the package was addressed to when it was queued ("" for a referral that did not record it).

        Cards name this one, not the protocol file's mailbox now: the file may name another since.
        """
        _, opening, rest = self.recipient.rpartition("<")
        return rest.removesuffix(">").strip() if opening and rest.endswith(">") else ""

    @property
    def root(self) -> str:
        """The reference of the family's first version (itself, unless this is a correction)."""
        return self.parent_reference or self.reference


_TIME_FIELDS = frozenset(
    {"created_at", "queued_at", "sent_at", "acknowledged_at", "outcome_at", "deleted_at", "withdrawn_at"}
)
_COLUMNS = tuple(field.name for field in dataclasses.fields(SentReferral))
#: What `update` and `transition` may set: every column but the key.
_CHANGEABLE = frozenset(_COLUMNS) - {"reference"}
#: How often a step is tried when the referral's state changed under it to one the step may start from.
_STEP_ATTEMPTS = 3
#: For each state, the states a step to it may start from (none for `queued`, where every referral starts).
_SOURCES: Mapping[ReferralState, list[str]] = {
    to: sorted(source.value for source, targets in TRANSITIONS.items() if to in targets) for to in ReferralState
}


class ReferralStore:
    """Referrals in the database, by reference; state changes only along `TRANSITIONS`.

    Every change is one `UPDATE ... RETURNING` of the columns it changes; a state change is a
    compare-and-set on the states it may start from. The row is locked by the update (PostgreSQL;
    on SQLite the writer lock) until the caller's transaction ends, so two instances acting on one
    referral at once take turns: the second sees the first's result rather than overwriting it,
    and facts changed side by side (a card id, a reported item) both stay.
    """

    def __init__(self, db: Database) -> None:
        self._db = db

    async def add(self, referral: SentReferral) -> None:
        """Record a referral (the reference is unique)."""
        # Column names come from the dataclass, never from input; values are bound parameters.
        await self._db.execute(
            f"INSERT INTO referrals ({', '.join(_COLUMNS)}) VALUES ({', '.join(':' + name for name in _COLUMNS)})",  # noqa: S608  # nosec B608
            _to_row(referral),
        )

    async def get(self, reference: str) -> SentReferral | None:
        """The referral with this reference, or None."""
        row = await self._db.fetch_one("SELECT * FROM referrals WHERE reference = :reference",
                                       {"reference": reference})
        return None if row is None else referral_from_row(row)

    async def by_message_id(self, message_id: str) -> SentReferral | None:
        """The referral whose mail has this Message-ID."""
        row = await self._db.fetch_one("SELECT * FROM referrals WHERE message_id = :message_id",
                                       {"message_id": message_id})
        return None if row is None else referral_from_row(row)

    async def transition(self, reference: str, to: ReferralState, **changes: Any) -> SentReferral:
        """Move to `to` with `changes` (column values), refusing a step the state machine forbids.

        One statement: the update happens only from a state that `TRANSITIONS` lets reach `to` (a
        compare-and-set; PostgreSQL re-checks it on a row another instance just changed) and returns
        the row as stored. A refused step writes nothing; the referral is then read to say why.
        """
        sources = _SOURCES[to]
        for _ in range(_STEP_ATTEMPTS):
            if sources:  # none for `queued`, where every referral starts
                changed = await self._change(reference, {**changes, "state": to}, " AND state IN :sources",
                                             {"sources": sources})
                if changed is not None:
                    return changed
            current = await self._locked(reference)  # KeyError when there is no such referral
            if to not in TRANSITIONS[current.state]:
                raise IllegalTransition(reference, current.state, to)
            # Another instance moved it to a state this step may start from, between the update and the read.
        raise IllegalTransition(reference, current.state, to)

    async def update(self, reference: str, **changes: Any) -> SentReferral:
        """Change facts that are not a state change (card ids, reminders, reported items): only these columns."""
        if "state" in changes:
            raise ValueError("use transition() to change the state")
        changed = await self._change(reference, changes, "", {}) if changes else await self.get(reference)
        if changed is None:
            raise KeyError(reference)
        return changed

    async def _change(self, reference: str, changes: Mapping[str, Any], condition: str,
                      parameters: Mapping[str, Any]) -> SentReferral | None:
        """Set `changes` (column values) where `condition` holds; the referral as stored, or None when unchanged."""
        unknown = sorted(set(changes) - _CHANGEABLE)
        if unknown:
            raise TypeError(f"not a referral's changeable field: {', '.join(unknown)}")
        values = {f"new_{name}": _column_value(name, value) for name, value in changes.items()}
        assignments = ", ".join(f"{name} = :new_{name}" for name in changes)
        # Column names are checked against the dataclass's above; values are bound parameters.
        rows = await self._db.execute(
            f"UPDATE referrals SET {assignments} WHERE reference = :reference{condition} RETURNING *",  # noqa: S608  # nosec B608
            {**values, **parameters, "reference": reference},
        )
        row = rows.first()
        return None if row is None else referral_from_row(row)

    async def for_referrer(self, referrer_id: str, limit: int = 50) -> list[SentReferral]:
        """A referrer's referrals, the first `limit`: those still open (`STILL_OPEN`) before the closed ones, newest
        first within each, so an old one still waiting for the OCMW is not among those left out."""
        rows = await self._db.fetch_all(
            "SELECT * FROM referrals WHERE referrer_id = :referrer"
            " ORDER BY CASE WHEN state IN :open THEN 0 ELSE 1 END, queued_at DESC LIMIT :limit",
            {"referrer": referrer_id, "open": sorted(state.value for state in STILL_OPEN), "limit": limit},
        )
        return [referral_from_row(row) for row in rows]

    async def count_for_referrer(self, referrer_id: str) -> int:
        """How many referrals of this referrer are kept (`for_referrer` lists some of them)."""
        return int(await self._db.scalar("SELECT COUNT(*) AS n FROM referrals WHERE referrer_id = :referrer",
                                         {"referrer": referrer_id}))

    async def open_for_protocol(self, protocol_id: str) -> list[SentReferral]:
        """What the OCMW of a protocol still has to act on, oldest first."""
        rows = await self._db.fetch_all(
            "SELECT * FROM referrals WHERE protocol_id = :protocol AND state IN :states ORDER BY queued_at",
            {"protocol": protocol_id, "states": sorted(state.value for state in OPEN_FOR_OCMW)},
        )
        return [referral_from_row(row) for row in rows]

    async def for_protocol(self, protocol_id: str) -> list[SentReferral]:
        """Every referral kept under a protocol, oldest first (a leaked ZIP password concerns them all)."""
        rows = await self._db.fetch_all(
            "SELECT * FROM referrals WHERE protocol_id = :protocol ORDER BY queued_at", {"protocol": protocol_id})
        return [referral_from_row(row) for row in rows]

    async def versions_of(self, root: str) -> list[SentReferral]:
        """The corrections of `root` (`root-2`, `root-3`, ...), oldest first."""
        rows = await self._db.fetch_all(
            "SELECT * FROM referrals WHERE parent_reference = :root ORDER BY queued_at", {"root": root})
        return [referral_from_row(row) for row in rows]

    async def in_states(self, states: frozenset[ReferralState]) -> list[SentReferral]:
        """All referrals in these states, oldest first."""
        rows = await self._db.fetch_all(
            "SELECT * FROM referrals WHERE state IN :states ORDER BY queued_at",
            {"states": sorted(state.value for state in states)},
        )
        return [referral_from_row(row) for row in rows]

    async def in_state(self, state: ReferralState) -> list[SentReferral]:
        """All referrals in one state, oldest first."""
        rows = await self._db.fetch_all(
            "SELECT * FROM referrals WHERE state = :state ORDER BY queued_at", {"state": state.value})
        return [referral_from_row(row) for row in rows]

    async def message_ids_with_versions(self, reference: str) -> list[str]:
        """The Message-IDs of the referral and of the correction versions that correct it (`VD-...-2`)."""
        rows = await self._db.fetch_all(
            "SELECT message_id FROM referrals WHERE reference = :reference OR parent_reference = :reference",
            {"reference": reference},
        )
        return [str(row["message_id"]) for row in rows]

    async def deleted_message_ids(self) -> list[str]:
        """The Message-IDs of every referral whose data the OCMW deleted, and of their correction versions."""
        rows = await self._db.fetch_all(
            "SELECT message_id FROM referrals WHERE state = :deleted"
            " OR parent_reference IN (SELECT reference FROM referrals WHERE state = :deleted)",
            {"deleted": ReferralState.DATA_DELETED.value},
        )
        return [str(row["message_id"]) for row in rows]

    async def lock(self, reference: str) -> SentReferral:
        """Lock the referral for the rest of the transaction (PostgreSQL; SQLite's writer lock already holds),
        and return it as it stands then."""
        return await self._locked(reference)

    async def _locked(self, reference: str) -> SentReferral:
        """The referral as it stands, locked for the rest of the transaction where rows can be locked."""
        row = await self._db.fetch_one(
            "SELECT * FROM referrals WHERE reference = :reference" + self._db.for_update,  # noqa: S608  # nosec B608
            {"reference": reference})
        if row is None:
            raise KeyError(reference)
        return referral_from_row(row)


def _to_row(referral: SentReferral) -> dict[str, Any]:
    return {name: _column_value(name, getattr(referral, name)) for name in _COLUMNS}


def _column_value(name: str, value: Any) -> Any:
    """A field's value as its column holds it."""
    if name in _TIME_FIELDS and value is not None:
        return to_text(value)
    if name == "state":
        return ReferralState(value).value
    if name == "reported_items" or (name == "data_categories" and value is not None):
        return ",".join(value)
    return value


def referral_from_row(row: Row) -> SentReferral:
    """A referral from its row (extra columns of a query are ignored)."""
    values: dict[str, Any] = {}
    for name in _COLUMNS:
        value = row[name]
        if name in _TIME_FIELDS and value is not None:
            value = from_text(value)
        elif name == "state":
            value = ReferralState(value)
        elif name == "reported_items" or (name == "data_categories" and value is not None):
            value = tuple(item for item in value.split(",") if item)
        values[name] = value
    return SentReferral(**values)
