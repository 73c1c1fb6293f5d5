"""Storage limitation inside the bot: every record goes when its protocol's retention period is over.

What is kept, how long and why is the README's "Retention" table; the periods come from each
protocol file's `[retention]` table (`bot.core.protocols.RetentionPolicy`). `prune()` runs from a
periodic job. Each table it prunes under one protocol's rule is one transaction that also appends
one `retention_pruned` register entry (the bot as actor; the table, the count and the rule, never
client data or references), so the DPO can see that a prune happened and what it removed.

- A referral goes with its correction versions (`VD-...-2`), their correction requests, outbox and
  Teams-message rows, the OCMW card's slot and the reminders about them, once its root is in one of the protocol's
  `closed_states` and nothing has happened to any of them (the register's last entry about them)
  for `referral_days_after_closure`. A mail or Teams message still on its way holds it back.
- Draft tombstones go `tombstone_days` after they ended; pairing codes `pairing_code_days` after
  they expired; Teams messages, mail rows and card slots about no kept referral (an expired
  draft's card, a note about an interrupted send, a breach report's mail and its kept copy, a
  reminder whose referral went before reminders went with it) `tombstone_days` after they were finished.
- An OCMW conversation link goes once its protocol has ended (or its file is gone) and no referral
  of it is kept.
- Register entries go `register_years` after they were written, oldest first and never while the
  referral they are about is kept: the chain is cut from the start, with an anchor
  (`ProcessingRegister.prune_through`).
"""

from __future__ import annotations

import datetime as dt
import logging
from collections import Counter
from dataclasses import dataclass
from typing import Any
from zoneinfo import ZoneInfo

from bot.clock import Clock
from bot.core.protocols import CLOSABLE_STATES, DEFAULT_RETENTION, ProtocolRegistry, RetentionPolicy
from bot.delivery.mail_outbox import OutboxState
from bot.delivery.mail_transport import SentCopies
from bot.delivery.message_outbox import MessageState
from bot.evidence.register import SYSTEM_ACTOR_ID, SYSTEM_ACTOR_NAME, ProcessingRegister, RegisterEvent
from bot.referral.drafts import DraftState
from bot.storage.database import Database, from_text, to_text

logger = logging.getLogger(__name__)

#: The protocol id of a prune that follows no single protocol's rule (the defaults, the register).
NO_PROTOCOL = "-"
_DRAFT_ENDED = (DraftState.SENT.value, DraftState.CANCELLED.value, DraftState.EXPIRED.value)
_FINISHED_MESSAGES = (MessageState.SENT.value, MessageState.FAILED.value)
_FINISHED_MAILS = (OutboxState.DELIVERED.value, OutboxState.FAILED.value)
#: Register entries read per round trip while looking for the first one that is not due.
_REGISTER_PAGE = 500


def slot_reference(db: Database) -> str:
    """SQL for the referral a card slot belongs to: slots are named `<kind>:<reference>` (e.g. `ocmw:VD-...`)."""
    position = "strpos(slot, ':')" if db.is_postgres else "instr(slot, ':')"
    return f"substr(slot, {position} + 1)"


@dataclass(frozen=True)
class Pruned:
    """One prune: how many rows of `table` went under the rule of `protocol_id`."""

    table: str
    protocol_id: str
    count: int
    detail: str


class RetentionService:
    """Removes what is past its retention period, one register entry per table and protocol."""

    def __init__(
        self,
        *,
        db: Database,
        registry: ProtocolRegistry,
        register: ProcessingRegister,
        copies: SentCopies,
        clock: Clock,
        timezone: ZoneInfo,
    ) -> None:
        self._db = db
        self._registry = registry
        self._register = register
        self._copies = copies
        self._clock = clock
        self._tz = timezone

    async def prune(self) -> list[Pruned]:
        """Remove everything whose period is over; the register last, so it still sees the referrals."""
        now = self._clock.now()
        done = [
            *await self._referrals(now),
            *await self._drafts(now),
            *await self._pairing_codes(now),
            *await self._links(now),
            *await self._leftovers(now),
            *await self._register_entries(now),
        ]
        for pruned in done:
            logger.info("retention: %d %s pruned", pruned.count, pruned.table,
                        extra={"protocol_id": pruned.protocol_id})
        return done

    # -- referrals ------------------------------------------------------------------------------

    async def _referrals(self, now: dt.datetime) -> list[Pruned]:
        # A family's last activity is never before its first version was queued: younger ones cannot be due.
        shortest = min(policy.referral_days_after_closure for _, policy in self._per_protocol())
        roots = await self._db.fetch_all(
            "SELECT reference, protocol_id, state FROM referrals WHERE parent_reference IS NULL"
            " AND state IN :states AND queued_at < :youngest ORDER BY queued_at",
            {"states": sorted(state.value for state in CLOSABLE_STATES),
             "youngest": to_text(now - dt.timedelta(days=shortest))},
        )
        due: dict[str, list[str]] = {}
        for root in roots:
            policy = self._registry.retention_for(str(root["protocol_id"]))
            if root["state"] in {state.value for state in policy.closed_states} and await self._family_due(
                str(root["reference"]), now - dt.timedelta(days=policy.referral_days_after_closure)
            ):
                due.setdefault(str(root["protocol_id"]), []).append(str(root["reference"]))
        done = []
        for protocol_id, references in due.items():
            counts: Counter[str] = Counter()
            async with self._db.transaction():
                for reference in references:
                    counts.update(await self._delete_family(reference))
                if not counts["referrals"]:
                    continue
                days = self._registry.retention_for(protocol_id).referral_days_after_closure
                closed = ", ".join(sorted(s.value for s in self._registry.retention_for(protocol_id).closed_states))
                with_rows = ", ".join(f"{table} {counts[table]}" for table in
                                      ("corrections", "outbox", "message_outbox", "card_slots", "reminders"))
                done.append(await self._record(now, "referrals", protocol_id, counts["referrals"],
                                               f"with {with_rows}; rule={days} days after closure ({closed})"))
        return done

    async def _family_due(self, root: str, cutoff: dt.datetime) -> bool:
        """Nothing happened to the referral or its versions since `cutoff`, and nothing is on its way."""
        family = await self._family(root)
        pending = await self._db.scalar(
            "SELECT (SELECT COUNT(*) FROM outbox WHERE reference IN :family AND state NOT IN :mails)"
            " + (SELECT COUNT(*) FROM message_outbox WHERE reference IN :family AND state NOT IN :messages) AS n",
            {"family": family, "mails": _FINISHED_MAILS, "messages": _FINISHED_MESSAGES},
        )
        if pending:
            return False
        last = await self._db.scalar(
            "SELECT MAX(at) AS last FROM (SELECT at FROM register WHERE reference IN :family"
            " UNION ALL SELECT queued_at AS at FROM referrals WHERE reference IN :family) AS activity",
            {"family": family},
        )
        return last is not None and from_text(last) < cutoff

    async def _family(self, root: str) -> list[str]:
        rows = await self._db.fetch_all(
            "SELECT reference FROM referrals WHERE reference = :root OR parent_reference = :root", {"root": root})
        return [str(row["reference"]) for row in rows]

    async def _delete_family(self, root: str) -> Counter[str]:
        """Delete a referral and everything kept about it; its mail copies first (none if that fails)."""
        family = await self._family(root)
        message_ids = [str(row["message_id"]) for row in await self._db.fetch_all(
            "SELECT message_id FROM referrals WHERE reference IN :family", {"family": family})]
        try:
            for message_id in message_ids:
                self._copies.remove_copy(message_id)
        except OSError as error:
            logger.warning("retention: a sent mail copy could not be removed (%s); the referral waits for "
                           "the next run", error.strerror, extra={"reference": root})
            return Counter()
        counts: Counter[str] = Counter()
        statements = {
            # A reminder names the referral it chased, or the correction request it repeated (before those go).
            "reminders": "DELETE FROM reminders WHERE subject IN :family"
                         " OR subject IN (SELECT id FROM corrections WHERE reference IN :family)",
            "corrections": "DELETE FROM corrections WHERE reference IN :family",
            "outbox": "DELETE FROM outbox WHERE reference IN :family",
            "message_outbox": "DELETE FROM message_outbox WHERE reference IN :family",
            "card_slots": f"DELETE FROM card_slots WHERE {slot_reference(self._db)} IN :family",  # noqa: S608  # nosec B608
            "referrals": "DELETE FROM referrals WHERE reference IN :family",
        }
        for table, statement in statements.items():
            counts[table] += (await self._db.execute(statement, {"family": family})).rowcount
        return counts

    # -- drafts, codes, links, leftovers -------------------------------------------------------

    async def _drafts(self, now: dt.datetime) -> list[Pruned]:
        """Tombstones of ended drafts (no data in them), per protocol; drafts never given one use the defaults."""
        done = []
        for protocol_id, policy in self._per_protocol():
            owned, parameters = self._owned_by(protocol_id)
            async with self._db.transaction():
                count = (await self._db.execute(
                    f"DELETE FROM drafts WHERE state IN :ended AND updated_at < :cutoff AND {owned}",  # noqa: S608  # nosec B608
                    {"ended": _DRAFT_ENDED, "cutoff": to_text(now - dt.timedelta(days=policy.tombstone_days)),
                     **parameters},
                )).rowcount
                if count:
                    done.append(await self._record(now, "drafts", protocol_id, count,
                                                   f"rule={policy.tombstone_days} days after the draft ended"))
        return done

    async def _pairing_codes(self, now: dt.datetime) -> list[Pruned]:
        done = []
        for protocol_id, policy in self._per_protocol():
            owned, parameters = self._owned_by(protocol_id)
            async with self._db.transaction():
                count = (await self._db.execute(
                    f"DELETE FROM pairing_codes WHERE expires_at < :cutoff AND {owned}",  # noqa: S608  # nosec B608
                    {"cutoff": to_text(now - dt.timedelta(days=policy.pairing_code_days)), **parameters},
                )).rowcount
                if count:
                    done.append(await self._record(now, "pairing_codes", protocol_id, count,
                                                   f"rule={policy.pairing_code_days} days after the code expired"))
        return done

    async def _links(self, now: dt.datetime) -> list[Pruned]:
        """The OCMW conversation of a protocol that ended (or whose file is gone), once no referral of it is kept."""
        today = now.astimezone(self._tz).date()
        done = []
        rows = await self._db.fetch_all(
            "SELECT protocol_id FROM ocmw_links AS l"
            " WHERE NOT EXISTS (SELECT 1 FROM referrals AS r WHERE r.protocol_id = l.protocol_id)")
        for row in rows:
            protocol_id = str(row["protocol_id"])
            protocol = self._registry.get(protocol_id)
            if protocol is not None and (protocol.ends_on is None or protocol.ends_on >= today):
                continue
            async with self._db.transaction():
                count = (await self._db.execute("DELETE FROM ocmw_links WHERE protocol_id = :protocol",
                                                {"protocol": protocol_id})).rowcount
                if count:
                    done.append(await self._record(now, "ocmw_links", protocol_id, count,
                                                   "rule=the protocol ended and none of its referrals is kept"))
        return done

    async def _leftovers(self, now: dt.datetime) -> list[Pruned]:
        """Finished rows about no kept referral: an expired draft's card, a note to a draft's chat, and the like."""
        cutoff = to_text(now - dt.timedelta(days=DEFAULT_RETENTION.tombstone_days))
        rule = f"rule={DEFAULT_RETENTION.tombstone_days} days after they were finished, about no kept referral"
        statements: dict[str, tuple[str, dict[str, Any]]] = {
            "message_outbox": (
                "DELETE FROM message_outbox WHERE state IN :finished AND finished_at < :cutoff AND (reference IS NULL"
                " OR NOT EXISTS (SELECT 1 FROM referrals AS r WHERE r.reference = message_outbox.reference))",
                {"finished": _FINISHED_MESSAGES, "cutoff": cutoff}),
            "outbox": (
                "DELETE FROM outbox WHERE state IN :finished AND finished_at < :cutoff"
                " AND NOT EXISTS (SELECT 1 FROM referrals AS r WHERE r.reference = outbox.reference)",
                {"finished": _FINISHED_MAILS, "cutoff": cutoff}),
            "card_slots": (
                f"DELETE FROM card_slots WHERE updated_at < :cutoff"  # noqa: S608  # nosec B608
                f" AND NOT EXISTS (SELECT 1 FROM referrals AS r WHERE r.reference = {slot_reference(self._db)})",
                {"cutoff": cutoff}),
            # Rows about no kept referral or correction request (an earlier version left them behind).
            "reminders": (
                "DELETE FROM reminders WHERE at < :cutoff"
                " AND NOT EXISTS (SELECT 1 FROM referrals AS r WHERE r.reference = reminders.subject)"
                " AND NOT EXISTS (SELECT 1 FROM corrections AS c WHERE c.id = reminders.subject)",
                {"cutoff": cutoff}),
        }
        done = []
        for table, (statement, parameters) in statements.items():
            if table == "outbox" and not await self._remove_left_over_copies(cutoff):
                continue  # a copy could not be removed: the rows wait for the next run
            async with self._db.transaction():
                count = (await self._db.execute(statement, parameters)).rowcount
                if count:
                    done.append(await self._record(now, table, NO_PROTOCOL, count, rule))
        return done

    async def _remove_left_over_copies(self, cutoff: str) -> bool:
        """The kept copies of finished mails about no kept referral (a breach report's); False if one stayed."""
        rows = await self._db.fetch_all(
            "SELECT message_id FROM outbox WHERE state IN :finished AND finished_at < :cutoff"
            " AND NOT EXISTS (SELECT 1 FROM referrals AS r WHERE r.reference = outbox.reference)",
            {"finished": _FINISHED_MAILS, "cutoff": cutoff})
        try:
            for row in rows:
                self._copies.remove_copy(str(row["message_id"]))
        except OSError as error:
            logger.warning("retention: a sent mail copy could not be removed (%s); retried at the next run",
                           error.strerror)
            return False
        return True

    # -- the register ---------------------------------------------------------------------------

    async def _register_entries(self, now: dt.datetime) -> list[Pruned]:
        """The oldest entries past their protocol's `register_years`, up to the first one that is not."""
        last_due: int | None = None
        counts: Counter[int] = Counter()
        after = 0
        while True:  # a page at a time: usually the first entry is not due yet
            entries = await self._db.fetch_all(
                "SELECT seq, at, protocol_id, reference FROM register WHERE seq > :after ORDER BY seq LIMIT :page",
                {"after": after, "page": _REGISTER_PAGE},
            )
            stop = not entries
            for row in entries:
                policy = self._registry.retention_for(str(row["protocol_id"]))
                if from_text(row["at"]) >= _years_before(now, policy.register_years) or (
                    row["reference"] and await self._db.fetch_one(
                        "SELECT 1 AS kept FROM referrals WHERE reference = :reference",
                        {"reference": row["reference"]}) is not None
                ):
                    stop = True  # not due yet, or the proof behind a referral the bot still keeps
                    break
                last_due = int(row["seq"])
                counts[policy.register_years] += 1
            if stop:
                break
            after = int(entries[-1]["seq"])
        if last_due is None:
            return []
        periods = ", ".join(f"{years} years: {count}" for years, count in sorted(counts.items()))
        rule = f"written longer ago than their protocol's register_years ({periods}), about no kept referral"
        count = await self._register.prune_through(last_due, at=now, rule=rule)
        return [Pruned("register", NO_PROTOCOL, count, f"rule={rule}")]

    # -- helpers --------------------------------------------------------------------------------

    def _per_protocol(self) -> list[tuple[str, RetentionPolicy]]:
        """Each loaded protocol with its policy, then `NO_PROTOCOL` for the rest with the defaults."""
        return [(p.id, p.retention) for p in self._registry.all()] + [(NO_PROTOCOL, DEFAULT_RETENTION)]

    def _owned_by(self, protocol_id: str) -> tuple[str, dict[str, Any]]:
        """A condition on a row's `protocol_id`: this protocol's, or for `NO_PROTOCOL` no loaded protocol's."""
        if protocol_id != NO_PROTOCOL:
            return "protocol_id = :owner", {"owner": protocol_id}
        loaded = [p.id for p in self._registry.all()]
        if not loaded:
            return "1 = 1", {}
        return "(protocol_id IS NULL OR protocol_id NOT IN :loaded)", {"loaded": loaded}

    async def _record(self, now: dt.datetime, table: str, protocol_id: str, count: int, rule: str) -> Pruned:
        detail = f"table={table}; count={count}; {rule}"
        await self._register.append(at=now, event=RegisterEvent.RETENTION_PRUNED, actor_id=SYSTEM_ACTOR_ID,
                                    actor_name=SYSTEM_ACTOR_NAME, protocol_id=protocol_id, detail=detail)
        return Pruned(table, protocol_id, count, detail)


def _years_before(moment: dt.datetime, years: int) -> dt.datetime:
    """The same moment `years` earlier (29 February: 28 February)."""
    try:
        return moment.replace(year=moment.year - years)
    except ValueError:
        return moment.replace(year=moment.year - years, day=28)
