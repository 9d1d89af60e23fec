"""One prefill of bench_openai.py's prompt, in isolation: the engine's step against a plain forward.

    python bench/prefill.py [MODEL_DIR] [--runs 15] [--threads 1,2]

MODEL_DIR defaults to the model bench_openai.py converts (~/.cache/chatbus-bench, made by a first run of
it). Interleaved, medians of --runs (--threads: the plain forwards' torch threads):

- engine: ContinuousBatchingEngine as the worker builds it on this machine (all cores for a prefill, 1
  thread on small steps), submit -> first token of a fresh request (its first 32-token block comes from
  the prefix cache, as in the bench).
- forward: the same model's plain forward (DynamicCache, sdpa) over the same prompt's uncached tokens
  after its cached first block, logits of the last token only: what the step costs without the manager.
- forward, whole prompt: every token of the prompt (no prefix cache).

Wall and CPU (this process) per prefill. It measured here: the engine's step within ~5 ms of the plain
forward; the matrix products are ~80% of it, attention (sdpa) ~3 ms, the paged cache's copies ~1 ms.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import torch
from transformers import DynamicCache

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.openai_measure import PROMPT  # noqa: E402
from bench.openai_raw import engine_config  # noqa: E402
from services.llm_worker.continuous_batching import ContinuousBatchingEngine  # noqa: E402
from services.llm_worker.engine import EngineOutput, GenerationParams  # noqa: E402

CACHED = 32  # the engine's page size: one full block of the prompt is shared with earlier requests


def messages(i: int) -> list[dict[str, str]]:
    return [{"role": "user", "content": f"{PROMPT} (Story {i}.1.0.)"}]


def engine_ttft(engine: ContinuousBatchingEngine, i: int) -> tuple[float, float]:
    """Wall and CPU seconds from submitting a fresh request to its first token. It asks for two tokens: a
    request that ends at its prefill leaves nothing in the prefix cache (the next one would miss it)."""
    first: list[tuple[float, float]] = []
    done = threading.Event()

    def on_output(output: EngineOutput) -> None:
        if output.new_token_ids and not first:
            first.append((time.perf_counter(), time.process_time()))
        if output.finished:
            done.set()

    params = GenerationParams(max_new_tokens=2, temperature=0.7)
    prompt = engine.build_prompt(messages(i))
    wall, cpu = time.perf_counter(), time.process_time()
    engine.submit(f"prefill-{i}", prompt, params, on_output)
    done.wait()
    return first[0][0] - wall, first[0][1] - cpu


def forward(engine: ContinuousBatchingEngine, i: int, cached: int) -> Callable[[], None]:
    """A plain forward over the prompt's tokens after its first `cached` ones (those are prefilled first)."""
    ids = torch.tensor([engine.build_prompt(messages(i)).input_ids])
    cache = DynamicCache(config=engine.model.config)
    with torch.inference_mode():
        if cached:
            engine.model(ids[:, :cached], past_key_values=cache, use_cache=True, logits_to_keep=1)

    def run() -> None:
        with torch.inference_mode():
            engine.model(ids[:, cached:], past_key_values=cache, use_cache=True, logits_to_keep=1)

    return run


def timed(action: Callable[[], None]) -> tuple[float, float]:
    cpu, wall = time.process_time(), time.perf_counter()
    action()
    return time.perf_counter() - wall, time.process_time() - cpu


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    default = next(iter(sorted(Path("~/.cache/chatbus-bench").expanduser().glob("gguf-*/"))), None)
    parser.add_argument("model_dir", nargs="?", default=str(default) if default else None)
    parser.add_argument("--runs", type=int, default=15)
    parser.add_argument("--threads", default="1,2", help="torch threads of the prefill, comma-separated")
    args = parser.parse_args()
    if not args.model_dir:
        parser.error("no model: run bench/bench_openai.py once, or name a model directory")
    counts = [int(t) for t in args.threads.split(",")]
    # As the worker runs on 2 cores: all cores for a step of >= 8 tokens (a prefill), 1 for small ones.
    engine = ContinuousBatchingEngine.from_pretrained(args.model_dir, engine_config(0, 1))
    engine.start()
    tokens = len(engine.build_prompt(messages(0)).input_ids)
    print(f"prompt: {tokens} tokens; {CACHED} of them cached for the engine and the first forward")
    results: dict[str, list[tuple[float, float]]] = {}
    label = f"engine ({torch.get_num_threads()} threads, 1 on small steps)"
    try:
        for i in range(-3, args.runs):  # the first three warm up
            samples = {label: engine_ttft(engine, i)}
            for threads in counts:
                torch.set_num_threads(threads)  # this thread's, for the plain forwards
                samples[f"forward, {threads} thread(s)"] = timed(forward(engine, i, CACHED))
                samples[f"forward, whole prompt, {threads} thread(s)"] = timed(forward(engine, i, 0))
            for name, sample in samples.items():
                if i >= 0:
                    results.setdefault(name, []).append(sample)
    finally:
        engine.stop()
    for name, samples in results.items():
        wall = statistics.median(w for w, _ in samples) * 1000
        cpu = statistics.median(c for _, c in samples) * 1000
        print(f"{name:<40} wall {wall:7.1f} ms   CPU {cpu:7.1f} ms")


if __name__ == "__main__":
    main()
