"""Compare the bot's CPU cost per turn across builds, in one run, over real HTTP; or issue 14's goals.

    .venv/bin/python -m benchmarks.compare_builds [--build NAME=REF ...] [--rounds 3] [--markdown] [--quick]
    .venv/bin/python -m benchmarks.compare_builds --goals [--build NAME=REF ...] [--quick] [--markdown]

`--goals` (also `python -m benchmarks --goals`) prints every figure of issue 14's goals next to its
baseline, the stock echo bot measured in the same round (see benchmarks/goals.py for what each
figure is and how it is taken); its default builds are `before` = 6ddb5f3 (main before issue 14's
work on the async storage), `after` = this working tree and the echo bot with the venv of b8044bc
(`echo`): the README's table. A full run takes about 40 minutes (3 rounds of 10 k referrals per
build); `--quick` a few minutes.

Each build (default: `before` = b8044bc, the last botbuilder-era commit, in a temporary worktree
and a cached venv; `after` = this working tree with `.venv`; `echo` = the stock botbuilder echo bot
in the `before` venv) runs as `python -m bot serve`, as production starts it, with its own data
folder. Requests go over loopback from this process to each bot; the bots reply to a connector
stand-in in a third process. Only the bot process's CPU is counted (the kernel's per-process CPU
clock), so neither the load generator's nor the stand-in's work is in the figures. With `--pin`
(default) every bot runs on one CPU and this process and the stand-in on another.

After a warm-up, every scenario is measured in rounds, and within a round the builds take turns
(the order rotates per round), so that machine noise falls on all of them alike. CPU per operation
is reported as the mean over rounds with min–max; latency p50/p99 over all rounds' requests, one at
a time. This is not a test: figures go into the README by hand.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import json
import signal
import subprocess  # asks each build's Python for its package versions  # nosec B404
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from types import FrameType

import aiohttp

from benchmarks import goals
from benchmarks.builds import DEFAULT_BUILDS, Build, BuildError, BuildSpec, log, prepared_builds, repo_root
from benchmarks.connector_standin import STATS_PATH
from benchmarks.cpu import pick_cpus, pin_self
from benchmarks.processes import Process, base_environment, bot_environment, free_port, start, wait_healthy
from benchmarks.report import markdown, plain, raw, rows
from benchmarks.scenarios import (
    CARD,
    MESSAGE,
    REFERRAL,
    REFERRAL_DELIVERY,
    Driver,
    Sample,
    ScenarioError,
    Target,
    wait_quiet,
)
from benchmarks.smtp_sink import MAILS_PATH

#: Scenarios by command-line name; the echo bot only has message turns.
SCENARIOS = ("message", "card", "referral")
ECHO_SCENARIOS = {"message"}
GOAL_BUILDS = ("before=6ddb5f3", "after=WORKTREE", "echo=echo@b8044bc")
_VERSIONS_OF = ("botbuilder-core", "microsoft-agents-hosting-core", "aiohttp")


def _arguments(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.compare_builds", description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--build", action="append", metavar="NAME=REF",
                        help="REF: WORKTREE, a git commit, or echo@BUILD; repeat; default: " + " ".join(DEFAULT_BUILDS))
    parser.add_argument("--baseline", help="the build the ratios are against (default: the first)")
    parser.add_argument("--scenarios", default=",".join(SCENARIOS), help=f"comma-separated subset of {SCENARIOS}")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--messages", type=int, default=300, help="message turns per build per round")
    parser.add_argument("--card-actions", type=int, default=300, help="card actions per build per round")
    parser.add_argument("--referrals", type=int, default=40, help="whole referrals per build per round")
    parser.add_argument("--warmup", type=int, default=30, help="message turns and card actions per build first "
                        "(and a third as many referrals, at least 5)")
    parser.add_argument("--pin", action=argparse.BooleanOptionalAction, default=True,
                        help="bots on one CPU, load generator and stand-in on another (default on)")
    parser.add_argument("--markdown", action="store_true", help="print the table as Markdown for the README")
    parser.add_argument("--cache-dir", type=Path, help="where venvs are kept (default: <repo>/.bench-cache)")
    parser.add_argument("--json", type=Path, metavar="FILE", help="also write every round's figures to FILE")
    parser.add_argument("--goals", action="store_true", help="measure issue 14's goals against the echo bot "
                        "(default builds: " + " ".join(GOAL_BUILDS) + ")")
    parser.add_argument("--quick", action="store_true", help="fewer samples per round: minutes, not most of an "
                        "hour (the figures are noisier; use the full run for the README)")
    parser.add_argument("--load-seconds", type=float, help="--goals: seconds of the 20-referrer delivery load "
                        "(default 60, --quick 10)")
    parser.add_argument("--fill", metavar="FIRST,TOTAL", help="--goals: referrals stored for the RSS comparison; "
                        "the other figures are taken with TOTAL stored (default 1000,10000; --quick too)")
    parser.add_argument("--drive", action="store_true", help="--goals: drive the FIRST, then TOTAL referrals "
                        "through the bot (RSS after each, in one process) instead of seeding them (slow)")
    arguments = parser.parse_args(argv)
    if arguments.quick and not arguments.goals:
        arguments.messages, arguments.card_actions, arguments.referrals = 60, 60, 10
        arguments.warmup = min(arguments.warmup, 10)
    arguments.scenarios = [s.strip() for s in arguments.scenarios.split(",") if s.strip()]
    unknown = set(arguments.scenarios) - set(SCENARIOS)
    if unknown:
        parser.error(f"unknown scenario(s) {sorted(unknown)}; known: {SCENARIOS}")
    if min(arguments.rounds, arguments.messages, arguments.card_actions, arguments.referrals) < 1:
        parser.error("--rounds, --messages, --card-actions and --referrals must be at least 1")
    try:
        default = GOAL_BUILDS if arguments.goals else DEFAULT_BUILDS
        arguments.specs = [BuildSpec.parse(text) for text in (arguments.build or default)]
    except ValueError as error:
        parser.error(str(error))
    arguments.goal_options = _goal_options(parser, arguments)
    arguments.baseline = arguments.baseline or arguments.specs[0].name
    if arguments.baseline not in {spec.name for spec in arguments.specs}:
        parser.error(f"--baseline {arguments.baseline!r} is not one of the builds")
    return arguments


def _goal_options(parser: argparse.ArgumentParser, arguments: argparse.Namespace) -> goals.GoalOptions:
    options = goals.GoalOptions.quick() if arguments.quick else goals.GoalOptions()
    changes: dict[str, object] = {"rounds": arguments.rounds, "drive": arguments.drive}
    if arguments.load_seconds is not None:
        changes["load_seconds"] = arguments.load_seconds
    if arguments.fill is not None:
        try:
            first, total = (int(part) for part in arguments.fill.split(","))
        except ValueError:
            parser.error("--fill wants FIRST,TOTAL, e.g. 1000,10000")
        if not 0 < first < total:
            parser.error("--fill wants 0 < FIRST < TOTAL")
        changes["fill"] = (first, total)
    return dataclasses.replace(options, **changes)  # type: ignore[arg-type]


def _applies(build: Build, scenario: str) -> bool:
    return scenario in ECHO_SCENARIOS if build.echo else True


def _versions(python: Path) -> str:
    """The SDK versions in a build's Python, for the report's header."""
    code = (
        "import importlib.metadata as m\n"
        f"for name in {_VERSIONS_OF!r}:\n"
        "    try: print(f'{name} {m.version(name)}')\n"
        "    except m.PackageNotFoundError: pass\n"
    )
    result = subprocess.run(  # noqa: S603 - the build's own Python  # nosec B603
        [str(python), "-c", code], capture_output=True, text=True, check=False
    )
    return ", ".join(result.stdout.split("\n")[:-1]) or "?"


@contextlib.contextmanager
def _started(builds: list[Build], folder: Path, bot_cpu: int | None) -> Iterator[tuple[Process, dict[str, Target]]]:
    """The connector stand-in and every build's bot; all of them stopped when the block ends."""
    processes: list[Process] = []
    try:
        port = free_port()
        connector = start("connector stand-in", [sys.executable, "-m", "benchmarks.connector_standin", str(port)],
                          cwd=Path(__file__).parent.parent, env=base_environment(),
                          port=port, log_path=folder / "connector.log", cpu=None)
        processes.append(connector)
        targets = {}
        for build in builds:
            data_dir = folder / f"data-{build.name}"
            port = free_port()
            process = start(build.name, [str(build.python), *build.argv], cwd=build.tree,
                            env=bot_environment(port, data_dir), port=port,
                            log_path=folder / f"bot-{build.name}.log", cpu=bot_cpu)
            processes.append(process)
            targets[build.name] = Target(build.name, process, None if build.echo else data_dir / "outbox")
        yield connector, targets
    finally:
        for process in reversed(processes):
            process.stop()


async def _run_scenario(driver: Driver, target: Target, scenario: str, count: int) -> list[tuple[str, Sample]]:
    if scenario == "message":
        return [(MESSAGE, await driver.message_turns(target, count))]
    if scenario == "card":
        return [(CARD, await driver.card_actions(target, count))]
    invokes, delivered = await driver.referrals(target, count)
    return [(REFERRAL, invokes), (REFERRAL_DELIVERY, delivered)]


async def _guarded(driver: Driver, target: Target, scenario: str, count: int) -> list[tuple[str, Sample]]:
    """`_run_scenario`, with a bot that stopped answering reported with its log."""
    try:
        return await _run_scenario(driver, target, scenario, count)
    except (aiohttp.ClientError, TimeoutError) as error:
        state = "running" if target.process.popen.poll() is None else f"exited {target.process.popen.returncode}"
        raise ScenarioError(
            f"{target.name} ({state}): {type(error).__name__}: {error}; bot log:\n{target.process.log_tail()}"
        ) from error


async def _measure(
    arguments: argparse.Namespace, builds: list[Build], connector: Process, targets: dict[str, Target]
) -> dict[str, dict[str, list[Sample]]]:
    counts = {"message": arguments.messages, "card": arguments.card_actions, "referral": arguments.referrals}
    warmups = {"message": arguments.warmup, "card": arguments.warmup, "referral": max(5, arguments.warmup // 3)}
    results: dict[str, dict[str, list[Sample]]] = {}
    timeout = aiohttp.ClientTimeout(total=60)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        await wait_healthy(session, connector, STATS_PATH)
        for target in targets.values():
            await wait_healthy(session, target.process, "/healthz")
        driver = Driver(session, connector.url)
        for build in builds:
            log(f"warming up {build.name}")
            for scenario in arguments.scenarios:
                if _applies(build, scenario):
                    await _guarded(driver, targets[build.name], scenario, warmups[scenario])
            await wait_quiet(targets[build.name].process)
        for round_number in range(arguments.rounds):
            shift = round_number % len(builds)
            order = builds[shift:] + builds[:shift]
            log(f"round {round_number + 1}/{arguments.rounds}: {', '.join(b.name for b in order)}")
            for scenario in arguments.scenarios:
                for build in order:
                    if not _applies(build, scenario):
                        continue
                    for row, sample in await _guarded(driver, targets[build.name], scenario, counts[scenario]):
                        results.setdefault(row, {b.name: [] for b in builds if _applies(b, scenario)})
                        results[row][build.name].append(sample)
                    await wait_quiet(targets[build.name].process)
    return results


def _cross_check(targets: dict[str, Target]) -> None:
    """The ns CPU clock against /proc/<pid>/stat ticks over each bot's whole life."""
    for target in targets.values():
        cpu = target.process.cpu
        if target.process.popen.poll() is None:
            source = "CPU clock" if cpu.precise else "/proc stat (no CPU clock)"
            log(f"{target.name}: {cpu.ns() / 1e9:.3f} s by {source}, {cpu.stat_ns() / 1e9:.2f} s by /proc/pid/stat")


@contextlib.contextmanager
def _goal_peers(folder: Path) -> Iterator[tuple[Process, Process, int]]:
    """The connector stand-in and the SMTP server (with its SMTP port), stopped when the block ends."""
    processes: list[Process] = []
    root = Path(__file__).parent.parent
    try:
        port = free_port()
        processes.append(start("connector stand-in", [sys.executable, "-m", "benchmarks.connector_standin", str(port)],
                               cwd=root, env=base_environment(), port=port, log_path=folder / "connector.log",
                               cpu=None))
        smtp_port, http_port = free_port(), free_port()
        processes.append(start("SMTP server", [sys.executable, "-m", "benchmarks.smtp_sink", str(smtp_port),
                                               str(http_port)],
                               cwd=root, env=base_environment(), port=http_port, log_path=folder / "smtp.log",
                               cpu=None))
        yield processes[0], processes[1], smtp_port
    finally:
        for process in reversed(processes):
            process.stop()


async def _measure_goals(
    arguments: argparse.Namespace, builds: list[Build], folder: Path, bot_cpu: int | None
) -> tuple[list[dict[str, float]], dict[str, list[dict[str, float]]]]:
    with _goal_peers(folder) as (connector, sink_process, smtp_port):
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60)) as session:
            await wait_healthy(session, connector, STATS_PATH)
            await wait_healthy(session, sink_process, MAILS_PATH)
            sink = goals.SmtpSink(session, sink_process, smtp_port)
            return await goals.run(arguments.goal_options, session, Driver(session, connector.url), sink, builds,
                                   folder, bot_cpu)


def _on_sigterm(_signal: int, _frame: FrameType | None) -> None:
    raise SystemExit(143)  # so every `finally` stops its processes and removes the worktrees


def main(argv: list[str] | None = None) -> int:
    arguments = _arguments(argv)
    signal.signal(signal.SIGTERM, _on_sigterm)
    repo = repo_root()
    # An echo build has only message turns: without them it is not started at all.
    specs = [spec for spec in arguments.specs if spec.echo_of is None or ECHO_SCENARIOS & set(arguments.scenarios)]
    try:
        with (
            prepared_builds(specs, repo, arguments.cache_dir or repo / ".bench-cache") as builds,
            tempfile.TemporaryDirectory(prefix="bench-run-") as folder,
        ):
            header = [f"- {b.name}: {b.description}; {_versions(b.python)}" for b in builds]
            cpus = pick_cpus() if arguments.pin else None
            if arguments.pin and cpus is None:
                log("fewer than two CPUs available: not pinning")
            if cpus is not None:
                pin_self(cpus[1])  # before any child starts: the stand-in inherits this CPU
            if arguments.goals:
                echo, bots = asyncio.run(_measure_goals(arguments, builds, Path(folder), cpus[0] if cpus else None))
                return _print_goals(arguments, header, cpus, echo, bots)
            with _started(builds, Path(folder), cpus[0] if cpus else None) as (connector, targets):
                results = asyncio.run(_measure(arguments, builds, connector, targets))
                _cross_check(targets)
    except (BuildError, ScenarioError, RuntimeError) as error:
        sys.stderr.write(f"benchmark failed: {error}\n")
        return 1
    except KeyboardInterrupt:
        sys.stderr.write("benchmark interrupted; its processes are stopped and its worktrees removed\n")
        return 130
    settings = (
        f"{arguments.rounds} rounds x ({arguments.messages} message turns, {arguments.card_actions} card actions, "
        f"{arguments.referrals} referrals) per build, one request at a time, warm-up {arguments.warmup}; "
        + (f"bots pinned to CPU {cpus[0]}, load generator and stand-in to CPU {cpus[1]}" if cpus else "not pinned")
    )
    table = rows(results, arguments.baseline)
    if arguments.json:
        arguments.json.write_text(json.dumps(raw(results), indent=1), encoding="utf-8")
    output = markdown(table, arguments.baseline) if arguments.markdown else plain(table, arguments.baseline)
    sys.stdout.write("\n".join(["Builds:", *header, settings, "", output, ""]))
    return 0


def _print_goals(
    arguments: argparse.Namespace,
    header: list[str],
    cpus: tuple[int, int] | None,
    echo: list[dict[str, float]],
    bots: dict[str, list[dict[str, float]]],
) -> int:
    options: goals.GoalOptions = arguments.goal_options
    settings = (
        f"issue 14 goals: {options.rounds} rounds; per round and bot build, with {options.fill[1]} referrals "
        + (f"driven by {goals.CONCURRENCY} referrers (RSS after {options.fill[0]} and {options.fill[1]}): "
           if options.drive else f"stored (and again with {options.fill[0]}, for RSS): ")
        + f"{options.cpu_referrals} referrals one at a time, {options.card_actions} card actions at 1 and at "
        f"{goals.CONCURRENCY}, {options.load_seconds:.0f} s of delivery load by {goals.CONCURRENCY} referrers; "
        f"echo: {options.echo_turns} message turns; "
        + (f"bots pinned to CPU {cpus[0]}, load generator, stand-in and SMTP server to CPU {cpus[1]}" if cpus
           else "not pinned")
    )
    if arguments.json:
        arguments.json.write_text(json.dumps({"echo": echo, "bots": bots}, indent=1), encoding="utf-8")
    output = goals.table(options, echo, bots, markdown=arguments.markdown)
    sys.stdout.write("\n".join(["Builds:", *header, settings, "", output, ""]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
