"""The result table: CPU per operation as mean and min–max over rounds, latency over all rounds pooled."""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass

from benchmarks.scenarios import UNITS, Sample


@dataclass(frozen=True)
class Row:
    scenario: str
    build: str
    cpu_mean: float
    cpu_min: float
    cpu_max: float
    p50: float
    p99: float
    ratio: float | None  # CPU mean against the baseline build's, same scenario


def percentile(values: list[float], fraction: float) -> float:
    """Nearest-rank percentile (p99 of 300 values is the 297th smallest)."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(fraction * len(ordered)) - 1)]


def percentile_ms(values: list[float], fraction: float) -> float:
    """Percentile in ms of latencies in seconds (0 for none)."""
    return percentile(values, fraction) * 1000 if values else 0.0


def rows(results: dict[str, dict[str, list[Sample]]], baseline: str) -> list[Row]:
    """One row per (scenario, build) that was measured, in the order measured."""
    table = []
    for scenario, by_build in results.items():
        means = {build: statistics.fmean(s.cpu_ms_per_op for s in samples) for build, samples in by_build.items()}
        base = means.get(baseline)
        for build, samples in by_build.items():
            per_round = [sample.cpu_ms_per_op for sample in samples]
            latencies = [latency * 1000 for sample in samples for latency in sample.latencies]
            table.append(Row(
                scenario, build, means[build], min(per_round), max(per_round),
                percentile(latencies, 0.50), percentile(latencies, 0.99),
                means[build] / base if base else None,
            ))
    return table


def raw(results: dict[str, dict[str, list[Sample]]]) -> dict[str, dict[str, list[dict[str, float]]]]:
    """Every round's figures, for `--json`: CPU ms per operation, operations, latency p50/p99 in ms."""
    return {
        scenario: {
            build: [
                {
                    "cpu_ms_per_op": sample.cpu_ms_per_op,
                    "operations": sample.operations,
                    "p50_ms": percentile(sample.latencies, 0.50) * 1000,
                    "p99_ms": percentile(sample.latencies, 0.99) * 1000,
                }
                for sample in samples
            ]
            for build, samples in by_build.items()
        }
        for scenario, by_build in results.items()
    }


def _ratio(row: Row) -> str:
    return "–" if row.ratio is None else f"{row.ratio:.2f}x"


def _scenario(name: str) -> str:
    return f"{name} (per {UNITS[name]})"


def plain(table: list[Row], baseline: str) -> str:
    """Aligned text for the terminal; the scenario is named once per group."""
    header = ("scenario", "build", "CPU ms/op", "(min–max)", "p50 ms", "p99 ms", f"vs {baseline}")
    lines = []
    previous = None
    for row in table:
        scenario = _scenario(row.scenario) if row.scenario != previous else ""
        previous = row.scenario
        lines.append((scenario, row.build, f"{row.cpu_mean:.2f}", f"({row.cpu_min:.2f}–{row.cpu_max:.2f})",
                      f"{row.p50:.1f}", f"{row.p99:.1f}", _ratio(row)))
    widths = [max(len(cells[i]) for cells in [header, *lines]) for i in range(len(header))]
    aligned_left = {0, 1}
    def fmt(cells: tuple[str, ...]) -> str:
        return "  ".join(c.ljust(w) if i in aligned_left else c.rjust(w)
                         for i, (c, w) in enumerate(zip(cells, widths, strict=True))).rstrip()
    return "\n".join([fmt(header), "  ".join("-" * w for w in widths), *(fmt(cells) for cells in lines)])


def markdown(table: list[Row], baseline: str) -> str:
    """A README-ready table."""
    lines = [
        f"| scenario | build | CPU ms/op (mean, min–max over rounds) | p50 ms | p99 ms | vs {baseline} |",
        "| --- | --- | ---: | ---: | ---: | ---: |",
    ]
    for row in table:
        lines.append(
            f"| {_scenario(row.scenario)} | {row.build} | {row.cpu_mean:.2f} ({row.cpu_min:.2f}–{row.cpu_max:.2f}) "
            f"| {row.p50:.1f} | {row.p99:.1f} | {_ratio(row)} |"
        )
    return "\n".join(lines)
