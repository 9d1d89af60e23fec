"""In-process throughput of the llama.cpp engine (tokens/s at 1, 4, 16 replies at once, greedy) in several
settings, against llama-cpp-python's own high-level `Llama` generating one stream ("llama.cpp alone").

    PYTHONPATH=. .venv/bin/python bench/llama_engine.py [--tokens 128] [--threads 0] [--rounds 3]
        [--settings default,before,...]

The settings take turns, each round loading each one afresh; the figures are medians of the rounds (the
machine is shared: single runs move a lot).
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from services.llm_worker.engine import EngineOutput, GenerationParams  # noqa: E402
from services.llm_worker.llama_engine import LlamaConfig, LlamaCppEngine  # noqa: E402
from services.llm_worker.sources import builtin_gguf  # noqa: E402

PROMPT = "Tell me a short story about a lighthouse keeper."

# Settings compared (LlamaConfig fields); "default" is what the worker runs the built-in model with.
SETTINGS: dict[str, dict[str, object]] = {
    "default": {"weights": "bfloat16"},
    "before": {"weights": "float16", "flash_attention": False},
    "float16": {"weights": "float16"},
    "bfloat16-no-flash": {"weights": "bfloat16", "flash_attention": False},
    "float32": {"weights": "float32"},
    "file": {"weights": "file"},
}


def run_engine(engine: LlamaCppEngine, concurrency: int, new_tokens: int) -> float:
    """Tokens/s of `concurrency` greedy replies of `new_tokens` each, from submit to the last output."""
    done = threading.Semaphore(0)
    counts: dict[str, int] = {}

    def on_output(output: EngineOutput) -> None:
        counts[output.request_id] = output.completion_tokens
        if output.finished:
            done.release()

    params = GenerationParams(max_new_tokens=new_tokens, temperature=0.0, ignore_eos=True)
    prompts = [
        engine.build_prompt([{"role": "user", "content": f"{PROMPT} Variant {i}."}])
        for i in range(concurrency)
    ]
    started = time.perf_counter()
    for i, prompt in enumerate(prompts):
        engine.submit(f"r{i}", prompt, params, on_output)
    for _ in prompts:
        done.acquire()
    elapsed = time.perf_counter() - started
    assert all(count == new_tokens for count in counts.values()), counts
    return sum(counts.values()) / elapsed


def run_llama_alone(path: str, new_tokens: int, threads: int) -> float:
    """Tokens/s of llama-cpp-python's Llama generating one greedy stream (prompt included in the time)."""
    from llama_cpp import Llama

    llama = Llama(path, n_ctx=2048, n_batch=512, n_threads=threads, n_threads_batch=threads, verbose=False)
    prompt = llama.tokenize(
        f"<|im_start|>user\n{PROMPT}<|im_end|>\n<|im_start|>assistant\n".encode(), special=True
    )
    count = 0
    started = time.perf_counter()
    for _token in llama.generate(prompt, top_k=1, temp=0.0, reset=True):
        count += 1
        if count == new_tokens:
            break
    elapsed = time.perf_counter() - started
    llama.close()
    return count / elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokens", type=int, default=128)
    parser.add_argument("--threads", type=int, default=0, help="llama.cpp threads (0: all cores)")
    parser.add_argument("--rounds", type=int, default=3, help="median of this many runs per figure")
    parser.add_argument(
        "--settings", default="default,before", help=f"comma-separated, of: {', '.join(SETTINGS)}"
    )
    args = parser.parse_args()
    names = args.settings.split(",")
    unknown = [name for name in names if name not in SETTINGS]
    if unknown:
        parser.error(f"unknown settings {unknown}: expected some of {', '.join(SETTINGS)}")
    source = str(builtin_gguf("smollm2-135m-instruct"))
    cache = Path(tempfile.gettempdir()) / "chatbus-bench-llama"
    threads = args.threads or os.cpu_count() or 1
    base = LlamaConfig(slots=16, slot_context=1024, threads=threads)
    configs = {name: dataclasses.replace(base, **SETTINGS[name]) for name in names}  # type: ignore[arg-type]
    alone: list[float] = []
    rates: dict[str, dict[int, list[float]]] = {name: {1: [], 4: [], 16: []} for name in names}
    for _ in range(args.rounds):
        alone.append(run_llama_alone(source, args.tokens, threads))  # the file as it is
        for name, config in configs.items():
            engine = LlamaCppEngine.from_gguf(source, config, cache_dir=cache)
            engine.start()
            try:
                run_engine(engine, 1, 8)  # warm up
                for concurrency, runs in rates[name].items():
                    runs.append(run_engine(engine, concurrency, args.tokens))
            finally:
                engine.stop()
    limit = statistics.median(alone)
    print(f"llama.cpp alone (Llama.generate, the GGUF file), 1 stream: {limit:.1f} tokens/s")
    for name, config in configs.items():
        figures = ", ".join(f"{c}: {statistics.median(runs):.1f}" for c, runs in rates[name].items())
        one = statistics.median(rates[name][1]) / limit
        print(
            f"{name} (weights {config.weights}, flash attention {config.flash_attention}):"
            f" {figures} tokens/s; 1 stream {one:.2f}x alone"
        )


if __name__ == "__main__":
    main()
