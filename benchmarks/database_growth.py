"""Does the database work per delivery and per reminder pass stay flat as stored referrals grow?

    .venv/bin/python -m benchmarks.database_growth [--sizes 1000,10000,100000] [--backends postgresql,sqlite]
                                                   [--deliveries 100] [--passes 20] [--rounds 3] [--markdown]
                                                   [--json FILE]

For each backend and size: a fresh database (PostgreSQL: a new database on a server this run starts
itself; SQLite: a new file), migrated, then seeded in bulk with realistic rows (`benchmarks.growth_seed`:
families the real bot recorded, cloned; most referrals closed with their register entries and finished
outbox rows, 200 open or awaiting at every size). Then, through the bot's own services as
`create_app` wires them (a manual clock at a fixed "now"):

In each of `--rounds` rounds:

- reminder pass: `ReminderService.run_due()` once untimed (it queues every reminder due in the open
  set), then `--passes` passes that queue the same ~10 reminders again (their rows removed between
  passes, untimed), and `--passes` idle passes that find nothing new;
- delivery: a referral queued with its mail (the bot's `ReferralStore.add` + `Outbox.enqueue`,
  untimed), then `DeliveryWorker.deliver_due()` and the worker loop's read (`Outbox.next_due_at()`,
  the statement of its `next_due()`): claim, send over SMTP to a sink in its own process
  (`benchmarks.mail_sink`), mark delivered, the referral's transition, its register entry, the
  referrer's and the OCMW's Teams messages queued.
  The time inside the transport's `send` is subtracted: what is left is the database work (and the
  little Python around it). The Teams messages the delivery queued are then sent by the bot's
  `MessageDeliveryWorker` to a sender that answers at once (the Teams side is not measured), timed
  the same way.

Every statement those paths send is recorded (SQLAlchemy's `before_cursor_execute`), counted per
operation, and explained with the parameters it ran with: PostgreSQL `EXPLAIN (FORMAT JSON)`,
SQLite `EXPLAIN QUERY PLAN` (`tests.support.query_plans`), with the statistics of the full
database: a sequential scan or a whole-index walk (PostgreSQL) or `SCAN` (SQLite) of a table that
grows with the referrals is a full scan, and listed. PostgreSQL is `VACUUM ANALYZE`d after the
bulk load (as autovacuum would); SQLite is not analysed (the bot never runs `ANALYZE`).
A figure is the mean over the rounds of each round's median wall ms (min–max), this process and the
database sharing the machine. Each round waits for the machine to be idle, and a round during which
other processes (another job on a shared machine) used more than a tenth of a CPU is measured again
(three times at most; the quietest is kept). This is not a test: figures go into the README by hand;
`benchmarks.scale_out` runs this for the commit before and this tree, and prints both.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import itertools
import json
import logging
import socket
import statistics
import subprocess  # the SMTP sink, this repository's own module  # nosec B404
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from email.message import EmailMessage
from pathlib import Path
from typing import Any

from benchmarks.cpu import machine_busy_ns, own_cpu_ns, tree_cpu_ns, wait_until_quiet
from benchmarks.growth_seed import NOW, Templates, describe, load, plan, record_templates
from benchmarks.processes import base_environment, free_port
from benchmarks.tables import render
from bot.app import SERVICES_KEY, Services, create_app
from bot.config import Settings
from bot.core.sent_referrals import ReferralState, referral_from_row
from bot.delivery.chat_messages import MessageContent
from bot.delivery.mail_delivery import RetryPolicy
from bot.delivery.message_delivery import MessageDeliveryPolicy, MessageDeliveryWorker
from bot.delivery.smtp_transport import SmtpTransport
from bot.storage.database import to_text
from bot.storage.schema_migration import migrate
from tests.support.clock import ManualClock
from tests.support.databases import postgres_url
from tests.support.postgres_server import PostgresServer, postgres_server
from tests.support.query_plans import Plan, StatementLog, explain

SIZES = (1_000, 10_000, 100_000)
BACKENDS = ("postgresql", "sqlite")
DRAFT_KEY = "5d" * 32
#: How many reminder subjects are made due again before each timed "queuing" pass.
REQUEUED_SUBJECTS = 10
WARMUP_DELIVERIES = 5
DELIVERY, MESSAGES, PASS = "delivery", "Teams messages of a delivery", "reminder pass"
BUSY, IDLE = "reminder pass queuing reminders", "reminder pass with nothing due"
#: A round during which processes of no part of the run used more than this share of a CPU is measured again.
NOISY = 0.10
ATTEMPTS = 3
QUIET_WAIT_SECONDS = 600.0
#: What is timed, in report order.
OPERATIONS = (DELIVERY, MESSAGES, BUSY, IDLE)


@dataclass
class Timings:
    """Wall times (s) and statement counts of one kind of operation in one round."""

    seconds: list[float] = field(default_factory=list)
    statements: list[int] = field(default_factory=list)
    queued: int = 0

    def add(self, seconds: float, statements: int) -> None:
        self.seconds.append(seconds)
        self.statements.append(statements)

    def median_ms(self) -> float:
        return statistics.median(self.seconds) * 1000


@dataclass
class Round:
    """One round's operations on one database, and the CPU other processes used meanwhile (share of a CPU)."""

    operations: dict[str, Timings]
    noise: float


@dataclass
class Result:
    """One backend at one size: every round, and the plans of every statement the operations sent."""

    backend: str
    size: int
    seed_seconds: float
    rows: dict[str, int]
    rounds: list[Round]
    plans: list[Plan]

    def as_json(self) -> dict[str, Any]:
        """What `--json` writes: per operation the median ms of each round and the statement counts."""
        return {
            "backend": self.backend, "size": self.size, "seed_seconds": self.seed_seconds, "rows": self.rows,
            "noise": [r.noise for r in self.rounds],
            "operations": {name: {"median_ms": [r.operations[name].median_ms() for r in self.rounds],
                                  "statements": sorted({n for r in self.rounds for n in r.operations[name].statements}),
                                  "queued": self.rounds[-1].operations[name].queued}
                           for name in OPERATIONS},
            "plans": [{"path": p.statement.path, "statement": p.statement.key, "access": p.access,
                       "full_scans": p.full_scans} for p in self.plans],
        }


class _TimedTransport:
    """The real SMTP transport; the time spent inside `send` is kept, to be subtracted."""

    def __init__(self, transport: SmtpTransport) -> None:
        self._transport = transport
        self.elapsed = 0.0

    async def send(self, message: EmailMessage) -> None:
        started = time.perf_counter()
        try:
            await self._transport.send(message)
        finally:
            self.elapsed += time.perf_counter() - started

    async def check(self) -> str:
        return await self._transport.check()


class _TeamsAnswersAtOnce:
    """Teams as a sender that accepts every message at once: the message worker's database work alone."""

    def __init__(self) -> None:
        self._ids = itertools.count(1)

    async def post(self, conversation_ref: str, content: MessageContent) -> str | None:
        return f"activity-growth-{next(self._ids)}"

    async def update(self, conversation_ref: str, activity_id: str, content: MessageContent) -> None:
        return None


def _arguments(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.database_growth", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default=",".join(str(size) for size in SIZES),
                        help="stored referrals, comma-separated (at least 200: the open ones)")
    parser.add_argument("--backends", default=",".join(BACKENDS), help=f"comma-separated subset of {BACKENDS}")
    parser.add_argument("--deliveries", type=int, default=100, help="timed deliveries per backend and size")
    parser.add_argument("--passes", type=int, default=20, help="timed reminder passes of each kind")
    parser.add_argument("--rounds", type=int, default=3, help="rounds of deliveries and passes per database")
    parser.add_argument("--markdown", action="store_true", help="print the tables as Markdown for the README")
    parser.add_argument("--json", type=Path, metavar="FILE", help="also write every round's figures to FILE")
    arguments = parser.parse_args(argv)
    arguments.sizes = [int(size) for size in arguments.sizes.split(",") if size.strip()]
    arguments.backends = [name.strip() for name in arguments.backends.split(",") if name.strip()]
    if set(arguments.backends) - set(BACKENDS):
        parser.error(f"unknown backend(s); known: {BACKENDS}")
    if min(arguments.sizes) < 200 or min(arguments.deliveries, arguments.passes, arguments.rounds) < 1:
        parser.error("sizes of at least 200, and at least one delivery, one pass and one round")
    return arguments


def _log(text: str) -> None:
    sys.stderr.write(f"[database_growth] {text}\n")
    sys.stderr.flush()


@contextlib.contextmanager
def _mail_sink() -> Iterator[tuple[int, int]]:
    """`benchmarks.mail_sink` in a process of its own; yields its SMTP port and its pid."""
    smtp_port, http_port = free_port(), free_port()
    process = subprocess.Popen(  # noqa: S603 - this interpreter, this repository's module  # nosec B603
        [sys.executable, "-m", "benchmarks.mail_sink", str(smtp_port), str(http_port)],
        cwd=Path(__file__).parent.parent, env=base_environment(), stdin=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 20
        while True:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", smtp_port), timeout=1):
                break
            if time.monotonic() > deadline or process.poll() is not None:
                raise RuntimeError("the SMTP sink did not start")
            time.sleep(0.05)
        yield smtp_port, process.pid
    finally:
        process.terminate()
        process.wait(10)


@contextlib.asynccontextmanager
async def _services(backend: str, folder: Path, smtp_port: int, server: PostgresServer | None,
                    clock: ManualClock) -> AsyncIterator[tuple[Services, _TimedTransport]]:
    environment = {
        "BOT_DATA_DIR": str(folder / "data"), "LOCAL_ZIP_PASSWORD": "K7M2QX9PLR4TWB8N6VHJ3CZD",
        "MAIL_TRANSPORT": "smtp", "SMTP_HOST": "127.0.0.1", "SMTP_PORT": str(smtp_port), "SMTP_TLS": "none",
        "SMTP_ALLOW_PLAINTEXT_ON_LOOPBACK": "1", "SMTP_TIMEOUT_SECONDS": "10",
    }
    if backend == "postgresql":
        if server is None:
            raise RuntimeError("no PostgreSQL server")
        environment.update(DATABASE_URL=postgres_url(server), LOCAL_DRAFT_KEY=DRAFT_KEY)
    settings = Settings.from_mapping(environment)
    if settings.smtp is None:
        raise RuntimeError("SMTP settings missing")
    transport = _TimedTransport(SmtpTransport(settings.smtp))
    app = create_app(settings, clock=clock, transport=transport, run_worker=False)
    services = app[SERVICES_KEY]
    try:
        yield services, transport
    finally:
        for close in services.closers:
            await close()
        await services.db.close()


async def measure(backend: str, size: int, templates: Templates, smtp_port: int, server: PostgresServer | None,
                  arguments: argparse.Namespace, ours: list[int]) -> Result:
    """One database of `size` stored referrals; `ours` the pids of the run's other processes (sink, server)."""
    clock = ManualClock(NOW)
    with tempfile.TemporaryDirectory(prefix="growth-") as folder:
        async with _services(backend, Path(folder), smtp_port, server, clock) as (services, transport):
            await migrate(services.db)
            seed = plan(templates, size)
            started = time.perf_counter()
            rows = await load(services.db, templates, seed)
            seed_seconds = time.perf_counter() - started
            _log(f"{backend} {size}: seeded in {seed_seconds:.1f} s: {rows}")
            statements = StatementLog(services.db)
            rounds: list[Round] = []
            batches = itertools.count()
            try:
                for number in range(arguments.rounds):
                    rounds.append(await _quietest_round(services, statements, transport, templates, clock, arguments,
                                                        batches, ours, number))
                plans = [await explain(services.db, statement) for statement in statements.seen.values()]
            finally:
                statements.close()
    return Result(backend, size, seed_seconds, rows, rounds, plans)


async def _quietest_round(services: Services, statements: StatementLog, transport: _TimedTransport,
                          templates: Templates, clock: ManualClock, arguments: argparse.Namespace,
                          batches: Iterator[int], ours: list[int], number: int) -> Round:
    """A round on an idle machine, measured again while other processes took more than `NOISY` of a CPU."""
    kept: Round | None = None
    for _ in range(ATTEMPTS):
        await wait_until_quiet(NOISY, QUIET_WAIT_SECONDS, _log)
        started, machine, own = time.monotonic(), machine_busy_ns(), own_cpu_ns()
        processes = _cpu_of(ours)
        busy, idle = await _reminder_passes(services, statements, arguments.passes)
        delivery, messages = await _deliveries(services, statements, transport, templates, clock,
                                               arguments.deliveries, next(batches))
        theirs = (machine_busy_ns() - machine) - (own_cpu_ns() - own) - (_cpu_of(ours) - processes)
        measured = Round({DELIVERY: delivery, MESSAGES: messages, BUSY: busy, IDLE: idle},
                         max(0.0, theirs / 1e9 / (time.monotonic() - started)))
        _log(f"  round {number + 1}: " + ", ".join(f"{name} {timings.median_ms():.2f} ms"
                                                   for name, timings in measured.operations.items())
             + f"; other processes {measured.noise:.0%} of a CPU")
        kept = measured if kept is None or measured.noise < kept.noise else kept
        if kept.noise <= NOISY:
            break
    assert kept is not None  # noqa: S101 - ATTEMPTS is at least one
    return kept


def _cpu_of(pids: list[int]) -> int:
    """CPU so far of these processes and everything below them (the server's backends), in ns."""
    return sum(sum(tree_cpu_ns(pid).values()) for pid in pids)


async def _reminder_passes(services: Services, statements: StatementLog, passes: int) -> tuple[Timings, Timings]:
    """(passes that queue the same few reminders again, passes with nothing due)."""
    db, reminders, now = services.db, services.reminders, NOW
    first = await reminders.run_due()  # everything due in the open set, once
    await db.execute("UPDATE message_outbox SET state = 'sent', content = '' WHERE state = 'queued'")
    subjects = [str(row["subject"]) for row in await db.fetch_all(
        "SELECT DISTINCT subject FROM reminders WHERE at = :now ORDER BY subject LIMIT :n",
        {"now": to_text(now), "n": REQUEUED_SUBJECTS})]
    _log(f"  first reminder pass queued {first}; {len(subjects)} subjects are made due again before each busy pass")
    busy, idle = Timings(), Timings()
    for _ in range(passes):
        await db.execute("DELETE FROM reminders WHERE at = :now AND subject IN :subjects",
                         {"now": to_text(now), "subjects": subjects})
        await db.execute("DELETE FROM message_outbox WHERE state = 'queued'")
        with statements.recording(PASS):
            started = time.perf_counter()
            busy.queued = await reminders.run_due()
            busy.add(time.perf_counter() - started, statements.take_count())
    await db.execute("UPDATE message_outbox SET state = 'sent', content = '' WHERE state = 'queued'")
    for _ in range(passes):
        with statements.recording(PASS):
            started = time.perf_counter()
            idle.queued = await reminders.run_due()
            idle.add(time.perf_counter() - started, statements.take_count())
    return busy, idle


async def _deliveries(services: Services, statements: StatementLog, transport: _TimedTransport,
                      templates: Templates, clock: ManualClock, count: int, batch: int,
                      ) -> tuple[Timings, Timings]:
    """Queue one referral's mail, deliver it, send its Teams messages; `count` times after a warm-up.

    `batch` numbers the calls on one database, so that every referral's reference is new."""
    base = referral_from_row(templates.families["sent"].rows["referrals"][0])
    worker = MessageDeliveryWorker(outbox=services.messages, sender=_TeamsAnswersAtOnce(), clock=clock,
                                   policy=MessageDeliveryPolicy(RetryPolicy()))
    delivery, messages = Timings(), Timings()
    for number in range(WARMUP_DELIVERIES + count):
        reference = f"VD-{NOW:%Y%m%d}-{batch:02d}{number:04d}"
        referral = dataclasses.replace(base, reference=reference, message_id=f"<{reference}@opgroeien.be>",
                                       state=ReferralState.QUEUED, created_at=NOW, queued_at=NOW, sent_at=None)
        async with services.db.transaction():
            await services.referrals.add(referral)
            await services.outbox.enqueue(message_id=referral.message_id, reference=reference,
                                          payload=templates.mail, now=NOW)
        transport.elapsed = 0.0
        with statements.recording(DELIVERY):
            started = time.perf_counter()
            delivered = await services.worker.deliver_due()
            await services.outbox.next_due_at()
            seconds = time.perf_counter() - started - transport.elapsed
            counted = statements.take_count()
        with statements.recording(MESSAGES):
            started = time.perf_counter()
            sent = await worker.deliver_due()
            await services.messages.next_due_at()
            message_seconds = time.perf_counter() - started
            message_statements = statements.take_count()
        state = (await services.referrals.get(reference))
        if delivered != 1 or sent != 3 or state is None or state.state != ReferralState.SENT:
            raise RuntimeError(f"delivery {number}: delivered {delivered}, Teams messages {sent}, "
                               f"state {state.state if state else None}")
        if number >= WARMUP_DELIVERIES:
            delivery.add(seconds, counted)
            messages.add(message_seconds, message_statements)
    return delivery, messages


# -- report --------------------------------------------------------------------------------------------
# The report reads what `Result.as_json` wrote, so that `benchmarks.scale_out` can put the figures of a
# build measured in another worktree (its own `bot`) next to this tree's.


def _spread(values: list[float]) -> str:
    """Mean (min–max) over the rounds."""
    return f"{statistics.fmean(values):.2f} ({min(values):.2f}–{max(values):.2f})"


def timing_rows(results: dict[str, list[dict[str, Any]]]) -> tuple[list[str], list[list[str]]]:
    """Per operation, backend and build: ms at each size (mean of the rounds' medians, min–max), largest / smallest."""
    builds = list(results)
    sizes = sorted({result["size"] for found in results.values() for result in found})
    header = ["operation", "backend", "build", *(f"{size:,} stored".replace(",", " ") for size in sizes),
              f"{sizes[-1]:,} vs {sizes[0]:,}".replace(",", " "), "statements"]
    table = []
    backends = list(dict.fromkeys(result["backend"] for found in results.values() for result in found))
    for operation in OPERATIONS:
        for backend in backends:
            for build in builds:
                by_size = {r["size"]: r["operations"][operation] for r in results[build] if r["backend"] == backend}
                if not by_size:
                    continue
                cells = [_spread(by_size[size]["median_ms"]) if size in by_size else "–" for size in sizes]
                first, last = by_size.get(sizes[0]), by_size.get(sizes[-1])
                growth = (f"{statistics.fmean(last['median_ms']) / statistics.fmean(first['median_ms']):.2f}x"
                          if first and last else "–")
                counts = sorted({n for figures in by_size.values() for n in figures["statements"]})
                label = operation + (f" ({by_size[sizes[-1]]['queued']} queued)"
                                     if operation == BUSY and sizes[-1] in by_size else "")
                table.append([label, backend, build, *cells, growth,
                              str(counts[0]) if len(counts) == 1 else f"{counts[0]}–{counts[-1]}"])
    return header, table


def scan_lines(results: dict[str, list[dict[str, Any]]]) -> list[str]:
    """Every full scan of a growing table at the largest size, per build and backend (or that there are none)."""
    lines = []
    for build, found in results.items():
        largest = max(result["size"] for result in found)
        for result in found:
            if result["size"] != largest:
                continue
            scans = [plan for plan in result["plans"] if plan["full_scans"]]
            lines.append(f"- {build}, {result['backend']}, {largest:,} stored: ".replace(",", " ")
                         + (f"{len(scans)} statement(s) read a growing table in full" if scans
                            else f"every one of {len(result['plans'])} statements reaches its rows through an index"))
            lines.extend(f"  - {plan['path']}: {_short(plan['statement'], 140)}: {'; '.join(plan['access'])}"
                         for plan in scans)
    return lines


def noise_line(results: dict[str, list[dict[str, Any]]]) -> str:
    """How much CPU other processes used during the rounds kept, at most, per build."""
    return "Other processes' CPU during the rounds kept, at most: " + "; ".join(
        f"{build} {max(share for result in found for share in result['noise']):.0%} of a CPU"
        for build, found in results.items()) + "."


def plan_rows(results: list[dict[str, Any]]) -> tuple[list[str], list[list[str]]]:
    """How each statement reaches each table at the largest size, per backend."""
    largest = max(result["size"] for result in results)
    chosen = [result for result in results if result["size"] == largest]
    header = ["path", "statement", *(result["backend"] for result in chosen)]
    keys: dict[tuple[str, str], None] = {}
    for result in chosen:
        for planned in result["plans"]:
            keys.setdefault((planned["path"], planned["statement"]), None)
    table = []
    for path, key in keys:
        cells = [path, _short(key)]
        for result in chosen:
            found = next((p for p in result["plans"] if (p["path"], p["statement"]) == (path, key)), None)
            if found is None:
                cells.append("–")
            else:
                access = "; ".join(found["access"]) or "no table read"
                cells.append(("FULL SCAN of " + ", ".join(found["full_scans"]) + ": " if found["full_scans"] else "")
                             + access)
        table.append(cells)
    return header, table


def _short(sql: str, width: int = 110) -> str:
    return sql if len(sql) <= width else sql[: width - 1] + "…"


def setup_line(arguments: argparse.Namespace) -> str:
    return (f"Stored: {describe()}. Per backend and size one database, seeded once; {arguments.rounds} round(s) of "
            f"{arguments.deliveries} deliveries and {arguments.passes} reminder passes of each kind; a cell is the "
            "mean of the rounds' median wall ms (min–max). A delivery's DB work is its wall time minus the time "
            "inside the SMTP send.")


def report(results: list[Result], arguments: argparse.Namespace, seconds: float) -> str:
    found = {"this tree": [result.as_json() for result in results]}
    return "\n".join([
        setup_line(arguments), "",
        render(*timing_rows(found), markdown=arguments.markdown), "",
        noise_line(found), "",
        "Full scans of growing tables:", *scan_lines(found), "",
        "How each statement reaches each table at the largest size:", "",
        render(*plan_rows(found["this tree"]), markdown=arguments.markdown), "",
        f"Run time: {seconds:.0f} s", "",
    ])


async def _run(arguments: argparse.Namespace) -> list[Result]:
    _log("recording the template families with the real bot")
    templates = await record_templates()
    results = []
    with contextlib.ExitStack() as stack:
        smtp_port, sink = stack.enter_context(_mail_sink())
        server = stack.enter_context(postgres_server()) if "postgresql" in arguments.backends else None
        ours = [sink] + ([server.process.pid] if server is not None else [])
        for backend in arguments.backends:
            for size in arguments.sizes:
                _log(f"{backend}, {size} stored referrals")
                results.append(await measure(backend, size, templates, smtp_port, server, arguments, ours))
    return results


def main(argv: list[str] | None = None) -> int:
    arguments = _arguments(argv)
    logging.basicConfig(level=logging.ERROR)  # the bot's own INFO lines per delivery would swamp the output
    started = time.perf_counter()
    results = asyncio.run(_run(arguments))
    if arguments.json is not None:
        arguments.json.write_text(json.dumps([result.as_json() for result in results], indent=1), encoding="utf-8")
    sys.stdout.write(report(results, arguments, time.perf_counter() - started))
    return 0


if __name__ == "__main__":
    sys.exit(main())
