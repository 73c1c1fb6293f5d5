"""Issue 14's goals, each figure next to its baseline: `python -m benchmarks.compare_builds --goals [--quick]`.

Every bot build runs as production starts it (`python -m bot serve`) with `MAIL_TRANSPORT=smtp`
against the benchmark's SMTP server in another process (`benchmarks/smtp_sink.py`, `SMTP_TLS=none`
with `SMTP_ALLOW_PLAINTEXT_ON_LOOPBACK=1`); Teams is the connector stand-in. The baseline is the
stock botbuilder echo bot, measured in the same round. Bots on one CPU, everything else on the other.

Each round, for each bot build, a fresh process on a data folder holding 10 k delivered referrals
(stored before it starts by `benchmarks/seed_referrals.py` with that build's own code: referral,
register entries, emptied outbox row; copied from a template made once per run) runs:

1. *CPU*: whole referrals (start, consent, details, send) one at a time, each until its mail is at
   the SMTP server and the bot is quiet (the Teams messages that follow included): the bot
   process's CPU per referral.
2. *card action*: `referral.start` one at a time (p50), then 20 at a time (p99).
3. *memory*: a short load (20 referrers, `memory_load_seconds`, all delivered), then the bot's RSS
   (`/proc/PID/status` VmRSS). A second process does 1-3 on a folder holding 1 k referrals: the ratio
   is what 9 k more stored referrals cost for the same work. With `--drive` the referrals are not
   seeded but driven through one process (20 referrers, each delivered), RSS read after 1 k and
   after 10 k: that also shows memory growing per referral served, but at the few dozen referrals a
   second the bot delivers, it takes many minutes per round.
4. *delivery*: 20 referrers for `load_seconds`. Referrals accepted (`referral.send` answered) and
   mails at the SMTP server, per second, over the same window (after a short ramp-up); "Verstuur" ->
   SMTP: from sending `referral.send` to the server's receipt of that mail (a mail still missing
   `drain_seconds` after the load counts with the time waited: the percentiles are lower bounds).
5. *event-loop stall*, during 2's 20-at-a-time part and during 4: every bot build runs under
   `benchmarks/loop_probe.py`, which times each callback of its event loop from inside (a stall
   is one callback that runs long, however many requests wait): the longest in the window (under
   5 ms shows as 5). Next to it, as before, `GET /healthz` polled every 10 ms from outside: its
   latency includes queueing behind the concurrent requests, not only a blocked loop.
6. *ready*: from spawning the process on the folder holding exactly 10 k referrals to `/readyz` 200
   (with `--drive`: the process started again after it all). The echo bot's: from spawning it to
   its first 2xx on `POST /api/messages`.
7. *components*: `benchmarks/components.py` in the build's own code, on the bots' CPU: CPU per
   package build, per mail built and queued, and per mail as the worker handles it before SMTP.

Figures are the mean over rounds with min-max; a ratio is computed per round (bot against the
echo bot of the same round) and then averaged.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import os
import re
import shutil
import statistics
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

from benchmarks.activities import CLIENT_FORM, CONSENT_ALL, PROTOCOL_ID, BenchUser, draft_id
from benchmarks.builds import Build, log
from benchmarks.loop_probe import KEEP_MS as LOOP_PROBE_KEEP_MS
from benchmarks.loop_probe import WRITE_EVERY_SECONDS as LOOP_PROBE_WRITE_SECONDS
from benchmarks.processes import Process, base_environment, bot_environment, free_port, start
from benchmarks.report import percentile_ms
from benchmarks.scenarios import (
    Driver,
    Sample,
    ScenarioError,
    Target,
    timed_at_once,
    until_answered,
    wait_for_mail,
    wait_quiet,
)
from benchmarks.smtp_sink import MAILS_PATH

CONCURRENCY = 20
SEED_SCRIPT = Path(__file__).with_name("seed_referrals.py")
LOOP_PROBE = Path(__file__).with_name("loop_probe.py")
COMPONENTS_SCRIPT = Path(__file__).with_name("components.py")
COMPONENT_CALLS = 200
STALL_POLL_SECONDS = 0.010
_REFERENCE = re.compile(r"VD-\d{8}-[A-Z0-9]+(?:-\d+)?")
_MESSAGE_ID_REFERENCE = re.compile(r"^<([^@>]+)@")


@dataclass(frozen=True)
class GoalOptions:
    """How much to measure per round."""

    rounds: int = 3
    fill: tuple[int, int] = (1000, 10000)  # referrals stored (or driven) when RSS is read
    drive: bool = False  # drive the referrals through the bot instead of seeding them
    cpu_referrals: int = 30
    echo_turns: int = 300
    card_actions: int = 300  # one at a time, and again 20 at a time
    load_seconds: float = 60.0
    memory_load_seconds: float = 10.0  # the short load both RSS processes run before RSS is read
    drain_seconds: float = 300.0  # how long after a load its mails may take to reach the SMTP server
    warmup: int = 10

    @classmethod
    def quick(cls) -> GoalOptions:
        """Minutes instead of most of an hour: the same figures, with fewer samples."""
        return cls(cpu_referrals=10, echo_turns=60, card_actions=100, load_seconds=10.0, memory_load_seconds=3.0,
                   drain_seconds=120.0, warmup=5)


@dataclass
class _Referral:
    """One referral of a load: when `referral.send` left, when it was answered, which reference."""

    reference: str | None
    send_started: float
    answered: float


@dataclass
class _Probe:
    """`GET /healthz` every STALL_POLL_SECONDS while a load runs: the latencies, in seconds."""

    latencies: list[float] = field(default_factory=list)

    @property
    def max_ms(self) -> float:
        return max(self.latencies, default=0.0) * 1000


class SmtpSink:
    """The client side of `benchmarks.smtp_sink`: how many mails arrived, which, and when."""

    def __init__(self, session: aiohttp.ClientSession, process: Process, smtp_port: int) -> None:
        self._session = session
        self.process = process
        self.smtp_port = smtp_port

    async def mails(self, after: int = 0) -> tuple[int, list[tuple[str, float]]]:
        async with self._session.get(f"{self.process.url}{MAILS_PATH}", params={"after": str(after)}) as response:
            body: dict[str, Any] = await response.json()
        return int(body["count"]), [(str(message_id), float(at)) for message_id, at in body["mails"]]

    async def count(self) -> int:
        count, _ = await self.mails(after=1 << 62)
        return count


class GoalRun:
    """One run of the goals: the processes' shared parts and every round's figures per build."""

    def __init__(
        self,
        options: GoalOptions,
        session: aiohttp.ClientSession,
        driver: Driver,
        sink: SmtpSink,
        folder: Path,
        bot_cpu: int | None,
    ) -> None:
        self.options = options
        self._session = session
        self._driver = driver
        self._sink = sink
        self._folder = folder
        self._bot_cpu = bot_cpu
        self._users = itertools.count()
        self._probes: dict[int, Path] = {}  # bot port -> its loop probe's output

    def _start(self, build: Build, data_dir: Path, label: str) -> Process:
        port = free_port()
        environment = bot_environment(port, data_dir)
        argv = [str(build.python), *build.argv]
        if not build.echo:
            self._probes[port] = self._folder / f"{label}-loop.json"
            argv = [str(build.python), str(LOOP_PROBE), str(self._probes[port]), *build.argv]
            environment["PYTHONPATH"] = str(build.tree)
            environment.update({
                "MAIL_TRANSPORT": "smtp",
                "SMTP_HOST": "127.0.0.1",
                "SMTP_PORT": str(self._sink.smtp_port),
                "SMTP_TLS": "none",
                "SMTP_ALLOW_PLAINTEXT_ON_LOOPBACK": "1",
            })
        return start(build.name, argv, cwd=build.tree, env=environment, port=port,
                     log_path=self._folder / f"{label}.log", cpu=self._bot_cpu)

    async def _longest_callback_ms(self, process: Process, since: float) -> float:
        """The longest event-loop callback the probe saw since `since` (wall clock); at least KEEP_MS."""
        await asyncio.sleep(2 * LOOP_PROBE_WRITE_SECONDS)  # its last write covers the window's end
        path = self._probes.get(process.port)
        if path is None or not path.exists():
            raise ScenarioError(f"{process.name}: no event-loop probe output")
        recorded = json.loads(path.read_text(encoding="utf-8"))
        return max([LOOP_PROBE_KEEP_MS, *(ms for at, ms in recorded["long"] if at >= since)])

    # -- the echo bot ------------------------------------------------------------------------------

    async def echo_round(self, build: Build, round_number: int) -> dict[str, float]:
        """Start-up to its first 2xx, then CPU and latency per message turn."""
        started = time.monotonic()
        process = self._start(build, self._folder / f"echo-{round_number}", f"echo-{round_number}")
        try:
            target = Target(build.name, process, None)
            user = BenchUser.numbered("echo-start", round_number)
            await until_answered(process, lambda _: self._message_answered(target, user))
            startup = time.monotonic() - started
            await self._driver.message_turns(target, self.options.warmup)
            await wait_quiet(process)
            sample = await self._driver.message_turns(target, self.options.echo_turns)
        finally:
            process.stop()
        return {"echo_cpu_ms": sample.cpu_ms_per_op, "echo_p50_ms": percentile_ms(sample.latencies, 0.5),
                "echo_startup_s": startup}

    async def _message_answered(self, target: Target, user: BenchUser) -> bool:
        activity = user.message(self._driver.service_url, "hulp")
        async with self._session.post(f"{target.process.url}/api/messages", json=activity,
                                      timeout=aiohttp.ClientTimeout(total=2)) as response:
            await response.read()
            return 200 <= response.status < 300

    # -- a bot build -------------------------------------------------------------------------------

    async def bot_round(self, build: Build, round_number: int) -> dict[str, float]:
        """Phases 1-6 of the module's docstring, on fresh processes and data folders."""
        first, total = self.options.fill
        label = f"bot-{build.name}-{round_number}"
        figures: dict[str, float] = {}
        if self.options.drive:
            data_dir = self._folder / f"data-{label}"
            process = self._start(build, data_dir, label)
            try:
                await until_answered(process, self._ready)
                target = Target(build.name, process, None, mail_count=self._sink.count)
                await self._fill(target, figures)
                await self._work(target, figures)
                await self._delivery_load(target, figures, self.options.load_seconds)
            finally:
                process.stop()
            await self._restart(build, data_dir, f"{label}-restart", figures)  # with at least `total` stored
        else:
            for stored in (first, total):
                data_dir = self._folder / f"data-{label}-{stored}"
                shutil.copytree(await self._template(build, stored), data_dir)
                started = time.monotonic()
                process = self._start(build, data_dir, f"{label}-{stored}")
                try:
                    await until_answered(process, self._ready)
                    if stored == total:
                        figures["startup_s"] = time.monotonic() - started
                    target = Target(build.name, process, None, mail_count=self._sink.count)
                    work: dict[str, float] = {}
                    await self._work(target, work)
                    await self._delivery_load(target, {}, self.options.memory_load_seconds)
                    figures[f"rss_{stored}_mb"] = _rss_mb(process)
                    if stored == total:
                        figures.update(work)
                        await self._delivery_load(target, figures, self.options.load_seconds)
                finally:
                    process.stop()
            figures["rss_ratio"] = figures[f"rss_{total}_mb"] / figures[f"rss_{first}_mb"]
        figures.update(await self._components(build))
        return figures

    async def _restart(self, build: Build, data_dir: Path, label: str, figures: dict[str, float]) -> None:
        """`--drive`: the time to ready of a new process on the folder the driven one filled."""
        started = time.monotonic()
        process = self._start(build, data_dir, label)
        try:
            await until_answered(process, self._ready)
            figures["startup_s"] = time.monotonic() - started
        finally:
            process.stop()

    async def _work(self, target: Target, figures: dict[str, float]) -> None:
        """Phases 1 and 2 (and 5 within 2)."""
        await self._cpu_per_referral(target, figures)
        await self._card_actions(target, figures)

    async def _components(self, build: Build) -> dict[str, float]:
        """Phase 7: µs per call from `components.py`, as ms."""
        output = await self._in_build(build, COMPONENTS_SCRIPT, "1", str(COMPONENT_CALLS), pin=True)
        figures: dict[str, list[float]] = json.loads(output.splitlines()[-1])
        return {name.removesuffix("_us") + "_ms": values[0] / 1000 for name, values in figures.items()}

    async def _in_build(self, build: Build, script: Path, *arguments: str, pin: bool = False) -> str:
        """Run one of the benchmark's scripts with the build's Python, importing the build's `bot`."""
        cpu = self._bot_cpu if pin else None

        def pinned() -> None:
            if cpu is not None:
                os.sched_setaffinity(0, {cpu})

        environment = base_environment() | {"PYTHONPATH": str(build.tree)}
        child = await asyncio.create_subprocess_exec(
            str(build.python), str(script), *arguments, cwd=build.tree, env=environment,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT, preexec_fn=pinned,
        )
        output, _ = await child.communicate()
        if child.returncode != 0:
            raise ScenarioError(f"{build.name}: {script.name} {' '.join(arguments)} failed:\n{output.decode()[-3000:]}")
        return output.decode()

    async def _template(self, build: Build, count: int) -> Path:
        """A data folder holding `count` delivered referrals, seeded once per build with its own code."""
        template = self._folder / f"template-{build.name}-{count}"
        if not template.exists():
            started = time.monotonic()
            await self._in_build(build, SEED_SCRIPT, str(template), str(count))
            log(f"{build.name}: {count} referrals seeded in {time.monotonic() - started:.1f} s")
        return template

    async def _ready(self, process: Process) -> bool:
        async with self._session.get(f"{process.url}/readyz", timeout=aiohttp.ClientTimeout(total=3)) as response:
            await response.read()
            return response.status == 200

    async def _fill(self, target: Target, figures: dict[str, float]) -> None:
        first, total = self.options.fill
        mails_before = await self._sink.count()
        for checkpoint, done in ((first, 0), (total, first)):
            started = time.monotonic()
            referrals = await self._referrals(target, count=checkpoint - done)
            await wait_for_mail(target, mails_before + checkpoint, within=60 + (checkpoint - done) / 10)
            await wait_quiet(target.process)
            figures[f"rss_{checkpoint}_mb"] = _rss_mb(target.process)
            log(f"{target.name}: {checkpoint} referrals stored ({len(referrals) / (time.monotonic() - started):.0f}/s "
                f"incl. delivery), RSS {figures[f'rss_{checkpoint}_mb']:.1f} MB")
        figures["rss_ratio"] = figures[f"rss_{total}_mb"] / figures[f"rss_{first}_mb"]

    async def _cpu_per_referral(self, target: Target, figures: dict[str, float]) -> None:
        await self._driver.referrals(target, self.options.warmup)
        await wait_quiet(target.process)
        _, delivered = await self._driver.referrals(target, self.options.cpu_referrals)
        figures["referral_cpu_ms"] = delivered.cpu_ms_per_op

    async def _card_actions(self, target: Target, figures: dict[str, float]) -> None:
        one = await self._driver.card_actions(target, self.options.card_actions)
        figures["card_p50_c1_ms"] = percentile_ms(one.latencies, 0.5)
        await wait_quiet(target.process)
        probe = _Probe()
        since = time.time()
        async with self._probing(target.process, probe):
            many = await self._concurrent_card_actions(target, self.options.card_actions)
        figures["card_p50_c20_ms"] = percentile_ms(many.latencies, 0.5)
        figures["card_p99_c20_ms"] = percentile_ms(many.latencies, 0.99)
        figures["stall_card_ms"] = probe.max_ms
        figures["loop_card_ms"] = await self._longest_callback_ms(target.process, since)
        await wait_quiet(target.process)

    async def _concurrent_card_actions(self, target: Target, count: int) -> Sample:
        async def one(index: int) -> None:
            card = await self._driver.card_action(target, target.user(index), "referral.start", {})
            if not card:
                raise ScenarioError(f"{target.name}: referral.start answered no card")

        return await timed_at_once(target, count, CONCURRENCY, one)

    async def _delivery_load(self, target: Target, figures: dict[str, float], seconds: float) -> None:
        ramp = min(2.0, seconds / 5)
        count_before, _ = await self._sink.mails(after=1 << 62)
        probe = _Probe()
        t0 = time.monotonic()
        since = time.time()
        async with self._probing(target.process, probe):
            referrals = await self._referrals(target, until=t0 + seconds)
        loop_ms = await self._longest_callback_ms(target.process, since)
        window = (t0 + ramp, t0 + seconds)
        accepted = [r for r in referrals if window[0] <= r.answered <= window[1]]
        drained = True
        try:
            await wait_for_mail(target, count_before + len(referrals), within=self.options.drain_seconds)
        except ScenarioError:
            drained = False  # reported below: not at the SMTP server within drain_seconds
        drain_end = time.monotonic()
        _, mails = await self._sink.mails(after=count_before)
        received = {m.group(1): at for message_id, at in mails if (m := _MESSAGE_ID_REFERENCE.match(message_id))}
        in_window = [at for at in received.values() if window[0] <= at <= window[1]]
        length = window[1] - window[0]
        # A mail still missing counts with the time waited for it: the percentiles are then lower bounds.
        latencies = [received.get(r.reference or "", drain_end) - r.send_started for r in referrals]
        if not drained:
            log(f"{target.name}: {len(referrals) - len(received)} of {len(referrals)} mails not at the SMTP server "
                f"{self.options.drain_seconds:.0f} s after the load")
        figures.update({
            "undelivered_after_drain": float(len(referrals) - len(received)),
            "accepted_per_s": len(accepted) / length,
            "smtp_per_s": len(in_window) / length,
            "backlog_at_end": float(sum(1 for r in referrals if r.answered <= window[1])
                                    - sum(1 for at in received.values() if at <= window[1])),
            "send_to_smtp_p50_ms": percentile_ms(latencies, 0.5),
            "send_to_smtp_p99_ms": percentile_ms(latencies, 0.99),
            "stall_load_ms": probe.max_ms,
            "loop_load_ms": loop_ms,
        })
        figures["smtp_vs_accepted"] = figures["smtp_per_s"] / figures["accepted_per_s"]
        await wait_quiet(target.process)

    async def _referrals(
        self, target: Target, *, count: int | None = None, until: float | None = None
    ) -> list[_Referral]:
        """Whole referrals by CONCURRENCY referrers (a user each), `count` in all or until `until`."""
        done: list[_Referral] = []
        remaining = itertools.count()
        base = next(self._users)

        async def referrer(number: int) -> None:
            user = BenchUser.numbered(f"{target.name}-load{base}", number)
            while True:
                if count is not None and next(remaining) >= count:
                    return
                if until is not None and time.monotonic() >= until:
                    return
                done.append(await self._one_referral(target, user))

        await asyncio.gather(*(referrer(number) for number in range(CONCURRENCY)))
        return done

    async def _one_referral(self, target: Target, user: BenchUser) -> _Referral:
        """start, consent, details (as the CPU scenario), then `referral.send` timed on its own."""
        driver = self._driver
        draft = draft_id(await driver.card_action(target, user, "referral.start", {}))
        if draft is None:
            raise ScenarioError(f"{target.name}: the consent card carries no draftId")
        await driver.card_action(target, user, "referral.consent",
                                 {"draftId": draft, "ocmw": PROTOCOL_ID, **CONSENT_ALL})
        await driver.card_action(target, user, "referral.details", {"draftId": draft, **CLIENT_FORM})
        send_started = time.monotonic()
        queued = await driver.card_action(target, user, "referral.send", {"draftId": draft})
        answered = time.monotonic()
        match = _REFERENCE.search(json.dumps(queued))
        return _Referral(match.group(0) if match else None, send_started, answered)

    @contextlib.asynccontextmanager
    async def _probing(self, process: Process, probe: _Probe) -> AsyncIterator[None]:
        """`GET /healthz` every STALL_POLL_SECONDS while the block runs."""
        stop = asyncio.Event()

        async def poll() -> None:
            while not stop.is_set():
                started = time.perf_counter()
                async with self._session.get(f"{process.url}/healthz") as response:
                    await response.read()
                elapsed = time.perf_counter() - started
                probe.latencies.append(elapsed)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), max(0.0, STALL_POLL_SECONDS - elapsed))

        task = asyncio.create_task(poll())
        try:
            yield
        finally:
            stop.set()
            await task


def _rss_mb(process: Process) -> float:
    with open(f"/proc/{process.popen.pid}/status", encoding="ascii") as handle:
        for line in handle:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise ScenarioError(f"{process.name}: no VmRSS in /proc/{process.popen.pid}/status")


# -- the report ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Goal:
    """A row: the figure, what it is compared with, and the bound it must keep."""

    label: str
    figure: str  # key in a bot round's figures
    unit: str
    baseline: str | None  # key in the echo round's or the same bot round's figures
    baseline_label: str
    bound: str  # e.g. "<= 0.75x (stretch 0.5x)"
    ok: Callable[[float], bool] | None  # on the mean ratio (or the figure, without a baseline)


def _goals(options: GoalOptions) -> list[_Goal]:
    first, total = options.fill
    seconds = f"{options.load_seconds:.0f} s"
    how = "driven" if options.drive else "stored, same work"
    return [
        _Goal("CPU per whole referral incl. delivery", "referral_cpu_ms", "ms", "echo_cpu_ms", "echo turn CPU",
              "<= 0.75x (stretch 0.5x)", lambda r: r <= 0.75),
        _Goal("card action p50, 1 at a time", "card_p50_c1_ms", "ms", "echo_p50_ms", "echo turn p50",
              "<= 0.2x", lambda r: r <= 0.2),
        _Goal(f"card action p50, {CONCURRENCY} at a time", "card_p50_c20_ms", "ms", None, "", "", None),
        _Goal(f"card action p99, {CONCURRENCY} at a time", "card_p99_c20_ms", "ms", "card_p50_c1_ms",
              "its p50, 1 at a time", "<= 4x", lambda r: r <= 4),
        _Goal(f"longest event-loop callback, {CONCURRENCY} card actions at a time", "loop_card_ms", "ms", None,
              "", "<= 20 ms", lambda v: v <= 20),
        _Goal(f"/healthz max latency, {CONCURRENCY} card actions at a time (incl. queueing)", "stall_card_ms", "ms",
              None, "", "", None),
        _Goal(f"referrals accepted/s, {CONCURRENCY} referrers, {seconds}", "accepted_per_s", "/s", None, "", "", None),
        _Goal("mails at the SMTP server/s, same window", "smtp_per_s", "/s", "accepted_per_s", "accepted/s",
              ">= 1x", lambda r: r >= 1.0),
        _Goal("accepted but not at the SMTP server at the window's end", "backlog_at_end", "", None, "", "", None),
        _Goal(f"not at the SMTP server {options.drain_seconds:.0f} s after the load", "undelivered_after_drain", "",
              None, "", "0", lambda v: v == 0),
        _Goal('"Verstuur" -> SMTP receipt p50', "send_to_smtp_p50_ms", "ms", None, "", "", None),
        _Goal('"Verstuur" -> SMTP receipt p99', "send_to_smtp_p99_ms", "ms", None, "", "<= 1000 ms",
              lambda v: v <= 1000),
        _Goal("longest event-loop callback during the delivery load", "loop_load_ms", "ms", None, "", "<= 20 ms",
              lambda v: v <= 20),
        _Goal("/healthz max latency during the delivery load (incl. queueing)", "stall_load_ms", "ms", None, "", "",
              None),
        _Goal(f"ready (/readyz 200), {total} referrals stored", "startup_s", "s", "echo_startup_s",
              "echo: first 2xx", "<= 1.3x", lambda r: r <= 1.3),
        _Goal("CPU per package (AES-256 ZIP), build's own code", "package_ms", "ms", None, "", "", None),
        _Goal("CPU per mail built and queued", "mail_queued_ms", "ms", None, "", "", None),
        _Goal("CPU per mail in the worker before SMTP", "mail_worker_ms", "ms", None, "", "", None),
        _Goal(f"RSS after {first} referrals {how}", f"rss_{first}_mb", "MB", None, "", "", None),
        _Goal(f"RSS after {total} referrals {how}", f"rss_{total}_mb", "MB", f"rss_{first}_mb", f"after {first}",
              "<= 1.15x", lambda r: r <= 1.15),
    ]


def _spread(values: list[float]) -> str:
    """Mean (min–max), with as many decimals as the size of the mean deserves."""
    if not values:
        return "–"
    mean = statistics.fmean(values)
    digits = 0 if abs(mean) >= 1000 or all(v == int(v) for v in values) else 1 if abs(mean) >= 10 else 2
    return f"{mean:.{digits}f} ({min(values):.{digits}f}–{max(values):.{digits}f})"


def table(
    options: GoalOptions, echo: list[dict[str, float]], bots: dict[str, list[dict[str, float]]], *, markdown: bool
) -> str:
    """One row per goal and bot build: figure, baseline, ratio per round (mean, min–max), bound, verdict."""
    header = ("goal", "build", "figure (mean, min–max)", "baseline", "baseline figure", "ratio", "bound", "met")
    rows: list[tuple[str, ...]] = []
    for goal in _goals(options):
        for build, rounds in bots.items():
            values = [figures[goal.figure] for figures in rounds if goal.figure in figures]
            unit = f" {goal.unit}" if goal.unit else ""
            base_values: list[float] = []
            ratios: list[float] = []
            if goal.baseline is not None:
                for number, figures in enumerate(rounds):
                    source = echo[number] if goal.baseline.startswith("echo_") else figures
                    if goal.baseline in source and goal.figure in figures and source[goal.baseline]:
                        base_values.append(source[goal.baseline])
                        ratios.append(figures[goal.figure] / source[goal.baseline])
            judged = statistics.fmean(ratios) if ratios else (statistics.fmean(values) if values else None)
            met = "–" if goal.ok is None or judged is None else ("yes" if goal.ok(judged) else "NO")
            rows.append((
                goal.label, build, _spread(values) + unit, goal.baseline_label,
                (_spread(base_values) + unit) if base_values else "",
                (_spread(ratios) + "x") if ratios else "", goal.bound, met,
            ))
    if markdown:
        return _markdown(options, echo, bots)
    widths = [max(len(cells[i]) for cells in [header, *rows]) for i in range(len(header))]
    lines = ["  ".join(cell.ljust(width) for cell, width in zip(cells, widths, strict=True)).rstrip()
             for cells in [header, *rows]]
    lines.insert(1, "  ".join("-" * width for width in widths))
    return "\n".join(lines)


def _markdown(options: GoalOptions, echo: list[dict[str, float]], bots: dict[str, list[dict[str, float]]]) -> str:
    """For the README: a row per goal, a column per build; each cell the figure and, if any, its ratio."""
    builds = list(bots)
    lines = ["| goal | bound | baseline | " + " | ".join(builds) + " |",
             "| --- | --- | --- |" + " ---: |" * len(builds)]
    for goal in _goals(options):
        unit = f" {goal.unit}" if goal.unit else ""
        cells = []
        baseline = ""
        for build in builds:
            rounds = bots[build]
            values = [figures[goal.figure] for figures in rounds if goal.figure in figures]
            cell = _spread(values) + unit
            if goal.baseline is not None:
                sources = [echo[number] if goal.baseline.startswith("echo_") else figures
                           for number, figures in enumerate(rounds)]
                pairs = [(figures[goal.figure], source[goal.baseline])
                         for figures, source in zip(rounds, sources, strict=True)
                         if goal.figure in figures and source.get(goal.baseline)]
                ratios = [value / base for value, base in pairs]
                met = "" if goal.ok is None or not ratios else _met(goal.ok(statistics.fmean(ratios)))
                cell += f"; **{statistics.fmean(ratios):.2f}x**{met}" if ratios else ""
                if goal.baseline.startswith("echo_"):
                    baseline = f"{goal.baseline_label} {_spread([b for _, b in pairs])}{unit}"
                else:
                    baseline = f"{goal.baseline_label} (same build)"
            elif goal.ok is not None and values:
                cell += _met(goal.ok(statistics.fmean(values)))
            cells.append(cell)
        lines.append(f"| {goal.label} | {goal.bound} | {baseline} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _met(met: bool) -> str:
    return " (met)" if met else " (**not met**)"


async def run(
    options: GoalOptions,
    session: aiohttp.ClientSession,
    driver: Driver,
    sink: SmtpSink,
    builds: list[Build],
    folder: Path,
    bot_cpu: int | None,
) -> tuple[list[dict[str, float]], dict[str, list[dict[str, float]]]]:
    """Every round: the echo bot, then each bot build (the order of the bots rotating per round)."""
    echo_builds = [build for build in builds if build.echo]
    bot_builds = [build for build in builds if not build.echo]
    if len(echo_builds) != 1 or not bot_builds:
        raise ScenarioError("--goals needs one echo build (the baseline) and at least one bot build")
    goal_run = GoalRun(options, session, driver, sink, folder, bot_cpu)
    echo: list[dict[str, float]] = []
    bots: dict[str, list[dict[str, float]]] = {build.name: [] for build in bot_builds}
    for round_number in range(options.rounds):
        shift = round_number % len(bot_builds)
        order = bot_builds[shift:] + bot_builds[:shift]
        log(f"goals round {round_number + 1}/{options.rounds}: echo, {', '.join(b.name for b in order)}")
        echo.append(await goal_run.echo_round(echo_builds[0], round_number))
        for build in order:
            bots[build.name].append(await goal_run.bot_round(build, round_number))
    return echo, bots
