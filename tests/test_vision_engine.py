"""VisionEngine without NATS: exactly one final output per request, cancel (queued or running), stop."""

from __future__ import annotations

import threading
import time
from dataclasses import replace
from pathlib import Path

import pytest
from PIL import Image

from services.llm_worker.engine import EngineConfig, EngineOutput, GenerationParams
from services.llm_worker.vision import VisionEngine


class Outputs:
    """Every output per request, and an event per finished request."""

    def __init__(self) -> None:
        self.by_id: dict[str, list[EngineOutput]] = {}
        self.done: dict[str, threading.Event] = {}
        self.lock = threading.Lock()

    def __call__(self, out: EngineOutput) -> None:
        with self.lock:
            self.by_id.setdefault(out.request_id, []).append(out)
            if out.finished:
                self.done.setdefault(out.request_id, threading.Event()).set()

    def wait(self, request_id: str, timeout: float = 30) -> list[EngineOutput]:
        with self.lock:
            event = self.done.setdefault(request_id, threading.Event())
        assert event.wait(timeout), f"{request_id} never finished"
        time.sleep(0.2)  # anything sent after the final output would arrive now
        return self.by_id[request_id]


@pytest.fixture(scope="module")
def engine(demo_vlm_dir: Path):  # type: ignore[no-untyped-def]
    engine = VisionEngine.from_pretrained(str(demo_vlm_dir), EngineConfig())
    engine.start()
    yield engine
    engine.stop()


def _prompt(engine: VisionEngine):  # type: ignore[no-untyped-def]
    picture = Image.new("RGB", (40, 30), (1, 2, 3))
    messages = [{"role": "user", "content": "look", "images": ["a", "a"]}]
    return engine.build_prompt(messages, {"a": picture})


def _assert_one_final(outputs: list[EngineOutput]) -> EngineOutput:
    assert [o.finished for o in outputs].count(True) == 1 and outputs[-1].finished
    return outputs[-1]


def test_a_request_streams_then_finishes_once_with_its_length(engine: VisionEngine) -> None:
    prompt = _prompt(engine)
    assert prompt.images_seen == ("a",)  # listed once though shown once per message part
    outputs = Outputs()
    engine.submit("full", prompt, GenerationParams(max_new_tokens=12, ignore_eos=True), outputs)
    got = outputs.wait("full")
    final = _assert_one_final(got)
    assert final.finish_reason == "length" and final.completion_tokens == 12
    assert sum(len(o.new_token_ids) for o in got) == 12


def test_cancel_of_a_queued_and_of_a_running_request(engine: VisionEngine) -> None:
    prompt = _prompt(engine)
    outputs = Outputs()
    long = GenerationParams(max_new_tokens=1500, ignore_eos=True)
    engine.submit("running", prompt, long, outputs)
    engine.submit("queued", prompt, long, outputs)
    engine.cancel("queued")
    queued = outputs.wait("queued")
    assert _assert_one_final(queued).finish_reason == "cancelled" and queued[0].new_token_ids == []
    deadline = time.monotonic() + 20
    while not outputs.by_id.get("running") and time.monotonic() < deadline:
        time.sleep(0.01)
    engine.cancel("running")
    running = outputs.wait("running")
    final = _assert_one_final(running)
    assert final.finish_reason == "cancelled" and 0 < final.completion_tokens < 1500
    assert engine.active() == 0


def test_stop_ends_a_running_request_as_an_error(demo_vlm_dir: Path) -> None:
    engine = VisionEngine.from_pretrained(str(demo_vlm_dir), EngineConfig())
    engine.start()
    outputs = Outputs()
    engine.submit("cut", _prompt(engine), GenerationParams(max_new_tokens=1500, ignore_eos=True), outputs)
    deadline = time.monotonic() + 20
    while not outputs.by_id.get("cut") and time.monotonic() < deadline:
        time.sleep(0.01)
    engine.stop()
    final = _assert_one_final(outputs.wait("cut"))
    assert final.finish_reason == "error" and final.error == "engine stopped"
    engine.start()  # and it starts again
    engine.submit("after", _prompt(engine), GenerationParams(max_new_tokens=3, ignore_eos=True), outputs)
    assert _assert_one_final(outputs.wait("after")).finish_reason == "length"
    engine.stop()


def test_a_seed_gives_the_same_tokens_and_leaves_other_sampling_alone(engine: VisionEngine) -> None:
    prompt = _prompt(engine)
    outputs = Outputs()
    seeded = GenerationParams(max_new_tokens=16, temperature=1.0, top_k=0, top_p=1.0, ignore_eos=True, seed=5)
    runs = {"s1": seeded, "u1": replace(seeded, seed=None), "s2": seeded, "o": replace(seeded, seed=6)}
    runs["u2"] = runs["u1"]
    for request_id, params in runs.items():
        engine.submit(request_id, prompt, params, outputs)
    tokens = {rid: [t for o in outputs.wait(rid) for t in o.new_token_ids] for rid in runs}
    assert tokens["s1"] == tokens["s2"] and len(tokens["s1"]) == 16
    assert tokens["o"] != tokens["s1"]
    assert tokens["u1"] != tokens["u2"]  # no seed: the global generator goes on, not reset by a seed
