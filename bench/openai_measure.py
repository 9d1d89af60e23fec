"""What a round of bench_openai.py measures: thread specs, the CPU of process trees, percentiles,
the client's timing of each stream and round, and the prompts."""

from __future__ import annotations

import math
import os
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

from rich.console import Console

console = Console(width=None if sys.stdout.isatty() else 160)


PROMPT = "Write a long, detailed story about a lighthouse keeper and the storm that changed her life."


SETTLE_SECONDS = 0.5  # CPU is read this long after the last token: trailing work (projector) counts


CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


# A wall-clock reading of time.perf_counter(), to set client timings beside the events' `at`.
WALL_OFFSET = time.time() - time.perf_counter()


@dataclass(frozen=True, order=True)
class Threads:
    """torch threads of a path: `big` for every step, or, with `small`, `small` for steps of < 8 tokens."""

    big: int
    small: int = 0

    @classmethod
    def parse(cls, text: str) -> Threads:
        """ "2" (every step on 2 threads) or "2/1" (2, and 1 for small steps)."""
        big, _, small = text.strip().partition("/")
        return cls(int(big), int(small or 0))

    @property
    def spec(self) -> str:
        return f"{self.big}/{self.small}" if self.small else str(self.big)

    @property
    def label(self) -> str:
        plural = "s" if self.big != 1 else ""
        return f"{self.big} thread{plural}" + (f", {self.small} on small steps" if self.small else "")


def tree_cpu(roots: Sequence[int]) -> float:
    """CPU seconds (user + system, reaped children included) of these processes and all their descendants."""
    stats: dict[int, tuple[int, float]] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat", "rb") as handle:
                data = handle.read()
        except OSError:
            continue
        fields = data[data.rindex(b")") + 2 :].split()  # after "pid (comm) ": state is fields[0]
        ticks = sum(int(x) for x in fields[11:15])  # utime stime cutime cstime
        stats[int(entry.name)] = (int(fields[1]), ticks / CLOCK_TICKS)
    children: dict[int, list[int]] = {}
    for pid, (ppid, _cpu) in stats.items():
        children.setdefault(ppid, []).append(pid)
    total, todo, seen = 0.0, list(roots), set()
    while todo:
        pid = todo.pop()
        if pid in seen or pid not in stats:
            continue
        seen.add(pid)
        total += stats[pid][1]
        todo.extend(children.get(pid, ()))
    return total


def process_cpu(pid: int) -> float:
    """CPU seconds (user + system) of one process, without its children: cheap enough to read mid-stream."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as handle:
            data = handle.read()
    except OSError:
        return 0.0
    fields = data[data.rindex(b")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (p99 of a few samples is their maximum)."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))]


@dataclass
class StreamTiming:
    """One streamed completion, as the client saw it (perf_counter seconds)."""

    sent: float
    first: float | None = None
    last: float | None = None
    end: float = 0.0
    completion: int = 0
    prompt: int = 0
    chat_id: str = ""
    reply_id: str = ""


@dataclass
class Result:
    """One round of one path at one concurrency."""

    completion: list[int]
    prompt: list[int]
    ttft: list[float]
    wall: float
    cpu: float = 0.0
    client_cpu: float = 0.0
    background_cpu: float = 0.0  # of every other path's processes meanwhile (idle servers must stay idle)
    streams: list[StreamTiming] = field(default_factory=list)

    @property
    def tokens(self) -> int:
        return sum(self.completion)

    @property
    def rate(self) -> float:
        return self.tokens / self.wall


def conversations(round_no: int, streams: int) -> list[list[dict[str, str]]]:
    """One distinct prompt per stream and round (the same for every path): prefix sharing flatters no one."""
    return [
        [{"role": "user", "content": f"{PROMPT} (Story {round_no}.{streams}.{i}.)"}] for i in range(streams)
    ]
