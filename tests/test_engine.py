"""The generation engine alone, without NATS, on the offline random-weight demo model."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from services.llm_worker.demo_model import MARKER_FILE, make_demo_model
from services.llm_worker.engine import (
    ContinuousBatchingEngine,
    EngineConfig,
    EngineOutput,
    GenerationParams,
    IncrementalDecoder,
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
def engine(demo_model_dir: Path) -> Iterator[ContinuousBatchingEngine]:
    engine = ContinuousBatchingEngine.from_pretrained(str(demo_model_dir), EngineConfig(seed=0))
    engine.start()
    yield engine
    engine.stop()


def test_demo_model_is_marked_and_tokenizer_round_trips(
    demo_model_dir: Path, engine: ContinuousBatchingEngine
) -> None:
    marker = json.loads((demo_model_dir / MARKER_FILE).read_text())
    assert marker["chatbus_demo"] is True and "not an assistant" in marker["note"]
    tokenizer = engine.tokenizer
    assert len(tokenizer) == 2048
    assert tokenizer.eos_token == "<|im_end|>" and tokenizer.pad_token == "<|endoftext|>"
    for text in ["def f(x):\n    return x + 1\n", UNICODE_TEXT]:
        assert tokenizer.decode(tokenizer.encode(text)) == text


def test_chat_template_renders_chatml(engine: ContinuousBatchingEngine) -> None:
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
    engine: ContinuousBatchingEngine,
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


def test_cancel_stops_a_request_early(engine: ContinuousBatchingEngine) -> None:
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


def test_sampling_params_and_eos_stop(engine: ContinuousBatchingEngine) -> None:
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


def test_incremental_decoder_matches_full_decode(engine: ContinuousBatchingEngine) -> None:
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
