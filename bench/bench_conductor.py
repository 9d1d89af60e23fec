"""The conductor's hand-over between bots: how long from one bot's reply to the next bot's request.

    python bench/bench_conductor.py [--turns 40] [--chats 1,4] [--tokens 4] [--repeat 3]

An embedded nats-server, one worker serving the offline demo model and one conductor, as separate
processes (as `chatbus up` runs them). Each round starts `--chats` chats at once, each with two bots
in `auto` (max_bot_turns = --turns) and a message; the bots then talk until the limit, every reply a
few tokens so that turns are many. Measured from the stream's own timestamps (one clock):

- turn gap: `reply.completed` stored -> the next `reply.requested` stored (the conductor's part:
  delivery, fold, decision, fenced append). Goal: p50 <= 10 ms, p99 <= 50 ms.
- hand-over: `reply.completed` stored -> the next `reply.started` stored (the conductor and the worker),
  beside the worker's own queue time (`reply.completed.queue_ms`: its request's time -> its start).
- baseline: one JetStream append awaiting its ack, the floor of any fenced append.

Rounds of each chat count are interleaved (1, 4, 1, 4, ...); the table pools every turn of a count.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import bus  # noqa: E402
import schemas  # noqa: E402
from bus import StoredMsg  # noqa: E402
from schemas.bot import BotSpec  # noqa: E402
from schemas.chat import (  # noqa: E402
    ChatCreated,
    ChatRenamed,
    Floor,
    FloorSet,
    MessagePosted,
    ParticipantJoined,
    ReplyCompleted,
    ReplyRequested,
    ReplyStarted,
)
from schemas.ids import new_id  # noqa: E402
from schemas.sampling import SamplingParams  # noqa: E402
from schemas.streams import CHAT, CONDUCTOR_SERVICE, WORKERS_KV  # noqa: E402
from schemas.subjects import one_chat  # noqa: E402
from services.cli import processes  # noqa: E402

console = Console()
ALIAS = "demo"


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


@dataclass
class Turns:
    """Every hand-over measured for one chat count, in ms."""

    gap: list[float] = field(default_factory=list)
    handover: list[float] = field(default_factory=list)
    queue: list[float] = field(default_factory=list)
    rounds: list[float] = field(default_factory=list)  # each round's median gap


def _base(chat_id: str) -> dict[str, Any]:
    return {"event_id": new_id("e"), "chat_id": chat_id, "at": schemas.now()}


async def start_party(nbus: bus.Bus, turns: int, tokens: int) -> str:
    """A chat of two bots on the demo model in `auto` until `turns`, and the message that starts them."""
    chat_id = new_id("c")
    params = SamplingParams(max_new_tokens=tokens, ignore_eos=True)
    events: list[schemas.Event] = [ChatCreated(**_base(chat_id), owner_id="bench", title="bench")]
    for i, name in enumerate(("Zen Sage", "Hot Head")):
        bot = BotSpec(name=name, model=ALIAS, params=params)
        events.append(ParticipantJoined(**_base(chat_id), participant_id=f"p{i}", bot=bot, by="bench"))
    floor = Floor(policy="auto", max_bot_turns=turns)
    events.append(FloorSet(**_base(chat_id), floor=floor, by="bench"))
    for event in events:
        await bus.append_event(nbus.js, event)
    message = MessagePosted(**_base(chat_id), message_id=new_id("m"), author_id="bench", content="Talk.")
    await bus.append_event(nbus.js, message)
    return chat_id


async def finished(nbus: bus.Bus, chat_id: str, turns: int) -> list[StoredMsg]:
    """The chat's messages once its `turns` replies completed."""
    while True:
        msgs = await bus.read_all(nbus.js, CHAT.name, [one_chat(chat_id)])
        if sum(".completed" in m.subject for m in msgs) >= turns:
            return msgs
        await asyncio.sleep(0.2)


def measure(msgs: list[StoredMsg], into: Turns) -> list[float]:
    """Add the chat's hand-overs to `into`; its turn gaps."""
    ended: dict[str, float] = {}  # reply -> when its completion was stored
    order: list[tuple[str, float]] = []  # (reply, when requested), in order
    started: dict[str, float] = {}
    queue: dict[str, float] = {}
    for msg in msgs:
        assert msg.time is not None
        at = msg.time.timestamp() * 1000.0
        event = schemas.decode_event(msg.data)
        if isinstance(event, ReplyRequested):
            order.append((event.reply_id, at))
        elif isinstance(event, ReplyStarted):
            started.setdefault(event.reply_id, at)
        elif isinstance(event, ReplyCompleted):
            ended[event.reply_id] = at
            queue[event.reply_id] = event.queue_ms
    gaps = []
    for (before, _), (after, requested) in zip(order, order[1:], strict=False):
        gaps.append(requested - ended[before])
        into.handover.append(started[after] - ended[before])
        into.queue.append(queue[after])
    into.gap.extend(gaps)
    return gaps


async def one_round(nbus: bus.Bus, chats: int, turns: int, tokens: int, into: Turns) -> None:
    chat_ids = [await start_party(nbus, turns, tokens) for _ in range(chats)]
    results = await asyncio.wait_for(asyncio.gather(*(finished(nbus, c, turns) for c in chat_ids)), 600)
    gaps = [gap for msgs in results for gap in measure(msgs, into)]
    into.rounds.append(statistics.median(gaps))


async def append_baseline(nbus: bus.Bus, count: int = 300) -> list[float]:
    """ms per JetStream append awaiting its ack (a chat's rename, on a chat of its own)."""
    chat_id = new_id("c")
    times = []
    for _ in range(count):
        event = ChatRenamed(**_base(chat_id), title="x", by="bench")
        started = time.perf_counter()
        await bus.append_event(nbus.js, event)
        times.append((time.perf_counter() - started) * 1000.0)
    return times


async def wait_ready(nbus: bus.Bus, children: list[processes.Child], timeout: float = 120.0) -> None:
    """Until the worker announces the alias and the conductor answers its status."""
    presence = bus.KV(nbus.js, WORKERS_KV.bucket)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for child in children:
            if child.poll() is not None:
                raise processes.ChildExited(f"{child.args!r} exited with {child.returncode}")
        try:
            await nbus.nc.request(f"{CONDUCTOR_SERVICE}.status", b"", timeout=1.0)
            if await presence.keys(f"{ALIAS}.*"):
                return
        except Exception:  # noqa: BLE001 - not up yet
            pass
        await asyncio.sleep(0.25)
    raise TimeoutError("the worker or the conductor never came up")


async def main(args: argparse.Namespace) -> None:
    from services.llm_worker.demo_model import make_demo_model

    levels = [int(x) for x in args.chats.split(",")]
    tmp = Path(tempfile.mkdtemp(prefix="chatbus-bench-conductor-"))
    make_demo_model(tmp / "model")
    server = bus.EmbeddedServer(
        bus.ServerConfig(store_dir=tmp / "js", credentials=bus.Credentials.generate())
    )
    server.start()
    url = server.url_for()
    env = {
        **os.environ,
        "CHATBUS_NATS_URL": url,
        "CHATBUS_LOG_LEVEL": "WARNING",
        "PYTHONPATH": str(Path(__file__).resolve().parents[1]),
    }
    worker = ["worker", "--model", str(tmp / "model"), "--alias", ALIAS, "--capacity", str(max(levels))]
    children: list[processes.Child] = []
    results = {level: Turns() for level in levels}
    try:
        nbus = await bus.connect(url, name="bench")
        await bus.declare_all(nbus.js)
        for command, log in ((worker, "worker.log"), (["conductor"], "conductor.log")):
            children.append(processes.start(processes.chatbus(*command), env=env, log=tmp / log))
        await wait_ready(nbus, children)
        await one_round(nbus, 1, 6, args.tokens, Turns())  # warm-up
        for _ in range(args.repeat):
            for level in levels:
                await one_round(nbus, level, args.turns, args.tokens, results[level])
        baseline = await append_baseline(nbus)
        await nbus.close()
    finally:
        processes.stop(children)
        server.stop()
        shutil.rmtree(tmp, ignore_errors=True)

    table = Table(
        title=f"conductor hand-over ({args.turns} turns a chat, {args.tokens} tokens per reply, demo model, "
        f"{args.repeat} rounds, {os.cpu_count()} cores)"
    )
    for column in ("measure", "chats at once", "turns", "p50 ms", "p99 ms", "round medians ms"):
        table.add_column(column, justify="right")
    for level in levels:
        r = results[level]
        for name, values, rounds in (
            ("turn gap", r.gap, ", ".join(f"{x:.1f}" for x in r.rounds)),
            ("hand-over", r.handover, ""),
            ("  worker queue_ms", r.queue, ""),
        ):
            table.add_row(
                name,
                str(level),
                str(len(values)),
                f"{statistics.median(values):.1f}",
                f"{_percentile(values, 0.99):.1f}",
                rounds,
            )
    table.add_row(
        "one append + ack",
        "",
        str(len(baseline)),
        f"{statistics.median(baseline):.2f}",
        f"{_percentile(baseline, 0.99):.2f}",
        "",
    )
    console.print(table)
    console.print(
        "turn gap: reply.completed stored -> next reply.requested stored (goal p50 <= 10 ms, p99 <= 50 ms); "
        "hand-over: -> next reply.started stored; worker queue_ms: the next reply's request -> its start"
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--turns", type=int, default=40, help="bot turns per chat (the auto floor's limit)")
    parser.add_argument("--chats", default="1,4", help="chats talking at once, per round (comma-separated)")
    parser.add_argument("--tokens", type=int, default=4, help="new tokens per reply")
    parser.add_argument("--repeat", type=int, default=3, help="rounds of each chat count")
    asyncio.run(main(parser.parse_args()))
