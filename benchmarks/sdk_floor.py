"""What issue 14's goals leave for the bot once the channel SDK has had its share: `python -m benchmarks.sdk_floor`.

Issue 14 measures the bot against the stock botbuilder echo bot. The bot's Teams layer must run on
the Microsoft 365 Agents SDK (the guide's choice of botbuilder's successor), so some of each goal is
the SDK's own work, whatever the bot does. This run measures, in the same rounds and the same way as
the goals command (bots pinned to one CPU, load generator and connector stand-in on the other, real
HTTP, the bot process's CPU):

- the echo bot (`benchmarks/baseline_echo_bot.py` in the venv of `--echo`'s requirements):
  message turns with one reply, as the goals' baseline;
- the floor bot (`benchmarks/floor_agents_bot.py`, this venv): the Agents SDK's sample shape answering
  every card action with a fixed card and doing nothing else, so a card action of any bot on the
  SDK costs at least what it costs.

Per round and bot: ready (spawn to the first 2xx on `POST /api/messages`), CPU and p50 per turn one
at a time, p50 and p99 with 20 at a time. Then each goal beside what the floor alone already takes
of it, per round and averaged: a whole referral has four card actions (start, consent, details,
send) before its delivery, so four floor invokes are a lower bound of its CPU; a card action's p50
is at least the floor's; p99 at 20 against p50 at 1 is shown for both bots.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import aiohttp

from benchmarks.activities import invoke_card
from benchmarks.builds import Build, BuildError, BuildSpec, log, prepared_builds, repo_root
from benchmarks.connector_standin import STATS_PATH
from benchmarks.cpu import pick_cpus, pin_self
from benchmarks.processes import Process, base_environment, bot_environment, free_port, start, wait_healthy
from benchmarks.report import percentile_ms
from benchmarks.scenarios import Driver, ScenarioError, Target, timed_at_once, until_answered, wait_quiet

FLOOR_BOT = Path(__file__).with_name("floor_agents_bot.py")
CONCURRENCY = 20
INVOKES_PER_REFERRAL = 4  # referral.start, referral.consent, referral.details, referral.send


@dataclass(frozen=True)
class _Goal:
    """One of issue 14's goals as a ratio of two figures of the same round."""

    name: str
    numerator: Callable[[dict[str, float], dict[str, float]], float]  # (floor, echo) -> figure
    denominator: Callable[[dict[str, float], dict[str, float]], float]
    bound: str


GOALS = (
    _Goal(f"CPU of {INVOKES_PER_REFERRAL} floor invokes (a referral's card actions, without delivery) "
          "vs one echo turn", lambda f, _: INVOKES_PER_REFERRAL * f["cpu_ms"], lambda _, e: e["cpu_ms"],
          "whole referral <= 0.75x"),
    _Goal("floor invoke p50, 1 at a time, vs echo turn p50", lambda f, _: f["p50_1_ms"],
          lambda _, e: e["p50_1_ms"], "card action <= 0.2x"),
    _Goal(f"floor invoke p99, {CONCURRENCY} at a time, vs its p50 at 1", lambda f, _: f["p99_20_ms"],
          lambda f, _: f["p50_1_ms"], "<= 4x"),
    _Goal(f"echo turn p99, {CONCURRENCY} at a time, vs its p50 at 1", lambda _, e: e["p99_20_ms"],
          lambda _, e: e["p50_1_ms"], "(the baseline itself)"),
    _Goal("floor ready vs echo ready", lambda f, _: f["ready_s"], lambda _, e: e["ready_s"], "<= 1.3x"),
)

FIGURES = (("ready_s", "ready (spawn to first 2xx)", "s"), ("cpu_ms", "CPU per turn, 1 at a time", "ms"),
           ("p50_1_ms", "p50, 1 at a time", "ms"), ("p50_20_ms", f"p50, {CONCURRENCY} at a time", "ms"),
           ("p99_20_ms", f"p99, {CONCURRENCY} at a time", "ms"))


class FloorRun:
    """Starts each bot on the bots' CPU and measures it over real HTTP."""

    def __init__(self, session: aiohttp.ClientSession, driver: Driver, folder: Path, bot_cpu: int | None,
                 arguments: argparse.Namespace) -> None:
        self._session = session
        self._driver = driver
        self._folder = folder
        self._bot_cpu = bot_cpu
        self._arguments = arguments

    async def measure(self, build: Build, round_number: int) -> dict[str, float]:
        """One bot, one round: ready, then turns one at a time and 20 at a time."""
        label = f"{build.name}-{round_number}"
        port = free_port()
        started = time.monotonic()
        process = start(build.name, [str(build.python), *build.argv], cwd=build.tree,
                        env=bot_environment(port, self._folder / label), port=port,
                        log_path=self._folder / f"{label}.log", cpu=self._bot_cpu)
        try:
            target = Target(build.name, process, None)
            turn = self._echo_turn if build.echo else self._floor_invoke
            await until_answered(process, lambda _: self._answered(lambda: turn(target, 0)))
            ready = time.monotonic() - started
            await self._driver.timed(target, self._arguments.warmup, functools.partial(turn, target))
            await wait_quiet(process)
            # The echo bot exactly as the goals measure their baseline (the CPU window ends with its last reply).
            one = await (self._driver.message_turns(target, self._arguments.turns) if build.echo
                         else self._driver.timed(target, self._arguments.turns, functools.partial(turn, target)))
            await wait_quiet(process)
            many = await timed_at_once(target, self._arguments.turns, CONCURRENCY, functools.partial(turn, target))
            await wait_quiet(process)
        finally:
            process.stop()
        return {"ready_s": ready, "cpu_ms": one.cpu_ms_per_op, "p50_1_ms": percentile_ms(one.latencies, 0.5),
                "p50_20_ms": percentile_ms(many.latencies, 0.5), "p99_20_ms": percentile_ms(many.latencies, 0.99)}

    @staticmethod
    async def _answered(turn: Callable[[], Awaitable[None]]) -> bool:
        """Ready: a turn answered as expected (not yet: False)."""
        with contextlib.suppress(ScenarioError):
            await turn()
            return True
        return False

    async def _echo_turn(self, target: Target, index: int) -> None:
        """A message turn; the echo bot answers once its reply reached the connector."""
        await self._post(target, target.user(index).message(self._driver.service_url, "hulp"))

    async def _floor_invoke(self, target: Target, index: int) -> None:
        """A card action answered with a card in the invoke's HTTP response."""
        body = await self._post(target, target.user(index).card_action(self._driver.service_url, "floor.next", {}))
        if invoke_card(body) is None:
            raise ScenarioError(f"{target.name}: a card action was answered without a card: {body!r:.300}")

    async def _post(self, target: Target, activity: dict[str, object]) -> object:
        """The JSON answer (or {} for none) of a 2xx; ScenarioError otherwise."""
        async with self._session.post(f"{target.process.url}/api/messages", json=activity) as response:
            body = await response.read()
            if not 200 <= response.status < 300:
                raise ScenarioError(f"{target.name}: answered {response.status}:\n{target.process.log_tail()}")
            return await response.json() if body else {}


@contextlib.contextmanager
def _connector(folder: Path) -> Iterator[Process]:
    """The connector stand-in the echo bot replies to (unpinned: it inherits the load generator's CPU)."""
    port = free_port()
    process = start("connector stand-in", [sys.executable, "-m", "benchmarks.connector_standin", str(port)],
                    cwd=repo_root(), env=base_environment(), port=port, log_path=folder / "connector.log", cpu=None)
    try:
        yield process
    finally:
        process.stop()


async def _run(arguments: argparse.Namespace, echo: Build, floor: Build, folder: Path,
               bot_cpu: int | None) -> dict[str, list[dict[str, float]]]:
    figures: dict[str, list[dict[str, float]]] = {echo.name: [], floor.name: []}
    with _connector(folder) as connector:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60)) as session:
            await wait_healthy(session, connector, STATS_PATH)
            run = FloorRun(session, Driver(session, connector.url), folder, bot_cpu, arguments)
            for round_number in range(arguments.rounds):
                order = [echo, floor] if round_number % 2 == 0 else [floor, echo]
                log(f"sdk floor round {round_number + 1}/{arguments.rounds}: {', '.join(b.name for b in order)}")
                for build in order:
                    figures[build.name].append(await run.measure(build, round_number))
    return figures


def _spread(values: list[float], unit: str) -> str:
    digits = 2 if unit == "s" or max(values) < 10 else 1
    suffix = unit if unit == "x" else f" {unit}"
    return f"{statistics.fmean(values):.{digits}f} ({min(values):.{digits}f}–{max(values):.{digits}f}){suffix}"


def report(figures: dict[str, list[dict[str, float]]], echo: str, floor: str) -> str:
    """The figures of both bots, then each goal beside what the floor takes of it (ratios per round, averaged)."""
    lines = ["| figure | echo (botbuilder 4.17.1) | floor (Agents SDK, nothing else) |", "| --- | ---: | ---: |"]
    for key, name, unit in FIGURES:
        lines.append(f"| {name} | {_spread([r[key] for r in figures[echo]], unit)} | "
                     f"{_spread([r[key] for r in figures[floor]], unit)} |")
    lines += ["", "| what the SDK alone already takes | ratio | issue 14's goal |", "| --- | ---: | --- |"]
    for goal in GOALS:
        ratios = [goal.numerator(f, e) / goal.denominator(f, e) for f, e in zip(figures[floor], figures[echo],
                                                                             strict=True)]
        lines.append(f"| {goal.name} | {_spread(ratios, 'x')} | {goal.bound} |")
    return "\n".join(lines)


def _arguments(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.sdk_floor", description=__doc__.split("\n\n")[0])
    parser.add_argument("--echo", default="b8044bc", metavar="REF",
                        help="the commit whose requirements.txt gives the echo bot's venv (botbuilder 4.17.1)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--turns", type=int, default=300, help="turns per bot per round, at 1 and at 20 at a time")
    parser.add_argument("--warmup", type=int, default=30)
    parser.add_argument("--cache-dir", type=Path, help="where venvs are kept (default: <repo>/.bench-cache)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    arguments = _arguments(argv)
    repo = repo_root()
    floor = Build("floor", repo, Path(sys.executable), (str(FLOOR_BOT),), echo=False,
                  description=f"Agents SDK floor bot ({FLOOR_BOT.name}) with {sys.prefix}")
    try:
        with (
            prepared_builds([BuildSpec("echo", f"echo@{arguments.echo}")], repo,
                            arguments.cache_dir or repo / ".bench-cache") as (echo,),
            tempfile.TemporaryDirectory(prefix="bench-floor-") as folder,
        ):
            cpus = pick_cpus()
            if cpus is not None:
                pin_self(cpus[1])  # before any child starts: the stand-in inherits this CPU
            figures = asyncio.run(_run(arguments, echo, floor, Path(folder), cpus[0] if cpus else None))
    except (BuildError, ScenarioError, RuntimeError) as error:
        sys.stderr.write(f"benchmark failed: {error}\n")
        return 1
    pinning = f"bots pinned to CPU {cpus[0]}, load generator and stand-in to CPU {cpus[1]}" if cpus else "not pinned"
    sys.stdout.write("\n".join([
        f"- echo: {echo.description}", f"- floor: {floor.description}",
        f"{arguments.rounds} rounds x {arguments.turns} turns per bot at 1 and at {CONCURRENCY} at a time, "
        f"warm-up {arguments.warmup}; {pinning}", "", report(figures, echo.name, floor.name), "",
    ]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
