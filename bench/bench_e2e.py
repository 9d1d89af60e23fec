"""End-to-end benchmark: tokens/s through chatbus vs the raw engine, and live token latency vs raw NATS.

    python bench/bench_e2e.py [--tokens 64] [--concurrency 1,4,16] [--latency-seconds 3]

Everything runs on this machine: an embedded nats-server, the projector, the API and one worker
as separate processes (as `chatbus up` runs them), with the offline demo model.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
from rich.console import Console
from rich.table import Table

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import bus  # noqa: E402
import schemas  # noqa: E402
from schemas.subjects import ANY, reply_event, reply_tokens  # noqa: E402
from schemas.tokens import TokenDelta  # noqa: E402
from services.cli import processes  # noqa: E402

console = Console()


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def chatbus_round(
    base: str, headers: dict[str, str], nbus: bus.Bus, concurrency: int, tokens: int
) -> float:
    """Post `concurrency` messages at once; tokens/s from the first post to the last completion."""
    async with aiohttp.ClientSession(headers=headers) as http:
        chat_ids = []
        for i in range(concurrency):
            async with http.post(f"{base}/v1/chats", json={"title": f"bench {i}", "model": "demo"}) as resp:
                chat_ids.append((await resp.json())["chat_id"])
        done: dict[str, int] = {}
        timings: list[tuple[float, float, float]] = []
        finished = asyncio.Event()
        finish_time = [0.0]

        async def on_completed(msg: object) -> None:
            event = schemas.decode_event(msg.data)  # type: ignore[attr-defined]
            if event.chat_id in chat_ids:  # type: ignore[union-attr]
                done[event.chat_id] = event.completion_tokens  # type: ignore[union-attr]
                timings.append((event.queue_ms, event.first_token_ms, event.generation_ms))  # type: ignore[union-attr]
                if len(done) == concurrency:
                    finish_time[0] = time.perf_counter()
                    finished.set()

        sub = await nbus.nc.subscribe(reply_event(ANY, ANY, "completed"), cb=on_completed)
        body = {
            "content": "Tell me a short story about a lighthouse keeper.",
            "model": "demo",
            "params": {"max_new_tokens": tokens, "ignore_eos": True},
        }
        start = time.perf_counter()

        async def post(chat_id: str) -> None:
            async with http.post(f"{base}/v1/chats/{chat_id}/messages", json=body) as resp:
                assert resp.status == 202, await resp.text()

        await asyncio.gather(*(post(c) for c in chat_ids))
        await asyncio.wait_for(finished.wait(), 600)
        await sub.unsubscribe()
    total = sum(done.values())
    console.print(
        f"  {concurrency} concurrent: queue/first-token/generation ms (median) "
        f"{statistics.median(x[0] for x in timings):.0f} / {statistics.median(x[1] for x in timings):.0f}"
        f" / {statistics.median(x[2] for x in timings):.0f}; wall {finish_time[0] - start:.2f}s"
    )
    assert total == concurrency * tokens, f"expected {concurrency * tokens} tokens, got {total}"
    return total / (finish_time[0] - start)


async def ws_latency(
    base: str, headers: dict[str, str], nbus: bus.Bus, rate: float, seconds: float
) -> list[float]:
    """Publish token deltas as a worker does (JetStream publish_async); time their arrival on a WebSocket."""
    async with aiohttp.ClientSession(headers=headers) as http:
        async with http.post(f"{base}/v1/chats", json={"title": "latency"}) as resp:
            chat_id = (await resp.json())["chat_id"]
        info = await nbus.js.stream_info("TOKENS")
        ws_url = f"{base}/v1/chats/{chat_id}/ws?after_token_seq={info.state.last_seq}&after_chat_seq=0"
        latencies: list[float] = []
        count = int(rate * seconds)
        async with http.ws_connect(ws_url) as ws:
            await asyncio.sleep(0.5)

            async def receive() -> None:
                async for frame in ws:
                    data = frame.json()
                    if data.get("kind") == "tokens":
                        sent = int(data["event"]["text"])
                        latencies.append((time.perf_counter_ns() - sent) / 1e6)
                        if len(latencies) >= count:
                            return

            receiver = asyncio.create_task(receive())
            await _publish_paced(nbus, chat_id, rate, count)
            await asyncio.wait_for(receiver, 30)
    return latencies


async def _paced(rate: float, count: int, send: Callable[[int], Awaitable[object]]) -> None:
    """Call send(i) for i in range(count) at `rate` per second."""
    interval = 1.0 / rate
    start = time.perf_counter()
    for i in range(count):
        delay = start + i * interval - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        await send(i)


async def _publish_paced(nbus: bus.Bus, chat_id: str, rate: float, count: int) -> None:
    def send(i: int) -> Awaitable[object]:
        delta = TokenDelta(
            chat_id=chat_id,
            reply_id="rbench",
            attempt=1,
            index=i,
            text=str(time.perf_counter_ns()),
            n_tokens=1,
        )
        return nbus.js.publish_async(
            reply_tokens(chat_id, "rbench"),
            schemas.encode(delta),
            headers={"Nats-Msg-Id": f"rbench.{chat_id}.{i}"},
        )

    await _paced(rate, count, send)


async def raw_nats_latency(nbus: bus.Bus, rate: float, seconds: float) -> list[float]:
    """Baseline: core NATS publish -> subscribe on the same connection pair, same rate and payload."""
    other = await bus.connect(_URL[0], name="bench-sub")
    latencies: list[float] = []
    count = int(rate * seconds)
    got_all = asyncio.Event()

    async def on_msg(msg: object) -> None:
        latencies.append((time.perf_counter_ns() - int(msg.data)) / 1e6)  # type: ignore[attr-defined]
        if len(latencies) >= count:
            got_all.set()

    await other.nc.subscribe("bench.raw", cb=on_msg)
    await other.nc.flush()
    await _paced(rate, count, lambda i: nbus.nc.publish("bench.raw", str(time.perf_counter_ns()).encode()))
    await asyncio.wait_for(got_all.wait(), 30)
    await other.close()
    return latencies


_URL: list[str] = [""]


def _raw_in_child(model_dir: Path, concurrency: int, tokens: int) -> float:
    """The baseline in a fresh process, so torch never runs in this (measuring) process."""
    code = (
        "from bench.engine_baseline import run_raw_manager;"
        "from services.llm_worker.engine import EngineConfig;"
        f"print(run_raw_manager({str(model_dir)!r}, {concurrency}, {tokens}, EngineConfig()))"
    )
    root = Path(__file__).resolve().parents[1]
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=root)
    return float(out.stdout.strip().splitlines()[-1])


def serves(alias: str) -> Callable[[Any], bool]:
    """Whether a GET /v1/models body lists `alias`."""
    return lambda body: any(m["id"] == alias for m in body.get("data", []))


async def main(args: argparse.Namespace) -> None:
    from identity.accounts import add_user, issue_key
    from services.llm_worker.demo_model import make_demo_model

    levels = [int(x) for x in args.concurrency.split(",")]
    tmp = Path(tempfile.mkdtemp(prefix="chatbus-bench-"))
    model_dir = tmp / "model"
    make_demo_model(model_dir)
    raw: dict[int, float] = {}

    server = bus.EmbeddedServer(
        bus.ServerConfig(store_dir=tmp / "js", credentials=bus.Credentials.generate())
    )
    server.start()
    _URL[0] = server.url_for()
    children: list[processes.Child] = []
    try:
        nbus = await bus.connect(_URL[0], name="bench")
        await bus.declare_all(nbus.js)
        await add_user(nbus.js, "bench")
        _key_id, key = await issue_key(nbus.js, "bench")
        headers = {"Authorization": f"Bearer {key}"}
        port = bus.free_port()
        env = {
            **os.environ,
            "CHATBUS_NATS_URL": _URL[0],
            "CHATBUS_API_PORT": str(port),
            "CHATBUS_LOG_LEVEL": "WARNING",
            "PYTHONPATH": str(Path(__file__).resolve().parents[1]),
        }
        worker = ["worker", "--model", str(model_dir), "--alias", "demo", "--capacity", str(max(levels))]
        for command, log in (
            (["projector", "--db", str(tmp / "rm.duckdb")], "projector.log"),
            (["api"], "api.log"),
            (worker, "worker.log"),
        ):
            children.append(processes.start(processes.chatbus(*command), env=env, log=tmp / log))
        base = f"http://127.0.0.1:{port}"
        await processes.wait_http(f"{base}/readyz", watch=children)
        await processes.wait_http(
            f"{base}/v1/models", headers=headers, timeout=120, ready=serves("demo"), watch=children
        )
        await chatbus_round(base, headers, nbus, 1, 8)  # warm-up
        through: dict[int, float] = {}
        for level in levels:
            # Interleave the baseline and chatbus so drift in this machine's speed hits both alike.
            raw_runs, runs = [], []
            for _ in range(args.repeat):
                raw_runs.append(await asyncio.to_thread(_raw_in_child, model_dir, level, args.tokens))
                runs.append(await chatbus_round(base, headers, nbus, level, args.tokens))
            raw[level], through[level] = statistics.median(raw_runs), statistics.median(runs)
            console.print(
                f"{level} concurrent: raw {[round(x) for x in raw_runs]}, "
                f"chatbus {[round(x) for x in runs]} tokens/s"
            )

        raw_lat = await raw_nats_latency(nbus, args.rate, args.latency_seconds)
        ws_lat = await ws_latency(base, headers, nbus, args.rate, args.latency_seconds)
        await nbus.close()
    finally:
        processes.stop(children)
        server.stop()

    table = Table(
        title=f"chatbus end to end ({args.tokens} new tokens per reply, demo model, {os.cpu_count()} cores)"
    )
    for column in ("measure", "raw baseline", "chatbus", "ratio"):
        table.add_column(column, justify="right")
    for level in levels:
        table.add_row(
            f"tokens/s, {level} concurrent chats",
            f"{raw[level]:.0f}",
            f"{through[level]:.0f}",
            f"{through[level] / raw[level]:.2f}",
        )
    for name, q in (("p50", 0.5), ("p99", 0.99)):
        r, w = _percentile(raw_lat, q), _percentile(ws_lat, q)
        table.add_row(
            f"token latency {name} ms (publish -> client) @ {args.rate:.0f}/s",
            f"{r:.2f}",
            f"{w:.2f}",
            f"{w / r:.1f}x",
        )
    table.add_row(
        "token latency median ms", f"{statistics.median(raw_lat):.2f}", f"{statistics.median(ws_lat):.2f}", ""
    )
    console.print(table)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--tokens", type=int, default=256, help="new tokens per reply (every reply generates all)"
    )
    parser.add_argument("--concurrency", default="1,4,16")
    parser.add_argument(
        "--rate", type=float, default=1000.0, help="token deltas per second for the latency run"
    )
    parser.add_argument("--latency-seconds", type=float, default=3.0)
    parser.add_argument("--repeat", type=int, default=5, help="runs per measure; the table shows medians")
    asyncio.run(main(parser.parse_args()))
