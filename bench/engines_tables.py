"""bench_engines.py's results: the table (medians per path and concurrency, with ratios) and the goals of
issue 17 with verdicts. Medians and percentiles are openai_tables.summarise's."""

from __future__ import annotations

import argparse
import os
from collections.abc import Sequence

from rich.table import Table

from bench.engines_paths import EngineChatbusPath, LlamaPath
from bench.openai_measure import console
from bench.openai_paths import BenchPath
from bench.openai_tables import best

Summary = dict[tuple[str, int], dict[str, float]]

RATE_AT_1 = 60.0  # tokens/s of one stream with the default CPU engine
SERVE_AT_16 = 3.0  # x transformers serve's (best thread count) tokens/s at 16 streams
ALONE_AT_1 = 0.9  # x llama.cpp alone at one stream, with chatbus's llama.cpp engine


def _alone(paths: Sequence[BenchPath]) -> BenchPath | None:
    return next((p for p in paths if isinstance(p, LlamaPath) and p.mode == "alone"), None)


def _llama(paths: Sequence[BenchPath]) -> EngineChatbusPath | None:
    return next(
        (p for p in paths if isinstance(p, EngineChatbusPath) and p.setting.engine == "llama.cpp"), None
    )


def _ratio(summary: Summary, mine: BenchPath, theirs: BenchPath | None, level: int) -> float | None:
    if theirs is None or (mine.name, level) not in summary or (theirs.name, level) not in summary:
        return None
    return summary[(mine.name, level)]["rate"] / summary[(theirs.name, level)]["rate"]


def _x(ratio: float | None) -> str:
    return "" if ratio is None else f"{ratio:.2f}"


def print_table(
    args: argparse.Namespace, paths: Sequence[BenchPath], summary: Summary, levels: list[int]
) -> None:
    """One row per path and concurrency; ÷ serve: a chatbus path over the best transformers serve at
    that many streams; ÷ alone: a llama.cpp path over llama.cpp alone at that many streams (sequential
    beyond 1)."""
    table = Table(
        title=f"engines: SmolLM2-135M-Instruct, {args.tokens} tokens per reply, chatbus's default sampling, "
        f"{os.cpu_count()} cores, medians of {args.repeat} interleaved rounds",
        caption="* the best thread count of transformers serve at that many streams; ÷ serve uses it",
    )
    for column in (
        "path",
        "streams",
        "tokens/s",
        "TTFT p50",
        "TTFT p99",
        "CPU s / 1k tok",
        "÷ serve",
        "÷ alone",
    ):
        table.add_column(column, justify="left" if column == "path" else "right")
    alone = _alone(paths)
    for level in levels:
        top = best(summary, paths, "serve", level, "rate")
        for path in paths:
            row = summary.get((path.name, level))
            if row is None:
                continue
            mark = " *" if path is top else ""
            serve = _ratio(summary, path, top, level) if path.kind == "chatbus" else None
            llama = isinstance(path, LlamaPath) and path.mode == "engine"
            llama = llama or (isinstance(path, EngineChatbusPath) and path.setting.engine == "llama.cpp")
            versus = _ratio(summary, path, alone, level) if llama else None
            table.add_row(
                path.name,
                str(level),
                f"{row['rate']:.1f}{mark}",
                f"{row['ttft_p50'] * 1000:.0f} ms",
                f"{row['ttft_p99'] * 1000:.0f} ms",
                f"{row['cpu_per_1k']:.2f}",
                _x(serve),
                _x(versus),
            )
        table.add_section()
    console.print(table)


def goals(paths: Sequence[BenchPath], summary: Summary, default: EngineChatbusPath | None) -> Table:
    """Issue 17's goals: the default CPU engine's speed and its lead over transformers serve; the llama.cpp
    engine's share of llama.cpp alone, and that it gains from several streams."""
    table = Table(title="goals (issue 17)")
    for column in ("goal", "path", "measured", "target", "met"):
        table.add_column(column, justify="left" if column in ("goal", "path") else "right")
    rows: list[tuple[str, str, str, str, bool | None]] = []
    name = default.name if default is not None else "n/a (not measured)"
    one = summary.get((name, 1))
    rate = None if one is None else one["rate"]
    shown = "n/a" if rate is None else f"{rate:.1f} tok/s"
    rows.append(
        ("default CPU engine, 1 stream", name, shown, f"≥ {RATE_AT_1:.0f} tok/s", _ok(rate, RATE_AT_1))
    )
    top = best(summary, paths, "serve", 16, "rate")
    r = None if default is None else _ratio(summary, default, top, 16)
    shown = "n/a" if r is None else f"{r:.2f}x"
    rows.append(
        (
            "default CPU engine ÷ transformers serve, 16 streams",
            name,
            shown,
            f"≥ {SERVE_AT_16:.1f}x",
            _ok(r, SERVE_AT_16),
        )
    )
    llama = _llama(paths)
    lname = llama.name if llama is not None else "n/a (not measured)"
    r = None if llama is None else _ratio(summary, llama, _alone(paths), 1)
    shown = "n/a" if r is None else f"{r:.2f}x"
    rows.append(
        ("llama.cpp ÷ llama.cpp alone, 1 stream", lname, shown, f"≥ {ALONE_AT_1:.2f}x", _ok(r, ALONE_AT_1))
    )
    at1, at4 = summary.get((lname, 1)), summary.get((lname, 4))
    if at1 is None or at4 is None:
        rows.append(("llama.cpp tokens/s, 4 streams > 1 stream", lname, "n/a", "> 1 stream's", None))
    else:
        shown = f"{at4['rate']:.1f} vs {at1['rate']:.1f}"
        rows.append(
            (
                "llama.cpp tokens/s, 4 streams > 1 stream",
                lname,
                shown,
                "> 1 stream's",
                at4["rate"] > at1["rate"],
            )
        )
    for goal, path, measured, target, ok in rows:
        met = "n/a" if ok is None else ("[green]yes[/]" if ok else "[red]no[/]")
        table.add_row(goal, path, measured, target, met)
    return table


def _ok(value: float | None, floor: float) -> bool | None:
    return None if value is None else value >= floor
