"""The llama.cpp paths of bench_engines.py without the bus, each in a child process of its own:

    python bench/engines_llama.py alone  --cache-dir DIR     # llama-cpp-python's high-level `Llama`
    python bench/engines_llama.py engine --cache-dir DIR --capacity 16   # chatbus's LlamaCppEngine

Both load the weights the worker's llama.cpp engine runs for the built-in SmolLM2 (the bfloat16 copy of its
GGUF file, made once in --cache-dir, the model cache), with its threads (all cores), context (2048 tokens a
reply), batch (512 tokens) and flash attention. `engine` builds the engine exactly as `chatbus worker
--engine llama.cpp` does (main.prepare_model, main.load_engine) and drives it in-process, every request
submitted at once (openai_raw.run_round). `alone` is the limit: `Llama.generate` on one stream at a
time, so a round of N conversations runs them one after the other; a stream's TTFT counts from the
round's start (what a client sending all N at once would see).

Protocol (as openai_raw.py): after loading and warming up it prints {"ready": true, "threads": N,
"weights": PATH}; then one JSON line per round on stdin ({"messages": [...], "tokens": 128,
"temperature": 0.7, "top_p": 0.95, "top_k": 50}) -> {"completion": [...], "prompt": [...], "ttft": [...],
"wall": s}. Every reply is `tokens` long: EOS is ignored (Llama.generate does not stop at it). EOF ends it.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.openai_raw import TEMPERATURE, TOP_K, TOP_P, run_round  # noqa: E402
from services.llm_worker.model_config import DEFAULT_SOURCE  # noqa: E402

CONTEXT, BATCH = 2048, 512  # LlamaConfig's slot_context and batch_tokens: the worker's sizing


class Alone:
    """llama-cpp-python's `Llama`, one stream at a time, sampling as the other paths do."""

    def __init__(self, path: str, threads: int) -> None:
        from llama_cpp import Llama

        from services.llm_worker.llama_text import ChatTemplate

        self.llama = Llama(
            path,
            n_ctx=CONTEXT,
            n_batch=BATCH,
            n_threads=threads,
            n_threads_batch=threads,
            flash_attn=True,  # as the engine (llama_engine.py's LlamaConfig.flash_attention)
            verbose=False,
        )
        piece = self.llama.detokenize
        bos = piece([self.llama.token_bos()]).decode(errors="replace")
        eos = piece([self.llama.token_eos()]).decode(errors="replace")
        self.template = ChatTemplate(self.llama.metadata["tokenizer.chat_template"], bos, eos)

    def prompt(self, messages: list[dict[str, str]]) -> list[int]:
        """The chat template of the GGUF file rendered as the engine renders it, then tokenized."""
        text = self.template.render(messages, add_generation_prompt=True)  # type: ignore[arg-type]
        return self.llama.tokenize(text.encode(), add_bos=False, special=True)

    def round(self, conversations: list[list[dict[str, str]]], tokens: int, **sampling: Any) -> dict:
        completion, prompt, ttft = [], [], []
        start = last = time.perf_counter()
        for messages in conversations:
            ids = self.prompt(messages)
            count = 0
            for _token in self.llama.generate(
                ids,
                top_k=int(sampling.get("top_k", TOP_K)),
                top_p=float(sampling.get("top_p", TOP_P)),
                min_p=0.0,  # llama-cpp-python's default is 0.05; chatbus's sampling has none
                temp=float(sampling.get("temperature", TEMPERATURE)),
                reset=True,
            ):
                last = time.perf_counter()
                if count == 0:
                    ttft.append(last - start)
                count += 1
                if count == tokens:
                    break
            completion.append(count)
            prompt.append(len(ids))
        return {"completion": completion, "prompt": prompt, "ttft": ttft, "wall": last - start}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("mode", choices=("alone", "engine"))
    parser.add_argument("--cache-dir", required=True, help="the model cache (where the bfloat16 copy is)")
    parser.add_argument("--capacity", type=int, default=16, help="engine: replies at once (its slots)")
    args = parser.parse_args()
    threads = os.cpu_count() or 1  # the worker's llama.cpp threads: 0 = all cores
    sampling_keys = ("temperature", "top_p", "top_k")
    warm = [[{"role": "user", "content": "Say hello."}]]
    if args.mode == "alone":
        from services.llm_worker.gguf_float16 import dense_gguf
        from services.llm_worker.sources import builtin_gguf

        weights = str(dense_gguf(builtin_gguf(DEFAULT_SOURCE), args.cache_dir, "bfloat16"))
        alone = Alone(weights, threads)
        alone.round(warm, 8)
        print(json.dumps({"ready": True, "threads": threads, "weights": weights}), flush=True)
        for line in sys.stdin:
            if line.strip():
                job = json.loads(line)
                sampling = {k: job[k] for k in sampling_keys if k in job}
                print(json.dumps(alone.round(job["messages"], int(job["tokens"]), **sampling)), flush=True)
        return
    from services.llm_worker.main import load_engine, prepare_model
    from services.llm_worker.settings import WorkerSettings

    settings = prepare_model(
        WorkerSettings(
            model=DEFAULT_SOURCE,
            alias="llama-raw",
            engine="llama.cpp",
            capacity=args.capacity,
            model_cache=args.cache_dir,
        )
    )
    engine, settings = load_engine(settings)
    engine.start()
    try:
        run_round(engine, warm, 8, "warm-a")  # type: ignore[arg-type]
        run_round(engine, warm * 4, 8, "warm-b")  # type: ignore[arg-type]
        assert settings.resolved is not None
        weights = f"{settings.model} as {settings.resolved.quantization}"  # the bfloat16 copy, for SmolLM2
        print(json.dumps({"ready": True, "threads": threads, "weights": weights}), flush=True)
        for number, line in enumerate(sys.stdin):
            if line.strip():
                job = json.loads(line)
                sampling = {k: job[k] for k in sampling_keys if k in job}
                result = run_round(engine, job["messages"], int(job["tokens"]), f"r{number}", **sampling)  # type: ignore[arg-type]
                print(json.dumps(result), flush=True)
    finally:
        engine.stop()


if __name__ == "__main__":
    main()
