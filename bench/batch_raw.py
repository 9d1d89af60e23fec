"""The raw-engine baseline of bench_batch.py: the same prompts through ContinuousBatchingEngine in-process.

    python bench/batch_raw.py MODEL_DIR --threads 2/1

Loads the engine as the worker builds it (bench/openai_raw.py's `engine_config`), warms it up, prints
`ready`, then answers one JSON line per run on stdin with one JSON line on stdout:

    {"prompts": ["...", ...], "tokens": 16, "window": 16}
    -> {"jobs": 1000, "completion": 16000, "wall": s, "cpu": s}

At most `window` requests are in the engine at once (0: every prompt submitted at once, the engine's own
scheduler admits what its KV cache holds); a finished request's slot is refilled at once, from the engine's
thread. Every request has GenerationParams(max_new_tokens=tokens, ignore_eos=True) and chatbus's default
sampling. `wall` runs from the first submit to the last finish; `cpu` is this process's CPU time over it.
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.openai_raw import TEMPERATURE, TOP_K, TOP_P, engine_config  # noqa: E402
from services.llm_worker.continuous_batching import ContinuousBatchingEngine  # noqa: E402
from services.llm_worker.engine import EngineOutput, GenerationParams, Prompt  # noqa: E402


def run(engine: ContinuousBatchingEngine, texts: list[str], tokens: int, window: int, tag: str) -> dict:
    """Every prompt through the engine, at most `window` at once; totals and the wall/CPU time.

    The prompts are rendered by the chat template inside the timed run (chatbus's worker does that work
    too), all first: rendering on the engine's thread would slow its steps.
    """
    params = GenerationParams(
        max_new_tokens=tokens, temperature=TEMPERATURE, top_p=TOP_P, top_k=TOP_K, ignore_eos=True
    )
    lock, done = threading.Lock(), threading.Event()
    state = {"next": 0, "finished": 0, "completion": 0}
    window = window or len(texts)

    def submit_next() -> None:  # with `lock` held
        i = state["next"]
        if i < len(texts):
            state["next"] = i + 1
            engine.submit(f"{tag}-{i}", prompts[i], params, on_output)

    def on_output(output: EngineOutput) -> None:
        if not output.finished:
            return
        with lock:
            if output.error:
                print(f"{output.request_id} failed: {output.error}", file=sys.stderr, flush=True)
            state["completion"] += output.completion_tokens
            state["finished"] += 1
            if state["finished"] == len(texts):
                done.set()
            else:
                submit_next()

    cpu, start = time.process_time(), time.perf_counter()
    prompts: list[Prompt] = [engine.build_prompt([{"role": "user", "content": text}]) for text in texts]
    with lock:
        for _ in range(min(window, len(texts))):
            submit_next()
    if not done.wait(timeout=7200):
        raise RuntimeError("the engine did not finish within 2 hours")
    wall = time.perf_counter() - start
    return {
        "jobs": len(texts),
        "completion": state["completion"],
        "wall": wall,
        "cpu": time.process_time() - cpu,
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("model_dir")
    parser.add_argument("--threads", default="2/1", help="torch threads; 2/1: 2, and 1 on small steps")
    args = parser.parse_args()
    big, _, small = args.threads.partition("/")
    engine = ContinuousBatchingEngine.from_pretrained(
        args.model_dir, engine_config(int(big), int(small or 0))
    )
    engine.start()
    try:
        warm = ["Say hello."] * 4
        run(engine, warm, 8, 0, "warm")
        print(json.dumps({"ready": True}), flush=True)
        for number, line in enumerate(sys.stdin):
            if not line.strip():
                continue
            job = json.loads(line)
            print(
                json.dumps(run(engine, job["prompts"], int(job["tokens"]), int(job["window"]), f"r{number}")),
                flush=True,
            )
    finally:
        engine.stop()


if __name__ == "__main__":
    main()
