"""Replay and export throughput: fill CHAT with a realistic mix, then time `replay` against a raw
ordered-consumer read, and `export sft` (read the log, fold the trees, write JSONL and Parquet).

    python bench/bench_replay.py --events 1000000

Starts its own nats-server in a temp dir; the goal (issue 4) is replay >= 100,000 events/s on
1,000,000 events.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import statistics
import sys
import tempfile
import time
from datetime import timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import bus  # noqa: E402
import schemas  # noqa: E402
from schemas.chat import (  # noqa: E402
    ChatCreated,
    ChatRenamed,
    MessagePosted,
    ReplyCompleted,
    ReplyFailed,
    ReplyRequested,
    ReplyStarted,
)
from schemas.ids import new_id  # noqa: E402
from schemas.subjects import ALL_CHATS, subject_of  # noqa: E402
from services.projector import replay  # noqa: E402

TARGET = 100_000
WORDS = "the a lighthouse keeper wrote letters to sea every night about storms and gulls and tea".split()


def _text(rng: random.Random, n: int) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(n))


def make_events(n: int, seed: int = 7) -> list[schemas.Event]:
    """About n chat events: chats with turns of message, reply requested, started, completed (some fail)."""
    rng = random.Random(seed)
    at = schemas.now() - timedelta(days=30)
    events: list[schemas.Event] = []
    users = [f"user{i}" for i in range(200)]
    while len(events) < n:
        chat_id, owner = new_id("c"), rng.choice(users)
        at += timedelta(seconds=1)
        events.append(
            ChatCreated(
                event_id=new_id("e"),
                chat_id=chat_id,
                at=at,
                owner_id=owner,
                title=_text(rng, 4),
                model="smollm2-135m",
            )
        )
        for turn in range(rng.randint(3, 15)):
            message_id, reply_id = new_id("m"), new_id("r")
            at += timedelta(milliseconds=200)
            events.append(
                MessagePosted(
                    event_id=new_id("e"),
                    chat_id=chat_id,
                    at=at,
                    message_id=message_id,
                    author_id=owner,
                    content=_text(rng, rng.randint(5, 60)),
                )
            )
            events.append(
                ReplyRequested(
                    event_id=new_id("e"),
                    chat_id=chat_id,
                    at=at,
                    reply_id=reply_id,
                    message_id=message_id,
                    model="smollm2-135m",
                    requested_by=owner,
                )
            )
            events.append(
                ReplyStarted(
                    event_id=new_id("e"),
                    chat_id=chat_id,
                    at=at,
                    reply_id=reply_id,
                    attempt=1,
                    worker_id="w1",
                    model="smollm2-135m",
                )
            )
            at += timedelta(milliseconds=800)
            if rng.random() < 0.03:
                events.append(
                    ReplyFailed(
                        event_id=new_id("e"),
                        chat_id=chat_id,
                        at=at,
                        reply_id=reply_id,
                        attempt=1,
                        worker_id="w1",
                        error="out of memory",
                    )
                )
            else:
                events.append(
                    ReplyCompleted(
                        event_id=new_id("e"),
                        chat_id=chat_id,
                        at=at,
                        reply_id=reply_id,
                        attempt=1,
                        worker_id="w1",
                        model="smollm2-135m",
                        text=_text(rng, rng.randint(20, 120)),
                        prompt_tokens=40 + 30 * turn,
                        completion_tokens=80,
                        finish_reason="stop",
                        queue_ms=3.0,
                        first_token_ms=40.0,
                        generation_ms=700.0,
                    )
                )
            if turn == 0:
                events.append(
                    ChatRenamed(event_id=new_id("e"), chat_id=chat_id, at=at, title=_text(rng, 3), by=owner)
                )
    return events[:n]


def _headers(event: schemas.Event) -> dict[str, str]:
    """The headers the real appenders store with this event: a dedup id, and for order-sensitive
    appends an expected subject sequence (here on a subject nothing uses, so it always holds)."""
    headers = {"Nats-Msg-Id": event.event_id}  # type: ignore[union-attr]
    if isinstance(event, ChatCreated):
        headers["Nats-Expected-Last-Subject-Sequence"] = "0"
    elif isinstance(event, MessagePosted | ReplyCompleted | ReplyFailed):
        headers["Nats-Expected-Last-Subject-Sequence"] = "0"
        headers["Nats-Expected-Last-Subject-Sequence-Subject"] = f"chat.{event.chat_id}.bench.>"
    return headers


async def fill(nbus: bus.Bus, events: list[schemas.Event], window: int = 4000) -> float:
    """Publish events with many acks in flight; returns seconds taken."""
    started = time.perf_counter()
    futures = []
    for event in events:
        futures.append(
            await nbus.js.publish_async(subject_of(event), schemas.encode(event), headers=_headers(event))
        )
        if len(futures) >= window:
            await asyncio.gather(*futures)
            futures.clear()
    await asyncio.gather(*futures)
    return time.perf_counter() - started


async def raw_read(nbus: bus.Bus, reader: str, stream: str, subjects: list[str], expected: int) -> float:
    """Seconds to read every message of the stream with an ordered push consumer, without decoding."""
    started = time.perf_counter()
    follower: bus.Follower | bus.BulkReader
    if reader == "follower":
        follower = bus.Follower(nbus.js, stream, subjects, 1)
    else:
        follower = bus.BulkReader(nbus, stream, subjects, 1)
    await follower.start()
    got = 0
    try:
        while got < expected:
            if not await follower.wait(30):
                raise TimeoutError(f"raw read stalled at {got} of {expected}")
            got += len(follower.take())
    finally:
        await follower.stop()
    return time.perf_counter() - started


async def export_rounds(nbus: bus.Bus, root: Path, repeat: int) -> dict[str, tuple[int, float]]:
    """Median seconds of reading+folding the log, and of writing its SFT rows as JSONL and Parquet."""
    from logtools.export import ExportFilter, hash_ref, read_log, sft_rows, write_rows

    flt = ExportFilter(consent_only=False)
    reads, jsonl, parquet = [], [], []
    events = rows = 0
    for i in range(repeat):
        started = time.perf_counter()
        log = await read_log(nbus)
        reads.append(time.perf_counter() - started)
        events = log.events
        started = time.perf_counter()
        rows = write_rows(sft_rows(log, flt, "active", hash_ref), root / f"sft-{i}.jsonl", "jsonl")
        jsonl.append(time.perf_counter() - started)
        started = time.perf_counter()
        write_rows(sft_rows(log, flt, "active", hash_ref), root / f"sft-{i}.parquet", "parquet")
        parquet.append(time.perf_counter() - started)
        del log
    return {
        "read + fold the log into trees (events)": (events, statistics.median(reads)),
        "sft --per active, JSONL (rows)": (rows, statistics.median(jsonl)),
        "sft --per active, Parquet (rows)": (rows, statistics.median(parquet)),
    }


async def main(n_events: int, repeat: int) -> int:
    """Run the benchmark and print the table; exit 1 when replay misses the target."""
    with tempfile.TemporaryDirectory(prefix="bench-replay-") as tmp:
        root = Path(tmp)
        server = bus.EmbeddedServer(
            bus.ServerConfig(store_dir=root / "jetstream", credentials=bus.Credentials.generate())
        )
        server.start()
        try:
            nbus = await bus.connect(server.url_for(), name="bench-replay")
            await bus.declare_all(nbus.js)
            events = make_events(n_events)
            fill_s = await fill(nbus, events)
            print(
                f"filled CHAT with {len(events):,} events in {fill_s:.1f} s ({len(events) / fill_s:,.0f}/s)"
            )

            # Medians of interleaved runs: this machine's speed drifts by tens of percent.
            follower_runs, bulk_runs, replays = [], [], []
            for i in range(repeat):
                follower_runs.append(await raw_read(nbus, "follower", "CHAT", [ALL_CHATS], len(events)))
                bulk_runs.append(await raw_read(nbus, "bulk", "CHAT", [ALL_CHATS], len(events)))
                replays.append(await replay(nbus, root / f"replayed-{i}.duckdb"))
            export = await export_rounds(nbus, root, repeat)
            follower_s, bulk_s = statistics.median(follower_runs), statistics.median(bulk_runs)
            summary = sorted(replays, key=lambda s: s.seconds)[len(replays) // 2]
            print("replay runs (events/s):", [round(s.events_per_s) for s in replays])
            await nbus.close()
        finally:
            server.stop()
    rows = [
        ("ordered consumer (bus.Follower), no decode", len(events), follower_s),
        ("ordered consumer (bus.BulkReader), no decode", len(events), bulk_s),
        ("replay into DuckDB", summary.events, summary.seconds),
    ]
    # The ratio is against the raw bulk read of the same stream in the same run: the floor of any replay.
    baseline = len(events) / bulk_s
    print(f"\n{'path':<46} {'events':>9} {'seconds':>8} {'events/s':>10} {'ratio':>6}")
    for name, count, seconds in rows:
        rate = count / seconds
        print(f"{name:<46} {count:>9,} {seconds:>8.2f} {rate:>10,.0f} {rate / baseline:>6.2f}")
    print(f"\n{'export':<46} {'count':>9} {'seconds':>8} {'per s':>10}")
    for name, (count, seconds) in export.items():
        print(f"{name:<46} {count:>9,} {seconds:>8.2f} {count / seconds:>10,.0f}")
    print(f"\nrows: {summary.rows}")
    ok = summary.events_per_s >= TARGET
    print(f"replay {'meets' if ok else 'MISSES'} the target of {TARGET:,} events/s")
    return 0 if ok else 1


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--events", type=int, default=1_000_000, help="events to put in CHAT")
    parser.add_argument("--repeat", type=int, default=3, help="runs of each read; the table shows medians")
    args = parser.parse_args()
    sys.exit(asyncio.run(main(args.events, args.repeat)))
