"""Engine priority (services/llm_worker/priority.py) on the random-weight demo model, without NATS: a
foreground request's prompt gets a step of its own while background requests decode, and every request's
outputs stay complete and ordered."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from services.llm_worker.continuous_batching import ContinuousBatchingEngine
from services.llm_worker.engine import EngineConfig, EngineOutput, GenerationParams, Prompt
from services.llm_worker.priority import MAX_PAUSED_STEPS, PriorityScheduler

MESSAGES = [{"role": "user", "content": "Tell me about cats and dogs, and then about birds."}]
LONG = GenerationParams(max_new_tokens=160, temperature=0.0, ignore_eos=True)
SHORT = GenerationParams(max_new_tokens=12, temperature=0.0, ignore_eos=True)


class Recorder:
    """Every output in order, and the engine's step count when each request's first tokens came."""

    def __init__(self, engine: ContinuousBatchingEngine) -> None:
        self.engine = engine
        self.outputs: dict[str, list[EngineOutput]] = {}
        self.first_step: dict[str, int] = {}
        self.token_steps: dict[str, list[int]] = {}  # the steps in which each request got tokens
        self.lock = threading.Lock()
        self.ended = threading.Condition(self.lock)

    def steps(self) -> int:
        return sum(self.engine.steps_on_threads.values())

    def __call__(self, output: EngineOutput) -> None:  # on the generation thread
        with self.lock:
            self.outputs.setdefault(output.request_id, []).append(output)
            if output.new_token_ids:
                self.first_step.setdefault(output.request_id, self.steps())
                self.token_steps.setdefault(output.request_id, []).append(self.steps())
            self.ended.notify_all()

    def wait(self, predicate: object, timeout: float = 120) -> None:
        with self.lock:
            assert self.ended.wait_for(predicate, timeout)  # type: ignore[arg-type]

    def finished(self, request_id: str) -> bool:
        return any(o.finished for o in self.outputs.get(request_id, []))


@pytest.fixture
def engine(demo_engine: ContinuousBatchingEngine) -> ContinuousBatchingEngine:
    return demo_engine


def _scheduler(engine: ContinuousBatchingEngine) -> PriorityScheduler:
    scheduler = engine._manager.batch_processor.scheduler
    assert isinstance(scheduler, PriorityScheduler)
    return scheduler


@pytest.mark.parametrize("background", [4, 15])
def test_a_foreground_prompt_is_served_within_two_steps_of_a_decoding_batch(
    engine: ContinuousBatchingEngine, background: int
) -> None:
    record = Recorder(engine)
    prompt = engine.build_prompt(MESSAGES)
    batch = [f"bg{i}" for i in range(background)]
    for request_id in batch:
        engine.submit(request_id, prompt, LONG, record, background=True)
    record.wait(lambda: all(r in record.first_step for r in batch))  # every background request decodes
    scheduler = _scheduler(engine)
    paused_before = scheduler.foreground_steps
    with record.lock:
        submitted_at = record.steps()
    engine.submit("fg", prompt, SHORT, record)
    record.wait(lambda: record.finished("fg") and all(record.finished(r) for r in batch))

    assert record.first_step["fg"] - submitted_at <= 2
    assert scheduler.foreground_steps > paused_before  # the background paused for its prompt
    for request_id in [*batch, "fg"]:
        outputs = record.outputs[request_id]
        assert [o.finished for o in outputs].count(True) == 1 and outputs[
            -1
        ].finished  # nothing after its end
        wanted = SHORT if request_id == "fg" else LONG
        tokens = [t for o in outputs for t in o.new_token_ids]
        assert len(tokens) == outputs[-1].completion_tokens == wanted.max_new_tokens
        assert outputs[-1].finish_reason == "length"


def test_background_decodes_advance_under_a_constant_stream_of_prompts(
    engine: ContinuousBatchingEngine,
) -> None:
    """Long prompts (each several steps of prefill at 512 tokens a step) one after another keep a
    foreground request prefilling for many steps: the background still gets a step after at most
    MAX_PAUSED_STEPS of them."""
    record = Recorder(engine)
    batch = [f"bg{i}" for i in range(4)]
    for request_id in batch:
        engine.submit(request_id, engine.build_prompt(MESSAGES), LONG, record, background=True)
    record.wait(lambda: all(r in record.first_step for r in batch))
    with record.lock:
        submitted_at = record.steps()
    people = [f"fg{i}" for i in range(8)]
    for i, request_id in enumerate(people):
        prompt = Prompt(input_ids=[10 + (i * 7 + j) % 1500 for j in range(700)])
        engine.submit(request_id, prompt, SHORT, record)
    record.wait(lambda: all(record.finished(r) for r in [*batch, *people]))

    served_at = max(record.first_step[r] for r in people)
    assert served_at - submitted_at > 2 * (MAX_PAUSED_STEPS + 1)  # the prompts kept the engine busy
    assert _scheduler(engine).foreground_steps >= MAX_PAUSED_STEPS
    for request_id in batch:
        steps = [s for s in record.token_steps[request_id] if submitted_at <= s <= served_at]
        gaps = [b - a for a, b in zip([submitted_at, *steps], [*steps, served_at], strict=True)]
        assert max(gaps) <= MAX_PAUSED_STEPS + 1, (request_id, steps, submitted_at, served_at)
    for request_id in people:
        assert record.outputs[request_id][-1].completion_tokens == SHORT.max_new_tokens


def test_background_requests_alone_are_plain_fifo(engine: ContinuousBatchingEngine) -> None:
    record = Recorder(engine)
    prompt = engine.build_prompt(MESSAGES)
    for i in range(3):
        engine.submit(f"b{i}", prompt, SHORT, record, background=True)
    record.wait(lambda: all(record.finished(f"b{i}") for i in range(3)))
    assert _scheduler(engine).foreground_steps == 0
    greedy = [[t for o in record.outputs[f"b{i}"] for t in o.new_token_ids] for i in range(3)]
    assert greedy[0] == greedy[1] == greedy[2]  # the same prompt, greedy: the same tokens
    assert not engine._background  # forgotten once ended


def test_the_fifo_engine_never_pauses(demo_model_dir: Path) -> None:
    engine = ContinuousBatchingEngine.from_pretrained(str(demo_model_dir), EngineConfig(priority=False))
    engine.start()
    try:
        record = Recorder(engine)
        prompt = engine.build_prompt(MESSAGES)
        engine.submit("bg", prompt, SHORT, record, background=True)
        engine.submit("fg", prompt, SHORT, record)
        record.wait(lambda: record.finished("bg") and record.finished("fg"))
        assert not isinstance(engine._manager.batch_processor.scheduler, PriorityScheduler)
    finally:
        engine.stop()
