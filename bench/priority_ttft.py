"""First-token time of one foreground request while N background requests decode, with the engine's
priority scheduler (services/llm_worker/priority.py) and with transformers' FIFO, engine-level (no bus).

Rounds alternate the two schedulers (so a busy neighbour slows both alike); medians are printed.
    python bench/priority_ttft.py --model demo-text --background 15 --rounds 7
    python bench/priority_ttft.py --model smollm2-135m-instruct --background 15 --rounds 5
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from services.llm_worker.continuous_batching import ContinuousBatchingEngine  # noqa: E402
from services.llm_worker.engine import EngineConfig, EngineOutput, GenerationParams  # noqa: E402
from services.llm_worker.main import locate_model  # noqa: E402

BACKGROUND = [{"role": "user", "content": "Write a long essay about the history of lighthouses."}]
PERSON = [{"role": "user", "content": "Hello! In one sentence, what is a lighthouse for? Please be brief."}]


def one_round(model_dir: str, priority: bool, background: int, threads: int) -> tuple[float, int]:
    """(ms from submit to the foreground's first tokens, engine steps in between)."""
    engine = ContinuousBatchingEngine.from_pretrained(
        model_dir, EngineConfig(priority=priority, num_threads=threads)
    )
    engine.start()
    lock = threading.Lock()
    decoding: set[str] = set()
    all_decoding, first = threading.Event(), threading.Event()
    if not background:  # the idle baseline
        all_decoding.set()
    seen: dict[str, float | int] = {}

    def on_background(output: EngineOutput) -> None:
        with lock:
            if output.new_token_ids:
                decoding.add(output.request_id)
                if len(decoding) == background:
                    all_decoding.set()

    def on_person(output: EngineOutput) -> None:
        if output.new_token_ids and not first.is_set():
            seen["at"], seen["steps"] = time.perf_counter(), sum(engine.steps_on_threads.values())
            first.set()

    try:
        batch_prompt = engine.build_prompt(BACKGROUND)
        long = GenerationParams(max_new_tokens=400, temperature=0.0, ignore_eos=True)
        for i in range(background):
            engine.submit(f"bg{i}", batch_prompt, long, on_background, background=True)
        assert all_decoding.wait(300)
        time.sleep(0.2)  # a few plain decode steps
        prompt = engine.build_prompt(PERSON)
        steps = sum(engine.steps_on_threads.values())
        began = time.perf_counter()
        engine.submit("person", prompt, GenerationParams(max_new_tokens=4, temperature=0.0), on_person)
        assert first.wait(300)
        return (float(seen["at"]) - began) * 1000.0, int(seen["steps"]) - steps
    finally:
        engine.stop()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--model",
        default="demo-text",
        help="a model directory or a built-in name (demo-text, smollm2-135m-instruct)",
    )
    parser.add_argument("--background", type=int, default=15)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1, help="torch threads of the engine (default 1)")
    args = parser.parse_args()
    cache = Path(tempfile.gettempdir()) / "chatbus-bench-models"
    model_dir = str(locate_model(args.model, cache))
    results: dict[bool, list[tuple[float, int]]] = {True: [], False: []}
    for _ in range(args.rounds):
        for priority in (True, False):
            results[priority].append(one_round(model_dir, priority, args.background, args.threads))
    for priority, rows in results.items():
        ms = [r[0] for r in rows]
        steps = [r[1] for r in rows]
        print(
            f"{'priority' if priority else 'fifo    '}: TTFT median {statistics.median(ms):7.1f} ms "
            f"(min {min(ms):.1f}, max {max(ms):.1f}), steps median {statistics.median(steps)} "
            f"over {len(rows)} rounds, {args.background} background decoding"
        )


if __name__ == "__main__":
    main()
