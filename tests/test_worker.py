"""The worker loop against a real nats-server and the demo model (no API): stream, end once, cancel, fence."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

import msgspec
import pytest
from transformers import AutoTokenizer

import bus
import schemas
from bus import Bus
from schemas.chat import (
    ReplyCancelled,
    ReplyCompleted,
    ReplyRequested,
    ReplyStarted,
)
from schemas.ids import new_id
from schemas.sampling import SamplingParams
from schemas.tokens import TokenDelta
from services.llm_worker import WorkerSettings
from services.llm_worker.continuous_batching import ContinuousBatchingEngine
from services.llm_worker.engine import EngineConfig
from services.llm_worker.reply_text import ReplyText
from services.llm_worker.worker import Worker
from tests.stack import request_reply, wait_event


@pytest.fixture(scope="module")
def engine_factory(demo_model_dir: Path):  # type: ignore[no-untyped-def]
    def make() -> ContinuousBatchingEngine:
        return ContinuousBatchingEngine.from_pretrained(str(demo_model_dir), EngineConfig())

    return make


@pytest.fixture
async def worker(nbus: Bus, engine_factory, demo_model_dir: Path) -> AsyncIterator[Worker]:  # type: ignore[no-untyped-def]
    engine = await asyncio.to_thread(engine_factory)
    settings = WorkerSettings(model=str(demo_model_dir), alias="demo", capacity=8, ack_wait=5.0)
    w = Worker(settings, nbus, engine, engine.tokenizer)
    stop = asyncio.Event()
    task = asyncio.create_task(w.run(stop))
    yield w
    stop.set()
    with contextlib.suppress(asyncio.CancelledError):
        await asyncio.wait_for(task, 20)


async def post(nbus: Bus, chat_id: str, text: str, params: SamplingParams) -> ReplyRequested:
    """Append what the API appends for a new message: the message, then the reply request."""
    return await request_reply(nbus, chat_id, text, params, system_prompt="Be brief.")


async def wait_end(nbus: Bus, chat_id: str, reply_id: str, timeout: float = 60) -> ReplyCompleted:
    event = await wait_event(nbus, f"chat.{chat_id}.reply.{reply_id}.completed", timeout)
    assert isinstance(event, ReplyCompleted)
    return event


async def test_a_reply_streams_tokens_and_completes_once(nbus: Bus, worker: Worker) -> None:
    request = await post(nbus, "c1", "Hello there", SamplingParams(max_new_tokens=24, ignore_eos=True))
    done = await wait_end(nbus, "c1", request.reply_id)
    assert done.completion_tokens == 24 and done.finish_reason == "length"
    assert done.prompt_tokens > 3
    deltas = [schemas.decode_event(m.data) for m in await bus.read_all(nbus.js, "TOKENS", ["tokens.c1.>"])]
    assert all(isinstance(d, TokenDelta) for d in deltas)
    assert [d.index for d in deltas] == list(range(len(deltas)))  # type: ignore[union-attr]
    assert sum(d.n_tokens for d in deltas) == 24  # type: ignore[union-attr]
    assert "".join(d.text for d in deltas) == done.text  # type: ignore[union-attr]
    ends = await bus.read_all(nbus.js, "CHAT", [f"chat.c1.reply.{request.reply_id}.>"])
    kinds = [m.subject.rsplit(".", 1)[-1] for m in ends]
    assert kinds == ["demo", "started", "completed"]
    await asyncio.sleep(0.2)
    info = await nbus.js.consumer_info("CHAT", "worker-demo")
    assert info.num_ack_pending == 0 and info.num_pending == 0


async def test_two_chats_share_the_batch(nbus: Bus, worker: Worker) -> None:
    params = SamplingParams(max_new_tokens=40, ignore_eos=True)
    first = await post(nbus, "ca", "One", params)
    second = await post(nbus, "cb", "Two", params)
    a = await wait_end(nbus, "ca", first.reply_id)
    b = await wait_end(nbus, "cb", second.reply_id)
    # Both were generating at the same time: each started before the other finished.
    starts = {}
    for chat_id, req in (("ca", first), ("cb", second)):
        msg = await bus.last_msg(nbus.js, "CHAT", f"chat.{chat_id}.reply.{req.reply_id}.started")
        assert msg is not None
        starts[chat_id] = schemas.decode_event(msg.data).at  # type: ignore[union-attr]
    assert starts["ca"] < b.at and starts["cb"] < a.at
    tokens = await bus.read_all(nbus.js, "TOKENS", ["tokens.ca.>", "tokens.cb.>"])
    order = [m.subject.split(".")[1] for m in tokens]
    switches = sum(1 for x, y in zip(order, order[1:], strict=False) if x != y)
    assert switches >= 2, f"token deltas did not interleave: {order}"


async def test_cancel_stops_a_reply_early(nbus: Bus, worker: Worker) -> None:
    request = await post(nbus, "cc", "Go on", SamplingParams(max_new_tokens=2000, ignore_eos=True))
    await wait_event(nbus, f"tokens.cc.{request.reply_id}", 10, stream="TOKENS")
    await bus.append_event(
        nbus.js,
        ReplyCancelled(
            event_id=new_id("e"), chat_id="cc", at=schemas.now(), reply_id=request.reply_id, by="ann"
        ),
    )
    done = await wait_end(nbus, "cc", request.reply_id, timeout=20)
    assert done.finish_reason == "cancelled"
    assert 0 < done.completion_tokens < 2000


async def test_a_zombie_result_is_fenced(nbus: Bus, worker: Worker) -> None:
    """A later attempt's `started` makes the earlier attempt's end event conflict; only one end lands."""
    request = await post(nbus, "cz", "Hi", SamplingParams(max_new_tokens=300, ignore_eos=True))
    await wait_event(nbus, f"chat.cz.reply.{request.reply_id}.started", 10)
    # Another worker takes over (as after a redelivery): its `started` supersedes ours.
    await bus.append_event(
        nbus.js,
        ReplyStarted(
            event_id=new_id("e"),
            chat_id="cz",
            at=schemas.now(),
            reply_id=request.reply_id,
            attempt=2,
            worker_id="other",
            model="demo",
        ),
    )
    await asyncio.sleep(0.1)
    for _ in range(300):
        if not worker.active:
            break
        await asyncio.sleep(0.05)
    assert await bus.last_msg(nbus.js, "CHAT", f"chat.cz.reply.{request.reply_id}.completed") is None


async def test_a_prompt_too_long_for_the_model_fails_once_and_is_not_retried(
    nbus: Bus, worker: Worker
) -> None:
    from schemas.chat import ReplyFailed

    request = await post(nbus, "cl", "word " * 6000, SamplingParams(max_new_tokens=16))
    failed = await wait_event(nbus, f"chat.cl.reply.{request.reply_id}.failed", 20)
    assert isinstance(failed, ReplyFailed) and failed.attempt == 1 and failed.error
    await asyncio.sleep(0.3)
    info = await nbus.js.consumer_info("CHAT", "worker-demo")
    assert info.num_ack_pending == 0 and info.num_redelivered == 0


async def test_a_request_whose_last_delivery_died_with_its_worker_ends_failed(
    nbus: Bus, worker: Worker
) -> None:
    """The server gives up after max_deliver; a live worker of the alias then appends `reply.failed`."""
    from schemas.chat import ReplyFailed
    from schemas.streams import worker_consumer
    from schemas.subjects import max_deliveries_advisory

    # A worker that takes the request and dies: it fetches and never acks. One delivery allowed.
    request = await request_reply(nbus, "cg", "Hi", SamplingParams(max_new_tokens=4), model="ghost")
    ghost = worker_consumer("ghost", ack_wait=1.0, max_deliver=1)
    await bus.declare_consumer(nbus.js, ghost)
    sub = await nbus.js.pull_subscribe_bind(durable=ghost.durable, stream=ghost.stream)
    (taken,) = await sub.fetch(1, timeout=5)
    assert taken.metadata.sequence.stream > 0
    # A live worker serving that alias hears the advisory.
    gave_up = await nbus.nc.subscribe(
        max_deliveries_advisory("CHAT", ghost.durable), queue=ghost.durable, cb=worker._on_gave_up
    )
    try:
        failed = await wait_event(nbus, f"chat.cg.reply.{request.reply_id}.failed", 10)
    finally:
        await gave_up.unsubscribe()
    assert isinstance(failed, ReplyFailed) and "1 attempts" in failed.error


async def _deltas(nbus: Bus, chat_id: str) -> list[TokenDelta]:
    stored = await bus.read_all(nbus.js, "TOKENS", [f"tokens.{chat_id}.>"])
    deltas = [schemas.decode_event(m.data) for m in stored]
    assert all(isinstance(d, TokenDelta) for d in deltas)
    return deltas  # type: ignore[return-value]


async def test_a_stop_text_ends_the_reply_before_it(nbus: Bus, worker: Worker) -> None:
    greedy = SamplingParams(max_new_tokens=48, temperature=0.0, ignore_eos=True)
    first = await wait_end(nbus, "cs1", (await post(nbus, "cs1", "Hello there", greedy)).reply_id)
    assert first.finish_reason == "length" and len(first.text) > 20
    middle = len(first.text) // 2
    stop = first.text[middle : middle + 4]
    expected = first.text[: first.text.index(stop)]

    params = SamplingParams(max_new_tokens=48, temperature=0.0, ignore_eos=True, stop=["never-there", stop])
    done = await wait_end(nbus, "cs2", (await post(nbus, "cs2", "Hello there", params)).reply_id)
    assert done.text == expected and done.finish_reason == "stop"
    deltas = await _deltas(nbus, "cs2")
    assert "".join(d.text for d in deltas) == done.text
    assert sum(d.n_tokens for d in deltas) == done.completion_tokens < 48
    assert worker.engine.active() == 0  # the engine request was cancelled, its slot is free


async def test_a_seed_gives_the_same_reply(nbus: Bus, worker: Worker) -> None:
    seeded = SamplingParams(max_new_tokens=24, temperature=1.0, ignore_eos=True, seed=7)
    other = msgspec.structs.replace(seeded, seed=8)
    chats = {"cd1": seeded, "cd2": seeded, "cd3": other}
    requests = {chat_id: await post(nbus, chat_id, "Hi", params) for chat_id, params in chats.items()}
    texts = {chat_id: (await wait_end(nbus, chat_id, r.reply_id)).text for chat_id, r in requests.items()}
    assert texts["cd1"] == texts["cd2"] != texts["cd3"]


@pytest.mark.parametrize("chunk", [1, 2, 3, 7])
def test_reply_text_counts_tokens_up_to_the_one_completing_the_stop(demo_model_dir: Path, chunk: int) -> None:
    tokenizer = AutoTokenizer.from_pretrained(str(demo_model_dir), local_files_only=True)
    ids = tokenizer.encode("Hello world, the END is near")
    completing = next(n for n in range(1, len(ids) + 1) if "END" in tokenizer.decode(ids[:n]))
    reply = ReplyText(tokenizer, ("END",))
    parts, used = [], 0
    for start in range(0, len(ids), chunk):
        text, n = reply.push(ids[start : start + chunk], start + chunk >= len(ids))
        parts.append(text)
        used += n
        if reply.stopped:
            break
    assert "".join(parts) == "Hello world, the " and used == completing and reply.stopped
