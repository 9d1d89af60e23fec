"""In-process throughput of the raw ContinuousBatchingManager and of ContinuousBatchingEngine (tokens/s)."""

from __future__ import annotations

import argparse
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from services.llm_worker.continuous_batching import (  # noqa: E402
    ContinuousBatchingEngine,
    sampling_generation_config,
    sampling_kwargs,
)
from services.llm_worker.demo_model import make_demo_model  # noqa: E402
from services.llm_worker.engine import EngineConfig, EngineOutput, GenerationParams, Prompt  # noqa: E402

PROMPT = [{"role": "user", "content": "Tell me a short story about a lighthouse keeper."}]


def _prompts(tokenizer: Any, concurrency: int) -> list[list[int]]:
    """One distinct chat prompt per request, so prefix sharing does not flatter the numbers."""
    prompts = []
    for i in range(concurrency):
        messages = [{"role": "user", "content": f"{PROMPT[0]['content']} Variant {i}."}]
        prompts.append(
            list(tokenizer.apply_chat_template(messages, add_generation_prompt=True, return_dict=False))
        )
    return prompts


def run_raw_manager(model_dir: str, concurrency: int, new_tokens: int, config: EngineConfig) -> float:
    """Drive ContinuousBatchingManager directly (streaming, same config as the engine) and return tokens/s."""
    if config.num_threads is not None:
        torch.set_num_threads(config.num_threads)
    tokenizer = AutoTokenizer.from_pretrained(model_dir, local_files_only=True)
    model = AutoModelForCausalLM.from_pretrained(
        model_dir, local_files_only=True, attn_implementation=config.attn_implementation
    ).eval()
    params = GenerationParams(max_new_tokens=new_tokens, ignore_eos=True)
    manager = model.init_continuous_batching(
        generation_config=sampling_generation_config(model.generation_config, params),
        continuous_batching_config=config.to_cb_config(),
    )
    kwargs = sampling_kwargs(params, model.config.vocab_size)
    prompts = _prompts(tokenizer, concurrency)
    manager.start()
    try:
        _raw_round(manager, prompts[:1], 8, kwargs, "warmup")
        start = time.perf_counter()
        tokens = _raw_round(manager, prompts, new_tokens, kwargs, "bench")
        return tokens / (time.perf_counter() - start)
    finally:
        manager.stop(block=True)
        manager.destroy()


def _raw_round(manager: Any, prompts: list[list[int]], new_tokens: int, kwargs: dict, tag: str) -> int:
    """Submit all prompts, read the output queue until all finish, return the number of generated tokens."""
    for i, ids in enumerate(prompts):
        manager.add_request(
            ids, request_id=f"{tag}-{i}", max_new_tokens=new_tokens, streaming=True, eos_token_id=-1, **kwargs
        )
    finished, tokens = 0, 0
    while finished < len(prompts):
        output = manager.get_result(timeout=60)
        if output is None:
            raise RuntimeError("manager produced no output for 60 s")
        if output.is_finished():
            finished += 1
            tokens += len(output.generated_tokens)
    return tokens


def run_engine(model_dir: str, concurrency: int, new_tokens: int, config: EngineConfig) -> float:
    """Drive ContinuousBatchingEngine with the same workload and return tokens/s."""
    engine = ContinuousBatchingEngine.from_pretrained(model_dir, config)
    prompts = _prompts(engine.tokenizer, concurrency)
    engine.start()
    try:
        _engine_round(engine, prompts[:1], 8, "warmup")
        start = time.perf_counter()
        tokens = _engine_round(engine, prompts, new_tokens, "bench")
        return tokens / (time.perf_counter() - start)
    finally:
        engine.stop()


def _engine_round(
    engine: ContinuousBatchingEngine, prompts: list[list[int]], new_tokens: int, tag: str
) -> int:
    """Submit all prompts, wait for every final output, return the number of generated tokens."""
    lock, done = threading.Lock(), threading.Event()
    state = {"tokens": 0, "finished": 0}

    def on_output(output: EngineOutput) -> None:
        with lock:
            state["tokens"] += len(output.new_token_ids)
            state["finished"] += output.finished
            if state["finished"] == len(prompts):
                done.set()

    params = GenerationParams(max_new_tokens=new_tokens, ignore_eos=True)
    for i, ids in enumerate(prompts):
        engine.submit(f"{tag}-{i}", Prompt(input_ids=ids), params, on_output)
    if not done.wait(timeout=300):
        raise RuntimeError("engine did not finish within 300 s")
    return state["tokens"]


def main() -> None:
    """Print tokens/s at 1, 4 and 16 concurrent requests for the raw manager and the engine."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model-dir", help="local model directory (default: a fresh demo model)")
    parser.add_argument("--new-tokens", type=int, default=128)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 4, 16])
    # 0 for --num-blocks or --max-batch-tokens lets transformers size the cache itself.
    parser.add_argument("--num-blocks", type=int, default=EngineConfig.num_blocks)
    parser.add_argument("--page-size", type=int, default=EngineConfig.page_size)
    parser.add_argument("--max-batch-tokens", type=int, default=EngineConfig.max_batch_tokens)
    parser.add_argument("--attn", default=EngineConfig.attn_implementation)
    parser.add_argument("--threads", type=int, default=EngineConfig.num_threads, help="0: torch's default")
    parser.add_argument("--only", choices=["raw", "engine"], default=None)
    args = parser.parse_args()
    config = EngineConfig(
        num_blocks=args.num_blocks or None,
        page_size=args.page_size,
        max_batch_tokens=args.max_batch_tokens or None,
        attn_implementation=args.attn,
        num_threads=args.threads or None,
    )
    with tempfile.TemporaryDirectory() as tmp:
        model_dir = args.model_dir or str(make_demo_model(Path(tmp) / "demo"))
        print(f"config: {config}  new_tokens={args.new_tokens}")
        for concurrency in args.concurrency:
            for name, run in (("raw", run_raw_manager), ("engine", run_engine)):
                if args.only not in (None, name):
                    continue
                rate = run(model_dir, concurrency, args.new_tokens, config)
                threads = torch.get_num_threads()
                print(
                    f"{name:>6}  concurrency={concurrency:<3} {rate:8.1f} tokens/s  ({threads} threads)",
                    flush=True,
                )


if __name__ == "__main__":
    main()
