"""bench_openai.py's results: medians per path and concurrency, the table, and the goals against the best
thread count of each baseline."""

from __future__ import annotations

import argparse
import os
import statistics
from collections.abc import Sequence

from rich.table import Table

from bench.openai_measure import Result, console, percentile
from bench.openai_paths import BenchPath


def summarise(results: dict[tuple[str, int], list[Result]]) -> dict[tuple[str, int], dict[str, float]]:
    """Per (path name, streams): median tokens/s and CPU s/1k tokens over rounds; pooled TTFT p50/p99."""
    out = {}
    for key, rounds in results.items():
        ttfts = [t for r in rounds for t in r.ttft]
        out[key] = {
            "rate": statistics.median(r.rate for r in rounds),
            "ttft_p50": percentile(ttfts, 0.50),
            "ttft_p99": percentile(ttfts, 0.99),
            "cpu_per_1k": statistics.median(r.cpu / r.tokens * 1000 for r in rounds),
            "client_cpu_per_1k": statistics.median(r.client_cpu / r.tokens * 1000 for r in rounds),
        }
    return out


def best(
    summary: dict[tuple[str, int], dict[str, float]],
    paths: Sequence[BenchPath],
    kind: str,
    streams: int,
    measure: str,
) -> BenchPath | None:
    """The thread count of a baseline that did best at this many streams (highest tokens/s, lowest TTFT)."""
    mine = [p for p in paths if p.kind == kind and (p.name, streams) in summary]
    if not mine:
        return None
    sign = 1 if measure == "rate" else -1
    return max(mine, key=lambda p: sign * summary[(p.name, streams)][measure])


def print_table(
    args: argparse.Namespace, paths: Sequence[BenchPath], summary: dict, levels: list[int]
) -> None:
    table = Table(
        title=f"OpenAI-compatible streaming, SmolLM2-135M-Instruct, {args.tokens} tokens per reply, "
        f"{os.cpu_count()} cores, medians of {args.repeat} interleaved rounds",
        caption="* the best thread count of that baseline at that many streams; ratios use it",
    )
    for column in (
        "path",
        "streams",
        "tokens/s",
        "TTFT p50",
        "TTFT p99",
        "CPU s / 1k tok",
        "÷ serve",
        "÷ raw",
    ):
        table.add_column(column, justify="left" if column == "path" else "right")
    for level in levels:
        tops = {kind: best(summary, paths, kind, level, "rate") for kind in ("serve", "raw")}
        for path in paths:
            row = summary.get((path.name, level))
            if row is None:
                continue
            mark = " *" if tops.get(path.kind) is path else ""
            ratios = []
            for kind in ("serve", "raw"):
                top = tops[kind]
                if path.kind == "chatbus" and top is not None:
                    ratios.append(f"{row['rate'] / summary[(top.name, level)]['rate']:.2f}")
                else:
                    ratios.append("")
            table.add_row(
                path.name,
                str(level),
                f"{row['rate']:.1f}{mark}",
                f"{row['ttft_p50'] * 1000:.0f} ms",
                f"{row['ttft_p99'] * 1000:.0f} ms",
                f"{row['cpu_per_1k']:.2f}",
                *ratios,
            )
        table.add_section()
    console.print(table)


def _ratio(
    summary: dict, paths: Sequence[BenchPath], chatbus: BenchPath, kind: str, level: int
) -> float | None:
    """chatbus's tokens/s over the best thread count of a baseline at this many streams."""
    top = best(summary, paths, kind, level, "rate")
    if top is None or (chatbus.name, level) not in summary:
        return None
    return summary[(chatbus.name, level)]["rate"] / summary[(top.name, level)]["rate"]


def goals(paths: Sequence[BenchPath], summary: dict, levels: list[int]) -> Table:
    """The issue's goals, for each chatbus thread count, against the best baseline."""
    table = Table(title="goals (chatbus vs the best of each baseline)")
    for column in ("goal", "chatbus", "measured", "target", "met"):
        table.add_column(column, justify="left" if column in ("goal", "chatbus") else "right")
    for path in (p for p in paths if p.kind == "chatbus"):
        rows: list[tuple[str, str, str, bool | None]] = []
        r = _ratio(summary, paths, path, "serve", 16)
        rows.append(
            ("tokens/s ÷ transformers serve, 16 streams", _x(r), "≥ 1.10", None if r is None else r >= 1.1)
        )
        top = best(summary, paths, "serve", 1, "ttft_p50")
        mine = summary.get((path.name, 1))
        if top is not None and mine is not None:
            theirs = summary[(top.name, 1)]["ttft_p50"]
            ok = mine["ttft_p50"] <= theirs
            rows.append(
                ("TTFT p50, 1 stream", f"{mine['ttft_p50'] * 1000:.0f} ms", f"≤ {theirs * 1000:.0f} ms", ok)
            )
        else:
            rows.append(("TTFT p50, 1 stream", "n/a", "≤ serve's", None))
        for level, floor in ((1, 0.9), (4, 0.95), (16, 0.95)):
            r = _ratio(summary, paths, path, "raw", level)
            ok = None if r is None else r >= floor
            rows.append((f"tokens/s ÷ raw engine, {level} stream(s)", _x(r), f"≥ {floor:.2f}", ok))
        for goal, shown, target, ok in rows:
            met = "n/a" if ok is None else ("[green]yes[/]" if ok else "[red]no[/]")
            table.add_row(goal, path.name, shown, target, met)
        table.add_section()
    return table


def _x(ratio: float | None) -> str:
    return "n/a" if ratio is None else f"{ratio:.2f}x"
