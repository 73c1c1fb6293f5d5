"""When an outbox's next row is due (the earliest retry of a queued row, and the earliest lease to run
out), the rows whose lease ran out (or, at a start that alone can send, every leased row) made due again,
and a mark after a send made under its own lease.

Both outboxes keep a waiting row either queued (due at `next_attempt_at`) or being sent (leased until
`lease_until`), and revision 0007 gives each the partial indexes `<table>_queued` and `<table>_leased`.
Each lookup takes the first entry of one of them (`ORDER BY ... LIMIT 1`, which also marks the dead
entries it meets); the states are written in the statement, as the caller spells them, because a
parameter could be any state and no partial index would serve it.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Literal

from bot.storage.database import Database, Row, from_text, to_text


@dataclass(frozen=True)
class NextDue:
    """What an outbox's worker reads before it claims: when its next queued row is due, and when its first
    lease runs out. Kept apart so that only a claim after a read that saw a lease run out sets such rows
    back to queued (a statement that nearly always changes nothing)."""

    retry_at: dt.datetime | None = None
    lease_ends_at: dt.datetime | None = None

    @property
    def at(self) -> dt.datetime | None:
        """The earlier of the two: when there is work next (None: nothing waits)."""
        return min((moment for moment in (self.retry_at, self.lease_ends_at) if moment is not None), default=None)

    def lease_ran_out(self, now: dt.datetime) -> bool:
        """A worker stopped mid-send (its lease ran out before `now`, as `requeue_expired_leases` asks)."""
        return self.lease_ends_at is not None and self.lease_ends_at < now


async def next_due_in(db: Database, table: Literal["outbox", "message_outbox"], *, queued: str,
                      sending: str) -> NextDue:
    """`table`'s next attempt and first lease end (`queued`, `sending`: the quoted states)."""
    return next_due_of(await db.fetch_one(
        f"SELECT (SELECT next_attempt_at FROM {table} WHERE state = {queued}"  # noqa: S608  # nosec B608  # constants
        f" ORDER BY next_attempt_at LIMIT 1) AS queued, {first_lease_end(table, sending)} AS leased"))


def first_lease_end(table: Literal["outbox", "message_outbox"], sending: str) -> str:
    """The subquery of `table`'s first lease end (`sending`: the quoted state), through `<table>_leased`."""
    return f"(SELECT lease_until FROM {table} WHERE state = {sending} ORDER BY lease_until LIMIT 1)"  # noqa: S608  # nosec B608


def next_due_of(row: Row | None) -> NextDue:
    """A read's `queued` and `leased` columns as a `NextDue` (a SELECT of aggregates or scalar subqueries always
    answers one row; None reads as nothing waiting)."""
    if row is None:
        return NextDue()
    return NextDue(*(None if value is None else from_text(value) for value in (row["queued"], row["leased"])))


def lease_statement(table: Literal["outbox", "message_outbox"], *, key: str, pick: str, returning: str,
                    with_clauses: str = "") -> str:
    """A claim in one statement: the rows `pick` selects (by `key`, with the caller's `FOR UPDATE SKIP LOCKED`)
    leased (`:sending` until `:until`, the attempt counted) and `returning` given back as they are then.

    The rows are picked once, in a materialised step of their own: as `key IN (subquery)` the server may run
    the subquery again for every row it could change, and each run, passing over the rows already changed,
    picks others (`SUBQUERY_RUN_PER_ROW` in the tests: a claim of one leased thirty). `with_clauses`: the
    caller's own `WITH ...` that `pick` reads, if any.
    """
    return (  # the callers' constants only; the values are bound parameters
        f"{with_clauses + ', ' if with_clauses else 'WITH '}picked AS MATERIALIZED ({pick})"  # noqa: S608  # nosec B608
        f" UPDATE {table} SET state = :sending, attempts = attempts + 1, lease_until = :until"
        f" WHERE {key} IN (SELECT {key} FROM picked) RETURNING {returning}")


def lease_values(now: dt.datetime, lease: dt.timedelta, sending_state: str) -> dict[str, object]:
    """`lease_statement`'s values (and `:now`, which the callers' picks compare with)."""
    return {"now": to_text(now), "until": to_text(now + lease), "sending": sending_state}


async def requeue_expired_leases(db: Database, table: Literal["outbox", "message_outbox"], *, queued_state: str,
                                 sending: str, now: dt.datetime) -> int:
    """Set `table`'s rows whose lease ran out before `now` (their worker died) back to queued; how many.

    A statement on its own, before the caller's claim. `queued_state`: the state's value (a bound parameter);
    `sending`: the quoted state, as above (written in the statement, for the `<table>_leased` index).
    """
    return await _requeue(db, table, queued_state, sending, " AND lease_until < :now", {"now": to_text(now)})


async def requeue_every_lease(db: Database, table: Literal["outbox", "message_outbox"], *, queued_state: str,
                              sending: str) -> int:
    """Set every row of `table` being sent back to queued, lease or not; how many.

    Only for the process that alone can send: at start, holding the embedded SQLite file's data folder,
    a row still marked was cut off by a stop or a crash and need not wait out its lease.
    """
    return await _requeue(db, table, queued_state, sending, "", {})


async def _requeue(db: Database, table: str, queued_state: str, sending: str, condition: str,
                   values: dict[str, object]) -> int:
    requeued = await db.execute(
        f"UPDATE {table} SET state = :queued, lease_until = NULL WHERE state = {sending}"  # noqa: S608  # nosec B608  # constants
        + condition, {"queued": queued_state, **values})
    return requeued.rowcount


async def mark_under_lease(db: Database, table: Literal["outbox", "message_outbox"], *, key: tuple[str, object],
                           sending: str, lease_until: dt.datetime, assignments: str,
                           values: dict[str, object]) -> bool:
    """Set `assignments` on the row `key` (column, value) if it is still leased under `lease_until`; False if not.

    A worker paused past its lease (GC, CPU starvation, a frozen VM) may find its row re-leased, sent
    and recorded by another instance: its late mark would put that row, its content already wiped,
    back in the queue. Such a mark changes nothing (the caller logs and drops it).
    """
    column, value = key
    changed = await db.execute(
        f"UPDATE {table} SET {assignments}, lease_until = NULL"  # noqa: S608  # nosec B608  # constants
        f" WHERE {column} = :key AND state = {sending} AND lease_until = :lease",
        {**values, "key": value, "lease": to_text(lease_until)},
    )
    return changed.rowcount == 1
