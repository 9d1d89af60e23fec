"""Where the time of one 1-stream chatbus reply goes, by the client's clock and the events' `at` fields."""

from __future__ import annotations

import asyncio
import statistics
import time

from rich.table import Table

import bus
import schemas
from bench.openai_measure import PROMPT, SETTLE_SECONDS, WALL_OFFSET, process_cpu, tree_cpu
from bench.openai_paths import ChatbusPath, RawPath
from bench.openai_stacks import Chatbus
from schemas.chat import ReplyCompleted, ReplyRequested, ReplyStarted
from schemas.subjects import context_subjects, one_chat, reply_event


async def breakdown(
    stack: Chatbus, chatbus: ChatbusPath, raw: RawPath | None, tokens: int, runs: int
) -> tuple[Table, list[str]]:
    """Where a 1-stream chatbus reply's time goes: the client's clock and the events' `at` (one clock)."""
    steps: dict[str, list[float]] = {}
    worker: dict[str, list[float]] = {"queue_ms": [], "first_token_ms": [], "generation_ms": []}
    totals, ttfts, raw_totals, raw_ttfts, read_ms, last_ms = [], [], [], [], [], []
    per_token, raw_per_token = [], []  # ms per token after the first: the streaming phase's pace
    assert stack.server.process is not None
    roles = {
        "nats-server": stack.server.process.pid,
        "projector": stack.services[0].pid,
        "api": stack.services[1].pid,
        "worker": stack.workers[chatbus.threads].pid,
    }
    cpu_ms: dict[str, list[float]] = {name: [] for name in [*roles, "raw engine"]}
    # CPU each process spends between the request and its first chunk: on 2 cores whatever else runs then
    # slows the worker's prefill (2 threads), so this is where TTFT's extra over the raw engine goes.
    window_ms: dict[str, list[float]] = {name: [] for name in roles}
    for i in range(runs):
        convs = [[{"role": "user", "content": f"{PROMPT} (Breakdown {i}.)"}]]
        before = {name: tree_cpu([pid]) for name, pid in roles.items()}
        start = {name: process_cpu(pid) for name, pid in roles.items()}

        def at_first(start: dict[str, float] = start) -> None:
            for name, pid in roles.items():
                window_ms[name].append((process_cpu(pid) - start[name]) * 1000)

        chatbus.on_first = at_first
        try:
            timing = (await chatbus.round(convs, tokens)).streams[0]
        finally:
            chatbus.on_first = None
        await asyncio.sleep(SETTLE_SECONDS)
        for name, pid in roles.items():
            cpu_ms[name].append((tree_cpu([pid]) - before[name]) * 1000)
        if raw is not None:
            raw_before = tree_cpu(raw.pids())
            out = await raw.round(convs, tokens)
            cpu_ms["raw engine"].append((tree_cpu(raw.pids()) - raw_before) * 1000)
            raw_totals.append(out.wall * 1000)
            raw_ttfts.append(out.ttft[0] * 1000)
            raw_per_token.append((out.wall - out.ttft[0]) * 1000 / max(1, out.completion[0] - 1))
        await asyncio.sleep(0.3)  # let the projector settle before reading the log
        stored = await bus.read_all(stack.nbus.js, "CHAT", [one_chat(timing.chat_id)])
        events = [schemas.decode_event(m.data) for m in stored]
        requested = next(e for e in events if isinstance(e, ReplyRequested))
        started = next(e for e in events if isinstance(e, ReplyStarted))
        completed = next(e for e in events if isinstance(e, ReplyCompleted))
        assert completed.reply_id == timing.reply_id and timing.first is not None and timing.last is not None

        def wall(t: float) -> float:
            return t + WALL_OFFSET

        engine_first = started.at.timestamp() + completed.first_token_ms / 1000  # from just after started.at
        marks = [
            ("POST sent → reply.requested built (API)", wall(timing.sent), requested.at.timestamp()),
            (
                "reply.requested → reply.started (appends, delivery)",
                requested.at.timestamp(),
                started.at.timestamp(),
            ),
            ("reply.started → engine's first token (worker)", started.at.timestamp(), engine_first),
            ("engine's first token → first chunk at client", engine_first, wall(timing.first)),
            ("first chunk → last chunk (streaming)", wall(timing.first), wall(timing.last)),
            ("last chunk at client → reply.completed built", wall(timing.last), completed.at.timestamp()),
            ("reply.completed → HTTP stream end", completed.at.timestamp(), wall(timing.end)),
        ]
        for name, a, b in marks:
            steps.setdefault(name, []).append((b - a) * 1000)
        for name in worker:
            worker[name].append(getattr(completed, name))
        totals.append((timing.end - timing.sent) * 1000)
        ttfts.append((timing.first - timing.sent) * 1000)
        per_token.append((timing.last - timing.first) * 1000 / max(1, timing.completion - 1))
        # Two of the worker's round trips before prefill, timed from here: its context read, a last_msg.
        t0 = time.perf_counter()
        await bus.read_all(stack.nbus.js, "CHAT", context_subjects(timing.chat_id))  # the worker's filter
        t1 = time.perf_counter()
        await bus.last_msg(stack.nbus.js, "CHAT", reply_event(timing.chat_id, timing.reply_id, "cancelled"))
        t2 = time.perf_counter()
        read_ms.append((t1 - t0) * 1000)
        last_ms.append((t2 - t1) * 1000)

    table = Table(title=f"{chatbus.name}: one reply of {tokens} tokens, 1 stream, medians of {runs}")
    for column in ("step", "median ms", "min–max ms"):
        table.add_column(column, justify="left" if column == "step" else "right")
    for name, values in steps.items():
        table.add_row(name, f"{statistics.median(values):.1f}", f"{min(values):.1f}–{max(values):.1f}")
    table.add_section()
    table.add_row("total: POST sent → HTTP stream end", f"{statistics.median(totals):.1f}", "")
    table.add_row("TTFT: POST sent → first content chunk", f"{statistics.median(ttfts):.1f}", "")
    table.add_row(
        "ms per token after the first (first → last chunk)", f"{statistics.median(per_token):.2f}", ""
    )
    for name, values in worker.items():
        table.add_row(f"  worker's own {name} (reply.completed)", f"{statistics.median(values):.1f}", "")
    table.add_row(
        "  a context read (bus.read_all) as the worker does, from here",
        f"{statistics.median(read_ms):.1f}",
        "",
    )
    table.add_row(
        "  a bus.last_msg (the worker's cancel check), from here", f"{statistics.median(last_ms):.1f}", ""
    )
    shares = ", ".join(f"{name} {statistics.median(v):.0f}" for name, v in cpu_ms.items() if v)
    notes = [f"CPU ms per 1-stream reply of {tokens} tokens (medians; CPU ticks are 10 ms): {shares}"]
    inside = ", ".join(f"{name} {statistics.mean(v):.0f}" for name, v in window_ms.items() if v)
    notes.append(f"CPU ms between the request and its first chunk (means; ticks are 10 ms): {inside}")
    if raw is not None and raw_totals:
        table.add_section()
        table.add_row(
            f"{raw.name}: submit → last token, same prompt", f"{statistics.median(raw_totals):.1f}", ""
        )
        table.add_row(f"{raw.name}: TTFT", f"{statistics.median(raw_ttfts):.1f}", "")
        table.add_row(
            f"{raw.name}: ms per token after the first", f"{statistics.median(raw_per_token):.2f}", ""
        )
        fixed = statistics.median(totals) - statistics.median(raw_totals)
        ttft_extra = statistics.median(ttfts) - statistics.median(raw_ttfts)
        pace_extra = (statistics.median(per_token) - statistics.median(raw_per_token)) * (tokens - 1)
        notes.append(
            f"chatbus total − raw engine total (medians): {fixed:.0f} ms a reply = TTFT {ttft_extra:+.0f} ms"
            f" + slower streaming {pace_extra:+.0f} ms ({tokens - 1} tokens at"
            f" {statistics.median(per_token) - statistics.median(raw_per_token):+.2f} ms each) + the rest"
            f" {fixed - ttft_extra - pace_extra:+.0f} ms (the end: acks, end event, last chunks)"
        )
    return table, notes
