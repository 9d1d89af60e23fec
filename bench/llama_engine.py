"""In-process throughput of the llama.cpp engine (tokens/s at 1, 4, 16 replies at once, greedy) against
llama-cpp-python's own high-level `Llama` generating one stream: the "llama.cpp alone" limit.

    PYTHONPATH=. .venv/bin/python bench/llama_engine.py [--tokens 128] [--threads 0] [--rounds 2] [--float16]
"""

from __future__ import annotations

import argparse
import os
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
    parser.add_argument("--rounds", type=int, default=4, help="best of this many runs per figure")
    parser.add_argument("--float16", action="store_true", help="the float16 copy of the GGUF (both sides)")
    args = parser.parse_args()
    path = str(builtin_gguf("smollm2-135m-instruct"))
    if args.float16:
        from services.llm_worker.gguf_float16 import float16_gguf

        path = str(float16_gguf(path, Path(tempfile.gettempdir()) / "chatbus-bench-llama"))
    threads = args.threads or os.cpu_count() or 1
    engine = LlamaCppEngine.from_gguf(path, LlamaConfig(slots=16, slot_context=1024, threads=threads))
    engine.start()
    try:
        run_engine(engine, 1, 8)  # warm up
        # Alternating, best of `rounds` each: the machine's other work moves single runs a lot.
        alone, rates = 0.0, dict.fromkeys((1, 4, 16), 0.0)
        for _ in range(args.rounds):
            alone = max(alone, run_llama_alone(path, args.tokens, threads))
            for concurrency in rates:
                rates[concurrency] = max(rates[concurrency], run_engine(engine, concurrency, args.tokens))
    finally:
        engine.stop()
    print(f"llama.cpp alone (Llama.generate), 1 stream: {alone:.1f} tokens/s")
    for concurrency, rate in rates.items():
        share = rate / alone
        print(f"chatbus llama.cpp engine, {concurrency:2d} at once: {rate:.1f} tokens/s ({share:.2f}x)")


if __name__ == "__main__":
    main()
