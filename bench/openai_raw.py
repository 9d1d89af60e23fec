"""The raw-engine path of bench_openai.py: ContinuousBatchingEngine driven in-process, in a child process.

    python bench/openai_raw.py MODEL_DIR --threads 1      # or 2/1: 2 threads, 1 on steps of < 8 tokens

Loads the engine once (EngineConfig as the worker builds it from WorkerSettings' defaults), warms it up,
prints `ready`, then answers one JSON line per round on stdin with one JSON line on stdout:

    {"messages": [[{"role": "user", "content": "..."}], ...], "tokens": 128, "temperature": 0.7, ...}
    -> {"completion": [128, ...], "prompt": [40, ...], "ttft": [s, ...], "wall": s}

Every request is submitted at once with GenerationParams(max_new_tokens=tokens, ignore_eos=True) and the
sampling the other paths use; `wall` runs from the first submit to the last token. EOF on stdin ends it.
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from services.llm_worker.continuous_batching import ContinuousBatchingEngine  # noqa: E402
from services.llm_worker.engine import EngineConfig, EngineOutput, GenerationParams  # noqa: E402
from services.llm_worker.engine_choice import CPU_KV_BLOCKS, transformers_choice  # noqa: E402
from services.llm_worker.settings import WorkerSettings  # noqa: E402

# Sampling when a job names none: chatbus's SamplingParams defaults (bench_openai.py sends them anyway).
TEMPERATURE, TOP_P, TOP_K = 0.7, 0.95, 50


def engine_config(threads: int, small_step_threads: int = 0) -> EngineConfig:
    """The worker's engine configuration (run_worker builds it from WorkerSettings), with these threads."""
    defaults = WorkerSettings(model="")
    choice = transformers_choice(defaults.dtype, defaults.quantization, device_type="cpu")
    return EngineConfig(
        num_blocks=defaults.kv_blocks or CPU_KV_BLOCKS,
        page_size=defaults.kv_page_size,
        max_batch_tokens=defaults.max_batch_tokens,
        num_threads=threads or None,
        small_step_threads=small_step_threads,
        device=defaults.device,
        dtype=choice.dtype,
        quantization=choice.quantization,
    )


def run_round(
    engine: ContinuousBatchingEngine,
    conversations: list[list[dict]],
    tokens: int,
    tag: str,
    **sampling: float,
) -> dict:
    """Submit every conversation at once; wait for all to finish; per-request TTFT and counts."""
    n = len(conversations)
    lock, done = threading.Lock(), threading.Event()
    sent = [0.0] * n
    first: list[float | None] = [None] * n
    completion, prompt = [0] * n, [0] * n
    last = [0.0]
    finished = [0]

    def callback(i: int):
        def on_output(output: EngineOutput) -> None:
            now = time.perf_counter()
            with lock:
                if output.new_token_ids and first[i] is None:
                    first[i] = now
                if output.new_token_ids:
                    last[0] = max(last[0], now)
                if output.finished:
                    if output.error:
                        print(f"request {i} failed: {output.error}", file=sys.stderr, flush=True)
                    completion[i], prompt[i] = output.completion_tokens, output.prompt_tokens
                    finished[0] += 1
                    if finished[0] == n:
                        done.set()

        return on_output

    params = GenerationParams(
        max_new_tokens=tokens,
        temperature=float(sampling.get("temperature", TEMPERATURE)),
        top_p=float(sampling.get("top_p", TOP_P)),
        top_k=int(sampling.get("top_k", TOP_K)),
        ignore_eos=True,
    )
    start = time.perf_counter()
    for i, messages in enumerate(conversations):
        sent[i] = time.perf_counter()
        engine.submit(f"{tag}-{i}", engine.build_prompt(messages), params, callback(i))
    if not done.wait(timeout=1800):
        raise RuntimeError("the engine did not finish within 1800 s")
    return {
        "completion": completion,
        "prompt": prompt,
        "ttft": [(f or last[0]) - s for f, s in zip(first, sent, strict=True)],
        "wall": last[0] - start,
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("model_dir")
    parser.add_argument(
        "--threads", default="1", help="torch threads (0: torch's default); 2/1: 2, and 1 on small steps"
    )
    args = parser.parse_args()
    big, _, small = args.threads.partition("/")
    config = engine_config(int(big), int(small or 0))
    engine = ContinuousBatchingEngine.from_pretrained(args.model_dir, config)
    engine.start()
    try:
        warm = [[{"role": "user", "content": "Say hello."}]]
        run_round(engine, warm, 8, "warm-a")
        run_round(engine, warm * 4, 8, "warm-b")
        import torch

        print(json.dumps({"ready": True, "threads": torch.get_num_threads()}), flush=True)
        for number, line in enumerate(sys.stdin):
            if not line.strip():
                continue
            job = json.loads(line)
            sampling = {k: job[k] for k in ("temperature", "top_p", "top_k") if k in job}
            result = run_round(engine, job["messages"], int(job["tokens"]), f"r{number}", **sampling)
            print(json.dumps(result), flush=True)
    finally:
        engine.stop()


if __name__ == "__main__":
    main()
