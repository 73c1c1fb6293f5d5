"""Compare the bot's CPU cost per turn across builds, in one run, over real HTTP.

    .venv/bin/python -m benchmarks.compare_builds [--build NAME=REF ...] [--rounds 3] [--markdown]

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
import json
import signal
import subprocess  # asks each build's Python for its package versions  # nosec B404
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from types import FrameType

import aiohttp

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

#: Scenarios by command-line name; the echo bot only has message turns.
SCENARIOS = ("message", "card", "referral")
ECHO_SCENARIOS = {"message"}
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
    arguments = parser.parse_args(argv)
    arguments.scenarios = [s.strip() for s in arguments.scenarios.split(",") if s.strip()]
    unknown = set(arguments.scenarios) - set(SCENARIOS)
    if unknown:
        parser.error(f"unknown scenario(s) {sorted(unknown)}; known: {SCENARIOS}")
    if min(arguments.rounds, arguments.messages, arguments.card_actions, arguments.referrals) < 1:
        parser.error("--rounds, --messages, --card-actions and --referrals must be at least 1")
    try:
        arguments.specs = [BuildSpec.parse(text) for text in (arguments.build or DEFAULT_BUILDS)]
    except ValueError as error:
        parser.error(str(error))
    arguments.baseline = arguments.baseline or arguments.specs[0].name
    if arguments.baseline not in {spec.name for spec in arguments.specs}:
        parser.error(f"--baseline {arguments.baseline!r} is not one of the builds")
    return arguments


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


if __name__ == "__main__":
    sys.exit(main())
