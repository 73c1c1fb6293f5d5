"""Issue 13's figures in one run, each next to its baseline: several instances, and a growing database.

    .venv/bin/python -m benchmarks.scale_out [--before 6ddb5f3] [--rounds 3] [--markdown]
                                             [--sizes 1000,10000,100000] [--seconds 20] [--referrers 16]

Two builds: `before`, the commit this work started from, checked out in a temporary worktree (run
with this interpreter when its requirements are the same), and `after`, this working tree. For
both, in this order:

1. `benchmarks.database_growth` (in the build's own tree, as a process of its own; the harness
   files of this tree are copied into the `before` worktree first, so both are measured the same
   way): per backend and stored referrals (1 000, 10 000, 100 000) the database work of a delivery,
   of its Teams messages and of a reminder pass, in `--rounds` rounds, and how the database plans
   every statement at the largest size. Baselines: the same operation at 1 000 referrals (flat means
   about 1x), the issue's reminder pass (~440 ms at 10 000 referrals), and `before`.
2. `benchmarks.instances`: one bot process, then two (pinned one per CPU), on one PostgreSQL,
   referrals end to end, `--rounds` rounds with the builds and the instance counts taking turns;
   each phase waits for an idle machine, and one during which other processes used more than a tenth
   of a CPU is measured again (three times at most; the quietest is kept). Baselines: one instance
   of the same build (target: two deliver at least 1.6 times as many referrals per second), and
   `before`.

The machine's load is printed at the start and at the end. Run it alone (`flock /tmp/heavy.lock`).
This is not a test: the figures go into the README by hand.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import json
import os
import shutil
import subprocess  # the builds' own Python with fixed arguments  # nosec B404
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks import database_growth, instances
from benchmarks.instances import BEFORE, BotBuild, before_build, this_tree
from benchmarks.tables import render

REPO = Path(__file__).resolve().parent.parent
#: The harness, copied into the `before` worktree so that both builds are measured by the same code.
HARNESS = ("benchmarks", "tests/support/query_plans.py")
#: Issue 13: "the reminder pass takes ~440 ms at 10 k referrals, on the event loop".
ISSUE_REMINDER_PASS_MS = 440.0


def _log(text: str) -> None:
    sys.stderr.write(f"[scale_out] {text}\n")
    sys.stderr.flush()


def _arguments(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.scale_out", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--before", default=BEFORE, help=f"the commit to compare with (default {BEFORE})")
    instances.add_arguments(parser)
    parser.add_argument("--sizes", default="1000,10000,100000", help="stored referrals for the growth part")
    parser.add_argument("--deliveries", type=int, default=100, help="timed deliveries per round (growth part)")
    parser.add_argument("--passes", type=int, default=20, help="timed reminder passes of each kind per round")
    parser.add_argument("--skip", choices=("growth", "instances"), action="append", default=[],
                        help="leave a part out (repeatable)")
    parser.add_argument("--markdown", action="store_true", help="print the tables as Markdown for the README")
    arguments = parser.parse_args(argv)
    if arguments.referrers < 2 or arguments.seconds <= 0 or arguments.rounds < 1:
        parser.error("at least 2 referrers, a positive window and one round")
    return arguments


def _load() -> str:
    one, five, fifteen = os.getloadavg()
    return f"{one:.2f} / {five:.2f} / {fifteen:.2f}"


def _with_harness(build: BotBuild) -> None:
    """This tree's benchmark harness into the build's worktree (never into this tree itself)."""
    if build.tree == REPO:
        return
    for name in HARNESS:
        source, target = REPO / name, build.tree / name
        if source.is_dir():
            shutil.copytree(source, target, dirs_exist_ok=True, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(source, target)


def _growth(build: BotBuild, arguments: argparse.Namespace, folder: Path) -> list[dict[str, Any]]:
    """`benchmarks.database_growth` in the build's tree; its results as written with `--json`."""
    output = folder / f"growth-{build.name}.json"
    command = [str(build.python), "-m", "benchmarks.database_growth", "--sizes", arguments.sizes,
               "--deliveries", str(arguments.deliveries), "--passes", str(arguments.passes),
               "--rounds", str(arguments.rounds), "--json", str(output)]
    _log(f"database growth, {build.name}: {' '.join(command[1:])}")
    done = subprocess.run(command, cwd=build.tree, stdout=subprocess.DEVNULL, check=False)  # noqa: S603  # nosec B603
    if done.returncode != 0:
        raise RuntimeError(f"database_growth failed for {build.name} (exit {done.returncode})")
    found: list[dict[str, Any]] = json.loads(output.read_text(encoding="utf-8"))
    return found


def _mean(values: list[float]) -> float:
    return sum(values) / len(values)


def growth_baselines(results: dict[str, list[dict[str, Any]]]) -> list[str]:
    """The growth figures the issue names, each against its baseline."""
    lines = []
    for build, found in results.items():
        for result in found:
            if result["size"] == 10_000 and result["backend"] == "postgresql":
                busy = _mean(result["operations"][database_growth.BUSY]["median_ms"])
                lines.append(f"- {build}: a reminder pass queuing reminders at 10 000 stored referrals on PostgreSQL "
                             f"takes {busy:.1f} ms (issue 13: ~{ISSUE_REMINDER_PASS_MS:.0f} ms)")
        for backend in ("postgresql", "sqlite"):
            mine = {result["size"]: result["operations"] for result in found if result["backend"] == backend}
            if len(mine) < 2:
                continue
            small, large = mine[min(mine)], mine[max(mine)]
            ratios = ", ".join(f"{name} {_mean(large[name]['median_ms']) / _mean(small[name]['median_ms']):.2f}x"
                               for name in database_growth.OPERATIONS)
            lines.append(f"- {build}, {backend}, {max(mine)} against {min(mine)} stored referrals: {ratios}")
    return lines


def main(argv: list[str] | None = None) -> int:
    arguments = _arguments(argv)
    cpus = instances.two_cpus()
    if cpus is None:
        sys.stderr.write("needs two CPUs: one per bot process\n")
        return 1
    started, load_before = time.monotonic(), _load()
    when = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    with contextlib.ExitStack() as stack:
        folder = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="scale-out-")))
        before = stack.enter_context(before_build(arguments.before))
        builds = [before, this_tree()]
        _with_harness(before)
        growth: dict[str, list[dict[str, Any]]] = {}
        if "growth" not in arguments.skip:
            growth = {build.name: _growth(build, arguments, folder) for build in builds}
        phases: list[instances.Phase] = []
        if "instances" not in arguments.skip:
            try:
                phases = asyncio.run(instances.measure(arguments, builds, cpus))
            except instances.BenchmarkError as error:
                sys.stderr.write(f"benchmark failed: {error}\n")
                return 1
    markdown = arguments.markdown
    lines = [
        f"Run {when}; load average (1/5/15 min) at the start {load_before}, at the end {_load()}; "
        f"{time.monotonic() - started:.0f} s in all.", "",
    ]
    if phases:
        lines += [
            "## Several instances on one PostgreSQL", "",
            *instances.setup_lines(arguments, builds, cpus), "",
            render(*instances.summary_rows(phases, instances.TARGET), markdown=markdown), "",
            *instances.bound_lines(phases, instances.TARGET), "",
            "Every phase (CPU as a share of one core over the window):", "",
            render(*instances.detail_rows(phases), markdown=markdown), "",
            "After every phase: every referral's mail arrived once, every referral is `sent`, every Teams message "
            "sent, and `python -m bot register verify` found one unbroken chain.", "",
        ]
    if growth:
        lines += [
            "## The database work as stored referrals grow", "",
            database_growth.setup_line(arguments), "",
            render(*database_growth.timing_rows(growth), markdown=markdown), "",
            database_growth.noise_line(growth), "",
            "Against the baselines:", *growth_baselines(growth), "",
            "Full scans of growing tables (plans with the statistics of the full database):",
            *database_growth.scan_lines(growth), "",
        ]
    sys.stdout.write("\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
