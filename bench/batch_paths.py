"""What bench_batch.py measures: the raw engine's runs, chatbus's jobs and batch runs, the TTFT probes."""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

import schemas
from bench.openai_measure import Threads, console, tree_cpu
from bench.openai_stacks import ROOT, Chatbus, base_env
from schemas.chat import ReplyCompleted, ReplyFailed
from schemas.subjects import ANY, reply_event

HTTP_IN_FLIGHT = 64


def prompts(count: int, round_no: int) -> list[str]:
    return [f"Write one sentence about the number {round_no * 100_000 + i}." for i in range(count)]


@dataclass
class Run:
    path: str
    jobs: int
    tokens: int
    wall: float
    cpu_by: dict[str, float]  # CPU seconds of each process of the path over the run
    ttft: list[float] = field(default_factory=list)

    @property
    def cpu(self) -> float:
        return sum(self.cpu_by.values())

    @property
    def rate(self) -> float:
        return self.tokens / self.wall

    @property
    def jobs_rate(self) -> float:
        return self.jobs / self.wall


class RawChild:
    """bench/batch_raw.py in a child process: one JSON line per run."""

    def __init__(self, model_dir: Path, threads: Threads, log: Path) -> None:
        args = [
            sys.executable,
            str(ROOT / "bench" / "batch_raw.py"),
            str(model_dir),
            "--threads",
            threads.spec,
        ]
        self.log = open(log, "wb")  # noqa: SIM115 - open for the child's life
        self.proc: asyncio.subprocess.Process | None = None
        self.args = args

    async def start(self) -> None:
        self.proc = await asyncio.create_subprocess_exec(
            *self.args,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=self.log,
            env=base_env(),
        )
        await self._line()

    async def _line(self) -> dict[str, Any]:
        assert self.proc is not None and self.proc.stdout is not None
        line = await self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"the raw engine exited; see {self.log.name}")
        return json.loads(line)

    async def run(self, texts: list[str], tokens: int, window: int) -> Run:
        assert self.proc is not None and self.proc.stdin is not None
        self.proc.stdin.write(
            (json.dumps({"prompts": texts, "tokens": tokens, "window": window}) + "\n").encode()
        )
        await self.proc.stdin.drain()
        out = await self._line()
        return Run(
            f"raw W={window or 'all'}", out["jobs"], out["completion"], out["wall"], {"engine": out["cpu"]}
        )

    async def close(self) -> None:
        if self.proc is not None and self.proc.stdin is not None:
            self.proc.stdin.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.proc.wait(), 30)


class Ends:
    """Every reply end seen on the bus: when, and how many tokens."""

    def __init__(self) -> None:
        self.at: dict[str, float] = {}
        self.tokens: dict[str, int] = {}
        self.changed = asyncio.Event()

    async def subscribe(self, stack: Chatbus) -> None:
        async def on_end(msg: Any) -> None:
            event = schemas.decode_event(msg.data)
            if not isinstance(event, ReplyCompleted | ReplyFailed):
                return
            self.at.setdefault(event.reply_id, time.perf_counter())
            if isinstance(event, ReplyCompleted):
                self.tokens[event.reply_id] = event.completion_tokens
            self.changed.set()

        for kind in ("completed", "failed"):
            await stack.nbus.nc.subscribe(reply_event(ANY, ANY, kind), cb=on_end)  # type: ignore[arg-type]

    async def wait(self, replies: set[str], timeout: float = 7200) -> float:
        """The time of the last end of `replies`."""
        deadline = time.monotonic() + timeout
        while not replies <= self.at.keys():
            self.changed.clear()
            if time.monotonic() > deadline:
                raise TimeoutError(f"{len(replies - self.at.keys())} jobs did not end")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.changed.wait(), 5)
        return max(self.at[r] for r in replies)


async def ttft_probe(http: aiohttp.ClientSession, base: str, alias: str, n: int) -> float:
    """One streamed chat completion (8 tokens): seconds to the first chunk carrying text."""
    body = {
        "model": alias,
        "messages": [{"role": "user", "content": f"Say hello to visitor {n}."}],
        "stream": True,
        "max_tokens": 8,
        "ignore_eos": True,
    }
    start = time.perf_counter()
    first = None
    async with http.post(f"{base}/v1/chat/completions", json=body) as resp:
        resp.raise_for_status()
        async for raw in resp.content:
            line = raw.decode().strip()
            if first is None and line.startswith("data: {"):
                choices = json.loads(line[6:]).get("choices") or [{}]
                if choices[0].get("delta", {}).get("content"):
                    first = time.perf_counter() - start
    if first is None:
        raise RuntimeError("a probe streamed no text")
    return first


async def probes(
    http: aiohttp.ClientSession, base: str, alias: str, count: int, until: asyncio.Event | None
) -> list[float]:
    out: list[float] = []
    for n in range(count):
        if until is not None and until.is_set():
            break
        out.append(await ttft_probe(http, base, alias, n))
        await asyncio.sleep(1.0)
    return out


def chatbus_pids(stack: Chatbus, batches: Any) -> dict[str, int]:
    """chatbus's processes by name (start_chatbus starts the projector, then the API)."""
    assert stack.server.process is not None
    projector, api = stack.services
    (worker,) = stack.workers.values()
    named = {"nats": stack.server.process, "projector": projector, "api": api, "worker": worker}
    return {**{name: p.pid for name, p in named.items()}, "batches": batches.pid}


def cpu_of(pids: dict[str, int]) -> dict[str, float]:
    """CPU seconds of each named process (and its children) so far."""
    return {name: tree_cpu([pid]) for name, pid in pids.items()}


def spent(before: dict[str, float], pids: dict[str, int]) -> dict[str, float]:
    after = cpu_of(pids)
    return {name: after[name] - before[name] for name in pids}


async def jobs_run(
    http: aiohttp.ClientSession,
    stack: Chatbus,
    alias: str,
    texts: list[str],
    tokens: int,
    ends: Ends,
    pids: dict[str, int],
) -> Run:
    gate = asyncio.Semaphore(HTTP_IN_FLIGHT)
    params = {"max_new_tokens": tokens, "ignore_eos": True}

    refused: list[str] = []  # 503s ("retry shortly"), retried after a pause as a client should

    async def submit(text: str) -> str:
        for attempt in range(20):
            async with (
                gate,
                http.post(
                    f"{stack.base}/v1/jobs", json={"input": text, "model": alias, "params": params}
                ) as resp,
            ):
                body = await resp.json()
                if resp.status == 202:
                    return str(body["job_id"]).partition("-")[2]
                if resp.status != 503:
                    raise RuntimeError(f"POST /v1/jobs: {resp.status} {body}")
                refused.append(str(body.get("message")))
            await asyncio.sleep(0.2 * (attempt + 1))
        raise RuntimeError(f"POST /v1/jobs: 503 twenty times: {refused[-1]}")

    cpu, start = cpu_of(pids), time.perf_counter()
    replies = set(await asyncio.gather(*(submit(t) for t in texts)))
    if refused:
        console.print(f"[yellow]POST /v1/jobs answered 503 {len(refused)} times (retried): {refused[0]}[/]")
    last = await ends.wait(replies)
    return Run(
        "chatbus jobs",
        len(replies),
        sum(ends.tokens.get(r, 0) for r in replies),
        last - start,
        spent(cpu, pids),
    )


async def batch_run(
    http: aiohttp.ClientSession,
    stack: Chatbus,
    alias: str,
    texts: list[str],
    tokens: int,
    ends: Ends,
    pids: dict[str, int],
    n_probes: int,
) -> Run:
    lines = [
        json.dumps(
            {
                "custom_id": f"line-{i}",
                "method": "POST",
                "url": "/v1/chat/completions",
                "body": {
                    "model": alias,
                    "messages": [{"role": "user", "content": t}],
                    "max_tokens": tokens,
                    "ignore_eos": True,
                },
            }
        )
        for i, t in enumerate(texts)
    ]
    cpu, start = cpu_of(pids), time.perf_counter()
    async with http.post(
        f"{stack.base}/v1/batches",
        data="\n".join(lines).encode(),
        headers={"Content-Type": "application/jsonl"},
    ) as resp:
        batch = await resp.json()
        if resp.status != 200:
            raise RuntimeError(f"POST /v1/batches: {resp.status} {batch}")
    done = asyncio.Event()
    probing = asyncio.create_task(probes(http, stack.base, alias, n_probes, done))
    while True:  # the lines' replies are the ends that were not there before, until the batch completes
        async with http.get(f"{stack.base}/v1/batches/{batch['id']}") as resp:
            state = await resp.json()
        if state["status"] in ("completed", "failed", "expired", "cancelled"):
            break
        await asyncio.sleep(1.0)
    done.set()
    ttft = await probing
    async with http.get(f"{stack.base}/v1/batches/{batch['id']}/output") as resp:
        out = [json.loads(line) for line in (await resp.read()).splitlines() if line.strip()]
    ids = [o["custom_id"] for o in out]
    if sorted(ids) != sorted(f"line-{i}" for i in range(len(texts))):
        console.print(
            f"[red]the output holds {len(ids)} lines, {len(set(ids))} custom_ids, of {len(texts)}[/]"
        )
    completion = sum(o["response"]["body"]["usage"]["completion_tokens"] for o in out)
    replies = {str(o["response"]["request_id"]).partition("-")[2] for o in out}  # request_id: the job id
    last = await ends.wait(replies)
    name = "chatbus batch, a person chatting" if n_probes else "chatbus batch"
    return Run(name, len(out), completion, last - start, spent(cpu, pids), ttft)
