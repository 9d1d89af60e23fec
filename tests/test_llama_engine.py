"""The llama.cpp engine alone (no NATS) on the built-in SmolLM2-135M-Instruct GGUF: answers, its chat
template, replies sharing decode steps, queueing, background priority, too-long prompts and stop. The
interface tests shared with the transformers engine are in test_engine.py."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from services.llm_worker.engine import EngineOutput, GenerationParams, Prompt, PromptTooLong
from services.llm_worker.sources import builtin_gguf

pytest.importorskip("llama_cpp", reason="llama-cpp-python is not installed: `make llama` builds it")

from services.llm_worker.llama_engine import LlamaConfig, LlamaCppEngine  # noqa: E402

QUESTION = [{"role": "user", "content": "What is the capital of France?"}]
STORY = [{"role": "user", "content": "Tell me a long story about a cat and a dog."}]
GREEDY = GenerationParams(max_new_tokens=24, temperature=0.0)


class Outputs:
    """Every output by request, in order; waits for final ones."""

    def __init__(self) -> None:
        self.by_request: dict[str, list[EngineOutput]] = {}
        self.changed = threading.Condition()

    def __call__(self, output: EngineOutput) -> None:
        with self.changed:
            self.by_request.setdefault(output.request_id, []).append(output)
            self.changed.notify_all()

    def tokens(self, request_id: str) -> list[int]:
        with self.changed:
            return [t for o in self.by_request.get(request_id, []) for t in o.new_token_ids]

    def final(self, request_id: str) -> EngineOutput | None:
        with self.changed:
            finals = [o for o in self.by_request.get(request_id, []) if o.finished]
            assert len(finals) <= 1, finals
            return finals[0] if finals else None

    def wait(self, predicate: Any, timeout: float = 120) -> None:
        with self.changed:
            assert self.changed.wait_for(predicate, timeout)

    def wait_final(self, *request_ids: str) -> None:
        self.wait(lambda: all(self.final(r) is not None for r in request_ids))


def _answer(engine: LlamaCppEngine, messages: list[dict[str, str]], params: GenerationParams) -> str:
    outputs = Outputs()
    engine.submit("answer", engine.build_prompt(messages), params, outputs)
    outputs.wait_final("answer")
    return engine.decode(outputs.tokens("answer"))


@pytest.fixture(scope="module")
def model_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("llama-models")


@pytest.mark.parametrize(("weights", "flash_attention"), [("bfloat16", True), ("float16", False)])
def test_the_capital_of_france_is_paris(weights: Any, flash_attention: bool, model_cache: Path) -> None:
    """A dense copy answers right, with flash attention (the default) or without; the file's own Q4_1
    does not in llama.cpp (gguf_float16.py)."""
    import gguf

    config = LlamaConfig(
        slots=2, slot_context=512, threads=1, weights=weights, flash_attention=flash_attention
    )
    source = builtin_gguf("smollm2-135m-instruct")
    engine = LlamaCppEngine.from_gguf(source, config, cache_dir=model_cache)
    engine.start()
    try:
        assert "Paris" in _answer(engine, QUESTION, GREEDY)
    finally:
        engine.stop()
    suffix, expected = {
        "bfloat16": ("bf16", gguf.GGMLQuantizationType.BF16),
        "float16": ("f16", gguf.GGMLQuantizationType.F16),
    }[weights]
    (copy,) = model_cache.glob(f"gguf-*-{suffix}.gguf")
    types = {tensor.tensor_type for tensor in gguf.GGUFReader(copy).tensors}
    assert types == {expected, gguf.GGMLQuantizationType.F32}  # the norms were float32 already
    with pytest.raises(ValueError, match="cache_dir"):
        LlamaCppEngine.from_gguf(source, config)


def test_the_prompt_is_the_chat_template_as_transformers_renders_it(
    llama_engine: LlamaCppEngine, smollm2_dir: Path
) -> None:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(smollm2_dir, local_files_only=True)
    messages = [
        {"role": "system", "content": "Be brief."},
        *QUESTION,
        {"role": "assistant", "content": "Paris."},
    ]
    for chat in (QUESTION, messages):
        expected = tokenizer.apply_chat_template(chat, add_generation_prompt=True, tokenize=False)
        assert llama_engine.tokenizer.apply_chat_template(chat) == expected
        assert llama_engine.build_prompt(chat).input_ids == tokenizer.encode(
            expected, add_special_tokens=False
        )
    end = tokenizer.convert_tokens_to_ids("<|im_end|>")
    assert end in llama_engine.eos_ids and llama_engine.tokenizer.decode([end]) == "<|im_end|>"
    assert llama_engine.tokenizer.decode([end], skip_special_tokens=True) == ""


def test_replies_at_once_share_decode_steps(llama_engine: LlamaCppEngine) -> None:
    """4 replies at once take about the steps of one; one after another, four times as many."""
    params = GenerationParams(max_new_tokens=32, temperature=0.0, ignore_eos=True)
    prompt = llama_engine.build_prompt(STORY)
    outputs = Outputs()
    before = llama_engine.steps
    for i in range(4):
        llama_engine.submit(f"together-{i}", prompt, params, outputs)
    outputs.wait_final(*(f"together-{i}" for i in range(4)))
    together = llama_engine.steps - before
    before = llama_engine.steps
    for i in range(4):
        llama_engine.submit(f"alone-{i}", prompt, params, outputs)
        outputs.wait_final(f"alone-{i}")
    alone = llama_engine.steps - before
    assert together <= 32 + 1 and alone >= 4 * 32
    # Greedy: the same reply whether it shared its steps or not.
    assert {tuple(outputs.tokens(f"together-{i}")) for i in range(4)} == {tuple(outputs.tokens("alone-0"))}


def test_a_request_waits_for_a_slot_and_may_be_cancelled_there(llama_engine: LlamaCppEngine) -> None:
    slots = llama_engine.config.slots
    long = GenerationParams(max_new_tokens=200, temperature=0.0, ignore_eos=True)
    prompt = llama_engine.build_prompt(STORY)
    outputs = Outputs()
    for i in range(slots):
        llama_engine.submit(f"busy-{i}", prompt, long, outputs)
    llama_engine.submit("queued", prompt, GREEDY, outputs)
    llama_engine.submit("cancelled-queued", prompt, GREEDY, outputs)
    outputs.wait(lambda: len(outputs.tokens("busy-0")) >= 3)
    assert outputs.tokens("queued") == []  # every slot is taken
    llama_engine.cancel("cancelled-queued")
    final = outputs.final("cancelled-queued")
    assert final is not None and final.finish_reason == "cancelled" and final.completion_tokens == 0
    llama_engine.cancel("busy-0")  # frees a slot for "queued"
    outputs.wait_final("queued")
    assert outputs.final("queued").finish_reason in ("stop", "length")  # type: ignore[union-attr]
    for i in range(1, slots):
        llama_engine.cancel(f"busy-{i}")
    assert outputs.by_request["cancelled-queued"] == [final]
    assert llama_engine.active() == 0


def test_a_foreground_prompt_pauses_background_replies(llama_engine: LlamaCppEngine) -> None:
    background = GenerationParams(max_new_tokens=60, temperature=0.0, ignore_eos=True)
    outputs = Outputs()
    for i in range(3):
        llama_engine.submit(
            f"batch-{i}", llama_engine.build_prompt(STORY), background, outputs, background=True
        )
    outputs.wait(lambda: all(len(outputs.tokens(f"batch-{i}")) >= 2 for i in range(3)))
    paused = llama_engine.foreground_steps
    long_question = [{"role": "user", "content": "Please, in a word: " * 60 + QUESTION[0]["content"]}]
    llama_engine.submit("person", llama_engine.build_prompt(long_question), GREEDY, outputs)
    outputs.wait_final("person", *(f"batch-{i}" for i in range(3)))
    assert llama_engine.foreground_steps > paused
    for i in range(3):
        assert len(outputs.tokens(f"batch-{i}")) == 60  # paused, not dropped


def test_a_prompt_too_long_is_refused(llama_engine: LlamaCppEngine) -> None:
    too_long = Prompt(input_ids=[1] * llama_engine.max_context)
    with pytest.raises(PromptTooLong):
        llama_engine.submit("long", too_long, GREEDY, Outputs())
    with pytest.raises(ValueError):
        llama_engine.submit("empty", Prompt(input_ids=[]), GREEDY, Outputs())
    assert llama_engine.active() == 0


@pytest.fixture
def small_engine() -> Iterator[LlamaCppEngine]:
    config = LlamaConfig(slots=2, slot_context=256, threads=1)
    engine = LlamaCppEngine.from_gguf(str(builtin_gguf("smollm2-135m-instruct")), config)
    engine.start()
    yield engine
    engine.stop()


def test_stop_ends_every_request_and_the_engine(small_engine: LlamaCppEngine) -> None:
    outputs = Outputs()
    long = GenerationParams(max_new_tokens=200, temperature=0.0, ignore_eos=True)
    prompt = small_engine.build_prompt(QUESTION)
    for request_id in ("running-1", "running-2", "waiting"):
        small_engine.submit(request_id, prompt, long, outputs)
    outputs.wait(lambda: len(outputs.tokens("running-1")) >= 2)
    assert small_engine.alive()
    small_engine.stop()
    assert not small_engine.alive() and small_engine.active() == 0
    for request_id in ("running-1", "running-2", "waiting"):
        final = outputs.final(request_id)
        assert final is not None and final.finish_reason == "error" and final.error == "engine stopped"
    with pytest.raises(RuntimeError):
        small_engine.submit("late", prompt, long, outputs)
