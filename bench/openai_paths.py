"""The paths bench_openai.py compares, one way each to get completions (chatbus, transformers serve, the
raw engine), and one measured round of a path."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import subprocess
import sys
import time
from abc import ABC, abstractmethod
from collections.abc import Callable
from pathlib import Path
from typing import Any

from openai import AsyncOpenAI, AsyncStream

from bench.openai_measure import SETTLE_SECONDS, Result, StreamTiming, Threads, tree_cpu
from bench.openai_stacks import CHILDREN, ROOT, base_env, spawn

CHAT_ID_HEADER, REPLY_ID_HEADER = "X-Chatbus-Chat-Id", "X-Chatbus-Reply-Id"


TEMPERATURE, TOP_P, TOP_K = 0.7, 0.95, 50  # chatbus's SamplingParams defaults, sent to every path


class BenchPath(ABC):
    """One way to get completions; `pids` are the processes whose CPU it costs."""

    kind = ""
    label = ""

    def __init__(self, threads: Threads) -> None:
        self.threads = threads

    @property
    def name(self) -> str:
        return f"{self.label} ({self.threads.label})"

    @abstractmethod
    def pids(self) -> list[int]:
        """The processes whose CPU this path costs."""

    @abstractmethod
    async def round(self, convs: list[list[dict[str, str]]], tokens: int) -> Result:
        """Run every conversation at once, each to `tokens` new tokens."""

    async def close(self) -> None:  # noqa: B027 - most paths hold nothing to release
        """Release what the path holds (nothing, unless a subclass says otherwise)."""


class OpenAIPath(BenchPath):
    """A server with an OpenAI-compatible /v1/chat/completions, streamed with AsyncOpenAI."""

    def __init__(self, threads: Threads, base_url: str, api_key: str, model: str) -> None:
        super().__init__(threads)
        self.client = AsyncOpenAI(base_url=base_url, api_key=api_key, max_retries=0, timeout=1800)
        self.model = model
        self.processes: list[int] = []
        # Called at each stream's first content chunk, after its time is taken: the breakdown reads CPU there
        self.on_first: Callable[[], None] | None = None

    def pids(self) -> list[int]:
        return self.processes

    @abstractmethod
    def request(self, tokens: int) -> dict[str, Any]:
        """The extra request fields this server needs for full-length replies with usage."""

    async def one(self, messages: list[dict[str, str]], tokens: int) -> StreamTiming:
        timing = StreamTiming(sent=time.perf_counter())
        raw = await self.client.chat.completions.with_raw_response.create(
            model=self.model,
            messages=messages,  # type: ignore[arg-type]
            max_tokens=tokens,
            temperature=TEMPERATURE,
            top_p=TOP_P,
            stream=True,
            **self.request(tokens),
        )
        timing.chat_id = raw.headers.get(CHAT_ID_HEADER, "")
        timing.reply_id = raw.headers.get(REPLY_ID_HEADER, "")
        stream = raw.parse()
        assert isinstance(stream, AsyncStream)
        async for chunk in stream:
            now = time.perf_counter()
            if chunk.choices and chunk.choices[0].delta.content:
                if timing.first is None:
                    timing.first = now
                    if self.on_first is not None:
                        self.on_first()
                timing.last = now
            if chunk.usage is not None:
                timing.completion = chunk.usage.completion_tokens
                timing.prompt = chunk.usage.prompt_tokens
        timing.end = time.perf_counter()
        return timing

    async def round(self, convs: list[list[dict[str, str]]], tokens: int) -> Result:
        streams = await asyncio.gather(*(self.one(messages, tokens) for messages in convs))
        start = min(s.sent for s in streams)
        last = max((s.last or s.end) for s in streams)
        return Result(
            completion=[s.completion for s in streams],
            prompt=[s.prompt for s in streams],
            ttft=[(s.first or s.end) - s.sent for s in streams],
            wall=last - start,
            streams=list(streams),
        )

    async def close(self) -> None:
        await self.client.close()


class ChatbusPath(OpenAIPath):
    kind, label = "chatbus", "chatbus"

    def request(self, tokens: int) -> dict[str, Any]:
        return {"stream_options": {"include_usage": True}, "extra_body": {"ignore_eos": True}}


class ServePath(OpenAIPath):
    kind, label = "serve", "transformers serve"

    def request(self, tokens: int) -> dict[str, Any]:
        # transformers serve answers 422 to fields it does not know (ignore_eos), and sends usage in its last
        # chunk unasked (stream_options is ignored). Its `generation_config` field replaces the model's
        # generation config for the request: eos_token_id -1 is never sampled, so every reply runs to
        # max_tokens, exactly as the engine's ignore_eos does (it passes eos_token_id=-1 to add_request).
        config = {
            "do_sample": True,
            "temperature": TEMPERATURE,
            "top_p": TOP_P,
            "top_k": TOP_K,
            "max_new_tokens": tokens,
            "eos_token_id": -1,
        }
        return {"extra_body": {"generation_config": json.dumps(config)}}


class RawPath(BenchPath):
    """ContinuousBatchingEngine in a child process (bench/openai_raw.py), one JSON line per round."""

    kind, label = "raw", "raw engine"

    def __init__(self, threads: Threads, model_dir: Path, log: Path) -> None:
        super().__init__(threads)
        script = str(ROOT / "bench" / "openai_raw.py")
        self.child = spawn(
            [sys.executable, script, str(model_dir), "--threads", threads.spec],
            base_env(),
            log,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
        )

    async def ready(self) -> dict[str, Any]:
        return await self._read()

    async def _read(self) -> dict[str, Any]:
        assert self.child.stdout is not None
        line = await asyncio.to_thread(self.child.stdout.readline)
        if not line:
            raise RuntimeError(f"the raw engine ({self.threads.label}) exited; see its log")
        return json.loads(line)

    def pids(self) -> list[int]:
        return [self.child.pid]

    async def round(self, convs: list[list[dict[str, str]]], tokens: int) -> Result:
        assert self.child.stdin is not None
        job = {
            "messages": convs,
            "tokens": tokens,
            "temperature": TEMPERATURE,
            "top_p": TOP_P,
            "top_k": TOP_K,
        }
        self.child.stdin.write((json.dumps(job) + "\n").encode())
        self.child.stdin.flush()
        out = await self._read()
        return Result(completion=out["completion"], prompt=out["prompt"], ttft=out["ttft"], wall=out["wall"])

    async def close(self) -> None:
        """EOF ends the child after its round; processes.stop() (SIGTERM) ends one still in a round."""
        if self.child.stdin is not None:
            with contextlib.suppress(OSError):
                self.child.stdin.close()


async def measure(path: BenchPath, convs: list[list[dict[str, str]]], tokens: int) -> Result:
    """One round; CPU of the path's process trees, of the other paths' (idle) ones and of this client."""
    others = [c.pid for c in CHILDREN if c.pid not in path.pids()]
    cpu0, other0, client0 = tree_cpu(path.pids()), tree_cpu(others), os.times()
    result = await path.round(convs, tokens)
    await asyncio.sleep(SETTLE_SECONDS)
    client1 = os.times()
    result.cpu = tree_cpu(path.pids()) - cpu0
    result.background_cpu = tree_cpu(others) - other0
    result.client_cpu = (client1.user - client0.user) + (client1.system - client0.system)
    short = [c for c in result.completion if c != tokens]
    if short:
        raise RuntimeError(f"{path.name}: {len(short)} replies were not {tokens} tokens long: {short}")
    return result
