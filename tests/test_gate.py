"""The worker's background gate (services/llm_worker/gate.py) around a real engine (the random-weight demo
model), without NATS: batch lines beyond the limit wait ready and start in the engine's next step after a
line ends; a person's request passes; every request gets exactly one final output, held ones included."""

from __future__ import annotations

import threading

import pytest

from services.llm_worker.continuous_batching import ContinuousBatchingEngine
from services.llm_worker.engine import EngineOutput, GenerationParams, Prompt
from services.llm_worker.gate import BackgroundGate

MESSAGES = [{"role": "user", "content": "Name three colours."}]
SHORT = GenerationParams(max_new_tokens=12, temperature=0.0, ignore_eos=True)
LONG = GenerationParams(max_new_tokens=400, temperature=0.0, ignore_eos=True)


class Recorder:
    """Every output, the engine's step at each request's first token and end, the most requests the engine
    held at once."""

    def __init__(self, engine: ContinuousBatchingEngine) -> None:
        self.engine = engine
        self.outputs: dict[str, list[EngineOutput]] = {}
        self.first_step: dict[str, int] = {}
        self.end_step: dict[str, int] = {}
        self.most_in_engine = 0
        self.lock = threading.Lock()
        self.changed = threading.Condition(self.lock)

    def __call__(self, output: EngineOutput) -> None:
        with self.lock:
            step = sum(self.engine.steps_on_threads.values())
            self.most_in_engine = max(self.most_in_engine, self.engine.active())
            self.outputs.setdefault(output.request_id, []).append(output)
            if output.new_token_ids:
                self.first_step.setdefault(output.request_id, step)
            if output.finished:
                self.end_step[output.request_id] = step
            self.changed.notify_all()

    def wait_ended(self, request_ids: list[str], timeout: float = 120) -> None:
        with self.lock:
            assert self.changed.wait_for(lambda: all(r in self.end_step for r in request_ids), timeout)

    def final(self, request_id: str) -> EngineOutput:
        """The request's one final output (and nothing after it)."""
        outputs = self.outputs[request_id]
        assert [o.finished for o in outputs].count(True) == 1 and outputs[-1].finished, outputs
        return outputs[-1]


@pytest.fixture
def engine(demo_engine: ContinuousBatchingEngine) -> ContinuousBatchingEngine:
    return demo_engine


def test_held_lines_start_in_the_step_after_a_line_ends_and_never_exceed_the_limit(
    engine: ContinuousBatchingEngine,
) -> None:
    gate, record = BackgroundGate(engine, lambda: 2), Recorder(engine)
    prompt = engine.build_prompt(MESSAGES)
    lines = [f"line{i}" for i in range(6)]
    for line in lines:
        gate.submit(line, prompt, SHORT, record, background=True)
    assert gate.held() == 4 and gate.active() == 6 and engine.active() <= 2
    record.wait_ended(lines)
    for line in lines:
        final = record.final(line)
        assert (final.finish_reason, final.completion_tokens) == ("length", 12)
    assert record.most_in_engine == 2 and gate.held() == 0 and gate.active() == 0
    # Each held line took the room of an ended one at once: its first token came in the next step.
    ends = sorted(record.end_step[line] for line in lines[:4])
    starts = sorted(record.first_step[line] for line in lines[2:])
    assert all(start <= end + 1 for start, end in zip(starts, ends, strict=True)), (starts, ends)


def test_a_person_passes_the_gate_and_a_held_line_ends_once_when_cancelled(
    engine: ContinuousBatchingEngine,
) -> None:
    gate, record = BackgroundGate(engine, lambda: 1), Recorder(engine)
    prompt = engine.build_prompt(MESSAGES)
    gate.submit("running", prompt, LONG, record, background=True)
    gate.submit("held", prompt, SHORT, record, background=True)
    gate.submit("person", prompt, SHORT, record)  # beyond the limit: a person's request is not held
    assert gate.held() == 1 and engine.active() == 2
    gate.cancel("held")
    assert record.final("held").finish_reason == "cancelled" and gate.held() == 0
    record.wait_ended(["person"])
    assert record.final("person").finish_reason == "length" and "held" not in record.first_step
    gate.cancel("running")
    record.wait_ended(["running"])
    assert record.final("running").finish_reason == "cancelled" and gate.active() == 0


def test_a_held_line_the_engine_refuses_and_the_held_lines_at_stop_end_with_an_error(
    engine: ContinuousBatchingEngine,
) -> None:
    gate, record = BackgroundGate(engine, lambda: 1), Recorder(engine)
    prompt = engine.build_prompt(MESSAGES)
    too_long = Prompt(input_ids=[1] * engine.max_context)
    gate.submit("first", prompt, SHORT, record, background=True)
    gate.submit("too-long", too_long, SHORT, record, background=True)  # the engine's check comes later
    gate.submit("then", prompt, SHORT, record, background=True)
    record.wait_ended(["first", "too-long", "then"])
    refused = record.final("too-long")
    assert refused.finish_reason == "error" and "no room" in (refused.error or "")
    assert record.final("then").finish_reason == "length"

    gate.submit("long", prompt, LONG, record, background=True)
    gate.submit("waiting", prompt, SHORT, record, background=True)
    gate.stop()
    assert record.final("waiting").error == "engine stopped"
    assert record.final("long").finish_reason == "error" and gate.active() == 0
