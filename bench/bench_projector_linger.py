"""TTFT at 1 stream and the projector's CPU, one chatbus stack per CHATBUS_PROJECTOR_LINGER_MS, interleaved.

    python bench/bench_projector_linger.py       # lingers 0 and 200 ms, 100 rounds of 8 tokens (~5 min)
    python bench/bench_projector_linger.py --lingers 0,10,200 --rounds 30 --tokens 32

Each linger gets a whole stack of its own (nats-server, projector, API, one worker on 2 threads and 1 on small
steps: what `chatbus up` runs here, with the real default model of bench_openai.py); the stacks take turns,
one request at a time (the order rotates each round), the others idle. Per request: TTFT (request → first
content chunk), the CPU the projector used between the request and that chunk (the window in which the
worker's prefill wants both cores), the projector's CPU for the whole reply (read 0.5 s after its end, so
its last fold counts), and the CPU that everything else on the machine used in the window (/proc/stat minus
the stack's own processes): medians are printed over every request and over the quiet ones (others < 30 ms).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from rich.table import Table  # noqa: E402

from bench.openai_measure import CLOCK_TICKS, PROMPT, SETTLE_SECONDS, Threads, console, tree_cpu  # noqa: E402
from bench.openai_paths import ChatbusPath  # noqa: E402
from bench.openai_stacks import CHILDREN, Chatbus, alias_for, prepare_model, start_chatbus  # noqa: E402
from services.cli import processes  # noqa: E402

THREADS = Threads(2, 1)  # what the worker ships with on 2 cores
QUIET_MS = 30.0  # a request is quiet when the rest of the machine used less CPU than this in its window


def machine_cpu() -> float:
    """CPU seconds every core has been busy since boot (/proc/stat, in clock ticks)."""
    with open("/proc/stat") as stat:
        fields = stat.readline().split()[1:]
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(x) for x in fields[:8])
    return (user + nice + system + irq + softirq + steal) / CLOCK_TICKS


class Measured:
    """One stack and what its requests measured."""

    def __init__(self, linger: float, stack: Chatbus) -> None:
        assert stack.server.process is not None
        self.linger = linger
        self.stack = stack
        self.path = ChatbusPath(THREADS, f"{stack.base}/v1", stack.key, alias_for(THREADS))
        self.projector = stack.services[0].pid
        self.pids = [stack.server.process.pid, *(s.pid for s in stack.services), stack.workers[THREADS].pid]
        self.path.processes = self.pids
        self.ttft: list[float] = []
        self.window: list[float] = []  # projector CPU ms, request → first chunk
        self.reply: list[float] = []  # projector CPU ms, the whole reply
        self.others: list[float] = []  # CPU ms of everything else on the machine in the window

    async def one(self, round_no: int, tokens: int) -> None:
        convs = [[{"role": "user", "content": f"{PROMPT} (Round {round_no}.)"}]]
        start = (tree_cpu([self.projector]), tree_cpu(self.pids), machine_cpu())
        at_first: list[tuple[float, float, float]] = []
        self.path.on_first = lambda: at_first.append(
            (tree_cpu([self.projector]), tree_cpu(self.pids), machine_cpu())
        )
        try:
            result = await self.path.round(convs, tokens)
        finally:
            self.path.on_first = None
        await asyncio.sleep(SETTLE_SECONDS)
        first = at_first[0]
        self.ttft.append(result.ttft[0] * 1000)
        self.window.append((first[0] - start[0]) * 1000)
        self.others.append(max(0.0, (first[2] - start[2]) - (first[1] - start[1])) * 1000)
        self.reply.append((tree_cpu([self.projector]) - start[0]) * 1000)

    def row(self, tokens: int) -> list[str]:
        calm = [i for i, o in enumerate(self.others) if o < QUIET_MS]
        quiet = [self.ttft[i] for i in calm]
        quiet_window = [self.window[i] for i in calm]
        per_k = statistics.median(self.reply) / tokens  # ms per token = s per 1,000 tokens
        return [
            f"{self.linger:g} ms",
            f"{statistics.median(self.ttft):.0f} ms",
            f"{statistics.median(quiet):.0f} ms ({len(quiet)})" if quiet else "-",
            f"{statistics.mean(self.window):.1f} ms"
            + (f" ({statistics.mean(quiet_window):.1f} quiet)" if quiet_window else ""),
            f"{statistics.median(self.reply):.0f} ms",
            f"{per_k:.2f}",
            f"{statistics.median(self.others):.0f} ms",
        ]


async def run(args: argparse.Namespace) -> None:
    lingers = [float(x) for x in args.lingers.split(",") if x.strip()]
    cache_dir = Path(args.cache_dir).expanduser()
    model_dir, sizing = prepare_model(cache_dir)
    tmp = Path(tempfile.mkdtemp(prefix="chatbus-bench-linger-"))
    stacks: list[Measured] = []
    try:
        with console.status("starting one stack per linger (models load) ..."):
            for linger in lingers:
                os.environ["CHATBUS_PROJECTOR_LINGER_MS"] = f"{linger:g}"  # the stack's children read it
                stack = await start_chatbus(tmp / f"linger-{linger:g}", model_dir, cache_dir, [THREADS], 4)
                stacks.append(Measured(linger, stack))
        with console.status("warming up ..."):
            for m in stacks:
                for i in range(2):
                    await m.path.round([[{"role": "user", "content": f"{PROMPT} (Warm-up {i}.)"}]], 8)
        for round_no in range(args.rounds):
            shift = round_no % len(stacks)
            for m in stacks[shift:] + stacks[:shift]:
                await m.one(round_no, args.tokens)
            shown = "  ".join(f"{m.linger:g} ms: {m.ttft[-1]:.0f} ({m.others[-1]:.0f})" for m in stacks)
            console.print(f"round {round_no + 1}/{args.rounds}  TTFT ms (others' CPU ms): {shown}")
        table = Table(
            title=f"projector linger, 1 stream, {args.tokens} tokens, {args.rounds} interleaved rounds, "
            f"load {os.getloadavg()[0]:.1f}"
        )
        for column in (
            "linger",
            "TTFT p50",
            f"TTFT p50, quiet (others < {QUIET_MS:.0f} ms CPU)",
            "projector CPU, request → first chunk (mean)",
            "projector CPU a reply",
            "projector CPU s / 1k tokens",
            "others' CPU in the window",
        ):
            table.add_column(column, justify="right")
        for m in stacks:
            table.add_row(*m.row(args.tokens))
        console.print(table)
    finally:
        for m in stacks:
            with contextlib.suppress(Exception):
                await m.path.close()
            with contextlib.suppress(Exception):
                await m.stack.nbus.close()
        processes.stop(CHILDREN, timeout=5)
        shutil.rmtree(tmp, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--lingers", default="0,200", help="CHATBUS_PROJECTOR_LINGER_MS values, one stack each"
    )
    parser.add_argument("--rounds", type=int, default=100, help="interleaved rounds (one request per stack)")
    parser.add_argument("--tokens", type=int, default=8, help="max_tokens of every reply (all generated)")
    parser.add_argument("--cache-dir", default="~/.cache/chatbus-bench", help="where the model is converted")
    args = parser.parse_args()
    started = time.monotonic()
    try:
        asyncio.run(run(args))
    finally:
        processes.stop(CHILDREN, timeout=5)
    console.print(f"{time.monotonic() - started:.0f} s")


if __name__ == "__main__":
    main()
