"""Database work per whole referral, one at a time: `python -m benchmarks.statement_counts [REFERRALS]`.

CPU figures on this machine move 10-30 % between runs; what a referral asks of the database does
not, so a waste like the mail worker's four lanes all waking for one mail (issue 14, sixth pass)
shows here as a count. The bot runs in this process as the tests run it: the real app over HTTP at
`/api/messages`, both outbox workers running, the tests' connector stand-in, a relay that takes every
mail at once, a fresh SQLite file. After a warm-up, REFERRALS referrals go through start, consent,
details and send, each until its mail is sent, its Teams messages are delivered and the workers are
asleep again; the engine's events count what each referral executed.

To measure another commit's code, run this file with that tree first on the path:
`PYTHONPATH=<tree> .venv/bin/python benchmarks/statement_counts.py`.
"""

from __future__ import annotations

import asyncio
import logging
import re
import sys
import tempfile
from collections import Counter
from pathlib import Path
from typing import Any

from sqlalchemy import event

from benchmarks.processes import ZIP_PASSWORD
from bot.app import create_app
from bot.clock import SystemClock
from bot.config import Settings
from bot.storage.database import runs_alone
from tests.support.activities import TeamsUser
from tests.support.bot_server import BotDriver, running_bot
from tests.support.card_reading import draft_id_of
from tests.support.relays import CountingRelay
from tests.support.sample_values import CLIENT_FORM, CONSENT_ALL, PROTOCOL_ID

WARM_UP = 5
#: The statement `_referral` polls with (the Teams messages' counts): the harness's, not the bot's.
HARNESS_POLL = "SELECT state, COUNT(*) AS n FROM message_outbox GROUP BY state"
SETTLE_SECONDS = 0.1
#: What a statement is counted as: the first pattern it matches (text with whitespace collapsed).
KINDS = (
    ("mail outbox: claim", re.compile(r" UPDATE outbox SET state = \S+, attempts = attempts \+ 1")),
    ("mail outbox: expired-lease check", re.compile(r"^UPDATE outbox SET state = \S+, lease_until = NULL WHERE")),
    ("mail outbox: next due", re.compile(r"^SELECT \(SELECT next_attempt_at FROM outbox ")),
    ("Teams messages: claim", re.compile(r" UPDATE message_outbox SET state = \S+, attempts = attempts \+ 1")),
    ("Teams messages: expired-lease check",
     re.compile(r"^UPDATE message_outbox SET state = \S+, lease_until = NULL WHERE")),
    ("Teams messages: next due", re.compile(r"^SELECT \(SELECT next_attempt_at FROM message_outbox ")),
    ("Teams messages: next in turn", re.compile(r"SELECT MIN\(first\.next_attempt_at\)")),
    ("register", re.compile(r"\bregister\b")),
    ("rate limits", re.compile(r"\brate_events\b")),
    ("drafts", re.compile(r"\bdrafts\b")),
)


class _Counter:
    """Statements (by kind) and transactions the engine ran while `counting` is on."""

    def __init__(self, bot: BotDriver) -> None:
        self.counting = False
        self.statements: Counter[str] = Counter()
        engine = bot.services.db.engine.sync_engine
        event.listen(engine, "before_cursor_execute", self._statement)
        event.listen(engine, "begin", self._begin)

    def _statement(self, _conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        if not self.counting:
            return
        text = " ".join(statement.split())
        if text == HARNESS_POLL:
            return
        kind = next((name for name, pattern in KINDS if pattern.search(text)), "other")
        self.statements["statements"] += 1
        self.statements[kind] += 1

    def _begin(self, conn: Any) -> None:
        # A statement on its own runs in SQLite's autocommit: SQLAlchemy's begin is no transaction there.
        if self.counting and not runs_alone(conn.get_execution_options()):
            self.statements["transactions"] += 1


async def _referral(bot: BotDriver, relay: CountingRelay, user: TeamsUser) -> None:
    sent = relay.sent
    consent = await bot.act(user, "referral.start", {})
    draft_id = draft_id_of(consent)
    await bot.act(user, "referral.consent", {"draftId": draft_id, "ocmw": PROTOCOL_ID, **CONSENT_ALL})
    await bot.act(user, "referral.details", {"draftId": draft_id, **CLIENT_FORM})
    await bot.act(user, "referral.send", {"draftId": draft_id})
    async with asyncio.timeout(10):
        while relay.sent == sent or set(await bot.services.messages.counts()) - {"sent", "failed"}:  # noqa: ASYNC110
            await asyncio.sleep(0.01)
    await asyncio.sleep(SETTLE_SECONDS)  # the lanes that looked are asleep again


async def measure(referrals: int) -> Counter[str]:
    """Statements per kind over `referrals` referrals (totals)."""
    with tempfile.TemporaryDirectory(prefix="bench-statements-") as folder:
        settings = Settings.from_mapping({
            "BOT_DATA_DIR": str(Path(folder) / "data"), "LOCAL_ZIP_PASSWORD": ZIP_PASSWORD,
            "RATE_LIMIT_STARTS_PER_HOUR": "10000", "RATE_LIMIT_ACTIONS_PER_MINUTE": "10000"})
        relay = CountingRelay()
        async with running_bot(create_app(settings, clock=SystemClock(), run_worker=True, transport=relay)) as bot:
            counter = _Counter(bot)
            for number in range(WARM_UP + referrals):
                counter.counting = number >= WARM_UP
                user = TeamsUser(f"aad-bench-{number}", f"Bench {number}", f"a:personal-bench-{number}")
                await _referral(bot, relay, user)
        return counter.statements


def main(argv: list[str]) -> int:
    referrals = int(argv[0]) if argv else 50
    logging.disable(logging.WARNING)
    totals = asyncio.run(measure(referrals))
    lines = [f"per whole referral, one at a time ({referrals} referrals after {WARM_UP} to warm up):",
             "| what | per referral |", "| --- | ---: |"]
    lines += [f"| {name} | {totals[name] / referrals:.2f} |"
              for name in ("statements", "transactions", *(kind for kind, _ in KINDS), "other")]
    sys.stdout.write("\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
