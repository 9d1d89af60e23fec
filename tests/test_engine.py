"""The generation engine alone, without NATS: the interface tests run on both engines (transformers' on the
offline random-weight demo model, llama.cpp's on the built-in SmolLM2 GGUF), the rest on transformers'."""

from __future__ import annotations

import dataclasses
import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch

from services.llm_worker.continuous_batching import ContinuousBatchingEngine
from services.llm_worker.demo_model import MARKER_FILE, make_demo_model
from services.llm_worker.engine import EngineConfig, EngineOutput, GenerationParams
from services.llm_worker.reply_text import IncrementalDecoder
from services.llm_worker.sampling import (
    FastTopK,
    FastTopP,
    SeededSampling,
    gumbel_noise,
    step_key,
    use_fast_sampling,
)

MESSAGES = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hello, café? 😀"}]
UNICODE_TEXT = "Déjà vu: naïve façade, Straße, 你好世界 😀👍🏽 — “ok” €5 ✓"


class Collector:
    """Thread-safe record of every on_output call, in call order."""

    def __init__(self, expected: int) -> None:
        self.outputs: list[EngineOutput] = []
        self.expected = expected
        self.lock = threading.Lock()
        self.all_done = threading.Event()

    def __call__(self, output: EngineOutput) -> None:
        with self.lock:
            self.outputs.append(output)
            if sum(o.finished for o in self.outputs) == self.expected:
                self.all_done.set()

    def of(self, request_id: str) -> list[EngineOutput]:
        with self.lock:
            return [o for o in self.outputs if o.request_id == request_id]

    def tokens(self, request_id: str) -> list[int]:
        return [t for o in self.of(request_id) for t in o.new_token_ids]


@pytest.fixture(scope="session")
def demo_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_demo_model(tmp_path_factory.mktemp("models") / "demo-lm")


@pytest.fixture(scope="session")
def cb_engine(demo_model_dir: Path) -> Iterator[ContinuousBatchingEngine]:
    engine = ContinuousBatchingEngine.from_pretrained(str(demo_model_dir), EngineConfig(seed=0))
    engine.start()
    yield engine
    engine.stop()


@pytest.fixture(params=["transformers", "llama.cpp"])
def engine(request: pytest.FixtureRequest) -> Any:
    """Each engine in turn (llama.cpp's is skipped, saying why, when llama-cpp-python is not installed)."""
    return request.getfixturevalue("cb_engine" if request.param == "transformers" else "llama_engine")


def test_demo_model_is_marked_and_tokenizer_round_trips(
    demo_model_dir: Path, cb_engine: ContinuousBatchingEngine
) -> None:
    engine = cb_engine
    marker = json.loads((demo_model_dir / MARKER_FILE).read_text())
    assert marker["chatbus_demo"] is True and "not an assistant" in marker["note"]
    tokenizer = engine.tokenizer
    assert len(tokenizer) == 2048
    assert tokenizer.eos_token == "<|im_end|>" and tokenizer.pad_token == "<|endoftext|>"
    for text in ["def f(x):\n    return x + 1\n", UNICODE_TEXT]:
        assert tokenizer.decode(tokenizer.encode(text)) == text


def test_chat_template_renders_chatml(cb_engine: ContinuousBatchingEngine) -> None:
    engine = cb_engine
    rendered = engine.tokenizer.apply_chat_template(MESSAGES, tokenize=False, add_generation_prompt=True)
    assert rendered == (
        "<|im_start|>system\nBe brief.<|im_end|>\n"
        "<|im_start|>user\nHello, café? 😀<|im_end|>\n"
        "<|im_start|>assistant\n"
    )
    ids = engine.build_prompt(MESSAGES).input_ids
    assert ids == engine.tokenizer.encode(rendered)
    assert engine.decode(ids) == rendered.replace("<|im_start|>", "").replace("<|im_end|>", "")


def test_concurrent_requests_complete_with_exact_length_and_interleave(
    engine: Any,
) -> None:
    prompt = engine.build_prompt(MESSAGES)
    collector = Collector(expected=4)
    params = GenerationParams(max_new_tokens=48, ignore_eos=True)
    ids = [f"len-{i}" for i in range(4)]
    for request_id in ids:
        engine.submit(request_id, prompt, params, collector)
    assert collector.all_done.wait(30)

    for request_id in ids:
        outputs = collector.of(request_id)
        assert [o.finished for o in outputs] == [False] * (len(outputs) - 1) + [True]
        final = outputs[-1]
        assert final.finish_reason == "length" and final.error is None
        assert len(collector.tokens(request_id)) == 48 == final.completion_tokens
        assert final.prompt_tokens == len(prompt.input_ids)
        assert all(o.new_token_ids for o in outputs[:-1])  # no empty deltas
    # Batched in the same steps: before any request finishes, the outputs alternate between requests.
    order = [o.request_id for o in collector.outputs]
    first_finish = next(i for i, o in enumerate(collector.outputs) if o.finished)
    before = order[:first_finish]
    switches = sum(a != b for a, b in zip(before, before[1:], strict=False))
    assert set(before) == set(ids)
    assert switches >= 3 * 10
    assert engine.active() == 0


def test_cancel_stops_a_request_early(engine: Any) -> None:
    prompt = engine.build_prompt(MESSAGES)
    collector = Collector(expected=2)
    started = threading.Event()

    def on_output(output: EngineOutput) -> None:
        collector(output)
        if output.request_id == "cancel-me" and len(collector.tokens("cancel-me")) >= 5:
            started.set()

    params = GenerationParams(max_new_tokens=300, ignore_eos=True)
    engine.submit("cancel-me", prompt, params, on_output)
    engine.submit("keep-me", prompt, GenerationParams(max_new_tokens=64, ignore_eos=True), on_output)
    assert started.wait(30)
    engine.cancel("cancel-me")
    engine.cancel("cancel-me")  # a second cancel is a no-op
    engine.cancel("unknown-request")
    assert collector.all_done.wait(30)

    cancelled = collector.of("cancel-me")
    assert cancelled[-1].finished and cancelled[-1].finish_reason == "cancelled"
    assert sum(o.finished for o in cancelled) == 1
    assert 5 <= cancelled[-1].completion_tokens == len(collector.tokens("cancel-me")) < 300
    kept = collector.of("keep-me")
    assert kept[-1].finish_reason == "length" and len(collector.tokens("keep-me")) == 64
    assert collector.of("cancel-me") == cancelled  # nothing arrives after the final output
    assert engine.active() == 0


def test_sampling_params_and_eos_stop(engine: Any) -> None:
    prompt = engine.build_prompt(MESSAGES)
    collector = Collector(expected=2)
    engine.submit("greedy-a", prompt, GenerationParams(max_new_tokens=16, temperature=0.0), collector)
    engine.submit("greedy-b", prompt, GenerationParams(max_new_tokens=16, temperature=0.0), collector)
    assert collector.all_done.wait(30)
    assert collector.tokens("greedy-a") == collector.tokens("greedy-b")
    for request_id in ("greedy-a", "greedy-b"):
        final = collector.of(request_id)[-1]
        assert final.finish_reason in ("stop", "length")
        # A stop token ends the reply but is not part of its content.
        assert not set(collector.tokens(request_id)) & engine.eos_ids


def test_incremental_decoder_matches_full_decode(engine: Any) -> None:
    tokenizer = engine.tokenizer
    ids = tokenizer.encode(UNICODE_TEXT)
    decoder = IncrementalDecoder(tokenizer)
    deltas = [decoder.push([token]) for token in ids]
    deltas.append(decoder.flush())
    assert "".join(deltas) == tokenizer.decode(ids) == UNICODE_TEXT
    assert not any("\ufffd" in delta for delta in deltas)
    assert len([d for d in deltas if d]) > 5  # text streams out, not all at the end

    # Random-model output (byte tokens in any order, special tokens) in uneven chunks.
    collector = Collector(expected=1)
    engine.submit("noise", engine.build_prompt(MESSAGES), GenerationParams(max_new_tokens=64), collector)
    assert collector.all_done.wait(30)
    decoder = IncrementalDecoder(tokenizer)
    text = "".join(decoder.push(o.new_token_ids) for o in collector.of("noise")) + decoder.flush()
    assert text == engine.decode(collector.tokens("noise"))


def _lowbias32(x: int) -> int:
    """Reference of the engine's hash, in Python integers."""
    x ^= x >> 16
    x = (x * 0x7FEB352D) & 0xFFFFFFFF
    x ^= x >> 15
    x = (x * 0x846CA68B) & 0xFFFFFFFF
    return x ^ (x >> 16)


def test_fast_warpers_keep_the_same_tokens_as_the_transformers_ones() -> None:
    from transformers.generation.continuous_batching.cb_logits_processors import (
        ContinuousBatchingTopKLogitsWarper as TopK,
    )
    from transformers.generation.continuous_batching.cb_logits_processors import (
        ContinuousBatchingTopPLogitsWarper as TopP,
    )
    from transformers.generation.logits_process import TopKLogitsWarper, TopPLogitsWarper

    generator = torch.Generator().manual_seed(7)
    scores = torch.randn(6, 5000, generator=generator) * 3
    scores[2, :100] = 4.0  # ties at the k-th score are kept by both
    top_k = torch.tensor([50, 1, 60, 5000, 7, 200], dtype=torch.int32)
    top_p = torch.tensor([0.95, 1.0, 0.5, 0.9, 0.01, 0.8]).view(torch.int32)
    slow_k, slow_p = TopK(TopKLogitsWarper(50)), TopP(TopPLogitsWarper(0.95))
    fast_k, fast_p = FastTopK(TopKLogitsWarper(50)), FastTopP(TopPLogitsWarper(0.95))
    expected = slow_p(slow_k(scores, top_k), top_p)
    for rows in (slice(None), [0, 1, 2, 4, 5]):  # with a row without top-k (full sort) and without
        k, p = top_k[rows], top_p[rows]
        got = fast_p(fast_k(scores[rows], k), p)
        assert torch.equal(got.isfinite(), expected[rows].isfinite())
        assert torch.equal(got[got.isfinite()], expected[rows][got.isfinite()])
    assert int(expected[1].isfinite().sum()) == 1 and int(expected[4].isfinite().sum()) == 1


def test_fast_sampling_draws_only_possible_tokens_in_their_proportions() -> None:
    class Runner:  # what use_fast_sampling needs of transformers' ModelRunner
        do_sample, return_logprobs = True, False

        def __init__(self) -> None:
            self.full_draws = 0

        def _sample(self, scores: torch.Tensor, output_ids: torch.Tensor) -> None:
            self.full_draws += 1
            output_ids[0, : scores.size(1)] = -1

    runner = Runner()
    use_fast_sampling(runner)
    torch.manual_seed(3)
    scores = torch.full((1, 3, 1000), -float("inf"))
    scores[0, 0, 7] = 0.0  # one possible token: always it
    scores[0, 1, 10], scores[0, 1, 20] = torch.tensor(0.25).log(), torch.tensor(0.75).log()
    scores[0, 2, 500:530] = 1.0  # thirty equally likely
    picks: list[list[int]] = [[], [], []]
    output_ids = torch.zeros(2, 8, dtype=torch.int64)
    for _ in range(4000):
        runner._sample(scores, output_ids)
        for row in range(3):
            picks[row].append(int(output_ids[0, row]))
    assert set(picks[0]) == {7}
    assert set(picks[1]) == {10, 20} and 0.72 < picks[1].count(20) / 4000 < 0.78
    assert set(picks[2]) == set(range(500, 530))
    assert runner.full_draws == 0
    runner._sample(torch.zeros(1, 2, 1000), output_ids)  # the whole vocabulary possible: the original draws
    assert runner.full_draws == 1 and output_ids[0, :2].tolist() == [-1, -1]


def test_small_steps_run_on_their_own_thread_count(demo_model_dir: Path) -> None:
    config = EngineConfig(num_threads=2, small_step_threads=1, small_step_tokens=8)
    engine = ContinuousBatchingEngine.from_pretrained(str(demo_model_dir), config)
    engine.start()
    try:
        prompt = engine.build_prompt([{"role": "user", "content": "tell me a story " * 10}])
        assert len(prompt.input_ids) >= 8
        collector = Collector(expected=1)
        engine.submit("one", prompt, GenerationParams(max_new_tokens=20, ignore_eos=True), collector)
        assert collector.all_done.wait(30)
        assert len(collector.tokens("one")) == 20
    finally:
        engine.stop()
    # The prompt's step ran on 2 threads, each step decoding the one reply on 1.
    assert engine.steps_on_threads[2] >= 1 and engine.steps_on_threads[1] >= 19


def test_seeded_noise_is_a_pure_function_of_key_and_token() -> None:
    keys = torch.tensor([step_key(s, p) for s in (0, 1, 2**63 - 1) for p in (0, 1, 500)], dtype=torch.int32)
    assert len(set(keys.tolist())) == len(keys) and all(0 < k < 2**31 for k in keys.tolist())
    noise = gumbel_noise(keys.unsqueeze(-1), torch.arange(300))
    assert torch.equal(noise[4], gumbel_noise(keys[4:5].unsqueeze(-1), torch.arange(300))[0])
    assert torch.equal(noise[2, 7:9], gumbel_noise(keys[2:3], torch.tensor([7, 8])))  # only the pair counts
    assert torch.isfinite(noise).all()
    key, token = int(keys[0]), 17
    x = _lowbias32((_lowbias32(key) + _lowbias32(token)) & 0xFFFFFFFF)
    expected = -torch.log(-torch.log(torch.tensor(((x >> 8) + 0.5) * 2.0**-24, dtype=torch.float32)))
    assert torch.equal(noise[0, token], expected)


def test_seeded_sampling_draws_from_the_softmax_and_leaves_unseeded_rows_alone() -> None:
    probs = torch.tensor([0.5, 0.3, 0.15, 0.05, 0.0])
    rows = 20_000
    scores = probs.log().expand(rows, -1).clone()
    keys = torch.tensor([step_key(seed, 9) for seed in range(rows)], dtype=torch.int32)
    picked = SeededSampling()(scores, keys)
    assert torch.equal(picked.isfinite().sum(dim=-1), torch.ones(rows, dtype=torch.int64))  # one token left
    counts = torch.bincount(picked.argmax(dim=-1), minlength=5) / rows
    assert torch.allclose(counts, probs, atol=0.015), counts
    mixed = SeededSampling()(scores[:3], torch.tensor([0, keys[1], 0], dtype=torch.int32))
    assert torch.equal(mixed[0], scores[0]) and torch.equal(mixed[2], scores[2])
    assert torch.equal(mixed[1], picked[1])


def _generate(
    engine: Any, requests: dict[str, tuple[list[dict[str, str]], GenerationParams]]
) -> dict[str, list[int]]:
    """Submit all requests at once and return each one's tokens."""
    collector = Collector(expected=len(requests))
    for request_id, (messages, params) in requests.items():
        engine.submit(request_id, engine.build_prompt(messages), params, collector)
    assert collector.all_done.wait(60)
    return {request_id: collector.tokens(request_id) for request_id in requests}


def test_a_seed_gives_the_same_tokens_whatever_shares_the_batch(engine: Any) -> None:
    seeded = GenerationParams(
        max_new_tokens=40, temperature=1.0, top_k=0, top_p=1.0, ignore_eos=True, seed=42
    )
    other_seed = dataclasses.replace(seeded, seed=43)
    unseeded = dataclasses.replace(seeded, seed=None)
    busy = GenerationParams(max_new_tokens=120, ignore_eos=True)
    long_chat = [{"role": "user", "content": "tell me a long story " * 30}]
    alone = _generate(engine, {"s": (MESSAGES, seeded)})["s"]
    assert len(alone) == 40

    # Submitted together with other prompts (their prefill shares the first steps) and a twin.
    crowd = _generate(
        engine,
        {
            "b1": (long_chat, busy),
            "s1": (MESSAGES, seeded),
            "b2": (MESSAGES, unseeded),
            "s2": (MESSAGES, seeded),
            "o": (MESSAGES, other_seed),
            "u": (MESSAGES, unseeded),
        },
    )
    assert crowd["s1"] == crowd["s2"] == alone
    assert crowd["o"] != alone  # another seed, another reply
    assert crowd["u"] != crowd["b2"]  # no seed: sampled as before, differently each time

    # Joining a batch that is already decoding, with a long prefill arriving after it started.
    collector = Collector(expected=4)
    started = threading.Event()

    def on_output(output: EngineOutput) -> None:
        collector(output)
        if len(collector.tokens("late")) >= 5:
            started.set()

    engine.submit("early", engine.build_prompt(MESSAGES), busy, on_output)
    while not collector.tokens("early"):
        time.sleep(0.01)
    engine.submit("late", engine.build_prompt(MESSAGES), seeded, on_output)
    assert started.wait(30)
    engine.submit("later", engine.build_prompt(long_chat), busy, on_output)
    engine.submit("u2", engine.build_prompt(MESSAGES), unseeded, on_output)
    assert collector.all_done.wait(60)
    assert collector.tokens("late") == alone
    assert engine.active() == 0
