"""A real worker (demo model, real nats-server) with two lanes: a person's request is served before queued
batch lines, batch lines keep out of the reserved slot; and a worker whose engine died hands its work back
and stops, so another (or a restarted) worker serves it."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import msgspec
import pytest

import bus
import schemas
from bus import Bus
from schemas.chat import ChatCreated, MessagePosted, ReplyCompleted, ReplyRequested, ReplyStarted
from schemas.ids import new_id
from schemas.job import JobSpec
from schemas.sampling import SamplingParams
from services.llm_worker import WorkerSettings
from services.llm_worker.continuous_batching import ContinuousBatchingEngine
from services.llm_worker.engine import EngineConfig
from services.llm_worker.lanes import BatchWidth, EngineDied, batch_limit
from services.llm_worker.worker import Worker
from tests.stack import spawn, stop_process, wait_event, wait_models

LONG = SamplingParams(max_new_tokens=160, temperature=0.0, ignore_eos=True)


async def ask(
    nbus: Bus, alias: str, params: SamplingParams, batch_id: str = "", content: str = "Hi"
) -> ReplyRequested:
    """A chat with one message and its reply request; a batch's line (on the batch lane) when `batch_id`."""
    chat_id, reply_id, now = new_id("c"), new_id("r"), schemas.now()
    created = ChatCreated(
        event_id=new_id("e"), chat_id=chat_id, at=now, owner_id="ann", title="t", model=alias
    )
    await bus.append_event(nbus.js, created, expected_subject_seq=0)
    message = MessagePosted(
        event_id=new_id("e"),
        chat_id=chat_id,
        at=now,
        message_id=new_id("m"),
        author_id="ann",
        content=content,
    )
    await bus.append_event(nbus.js, message)
    job = JobSpec(job_id=f"{chat_id}-{reply_id}", batch_id=batch_id, custom_id=reply_id) if batch_id else None
    request = ReplyRequested(
        event_id=new_id("e"),
        chat_id=chat_id,
        at=now,
        reply_id=reply_id,
        message_id=message.message_id,
        model=alias,
        params=params,
        context=[message.message_id],
        requested_by="ann",
        job=job,
    )
    await bus.append_event(nbus.js, request)
    return request


async def ended(nbus: Bus, request: ReplyRequested, timeout: float = 120) -> ReplyCompleted:
    event = await wait_event(nbus, f"chat.{request.chat_id}.reply.{request.reply_id}.completed", timeout)
    assert isinstance(event, ReplyCompleted)
    return event


async def starts(nbus: Bus, request: ReplyRequested) -> list[ReplyStarted]:
    stored = await bus.read_all(nbus.js, "CHAT", [f"chat.{request.chat_id}.reply.{request.reply_id}.started"])
    return [e for e in (schemas.decode_event(m.data) for m in stored) if isinstance(e, ReplyStarted)]


@contextlib.asynccontextmanager
async def running(
    nbus: Bus, model_dir: Path, alias: str, **settings: Any
) -> AsyncIterator[tuple[Worker, asyncio.Task[None], asyncio.Event]]:
    engine = await asyncio.to_thread(ContinuousBatchingEngine.from_pretrained, str(model_dir), EngineConfig())
    config = msgspec.structs.replace(WorkerSettings(model=str(model_dir), alias=alias), **settings)
    worker = Worker(config, nbus, engine, engine.tokenizer)
    stop = asyncio.Event()
    task = asyncio.create_task(worker.run(stop))
    try:
        yield worker, task, stop
    finally:
        stop.set()
        with contextlib.suppress(asyncio.CancelledError, EngineDied):
            await asyncio.wait_for(task, 30)


async def test_a_person_is_served_before_queued_batch_lines(nbus: Bus, demo_model_dir: Path) -> None:
    alias = "lanes-demo"
    async with running(nbus, demo_model_dir, alias, capacity=2, batch_reserve=1) as (worker, _, _):
        lines = [await ask(nbus, alias, LONG, batch_id="q1") for _ in range(4)]
        await wait_event(nbus, f"chat.{lines[0].chat_id}.reply.{lines[0].reply_id}.started")
        person = await ask(nbus, alias, SamplingParams(max_new_tokens=8, temperature=0.0, ignore_eos=True))
        answered = await ended(nbus, person)
        done = [await ended(nbus, line) for line in lines]
    (person_start,) = await starts(nbus, person)
    line_starts = [(await starts(nbus, line))[0] for line in lines]
    # The person's reply started before every batch line but the one already running ...
    assert all(person_start.at < s.at for s in line_starts[1:])
    assert answered.completion_tokens == 8 and all(d.completion_tokens == LONG.max_new_tokens for d in done)
    # ... and never more than capacity - reserve = 1 batch line ran at once.
    spans = sorted((s.at, d.at) for s, d in zip(line_starts, done, strict=True))
    assert all(later[0] >= earlier[1] for earlier, later in zip(spans, spans[1:], strict=False))
    assert not worker.active


async def test_a_wide_worker_holds_a_batch_line_ready_and_a_person_still_finds_a_slot(
    nbus: Bus, demo_model_dir: Path
) -> None:
    alias = "lanes-wide"  # capacity 9, reserve 1: 8 batch lines run and 1 more waits ready in the gate
    async with running(nbus, demo_model_dir, alias, capacity=9, batch_reserve=1) as (worker, _, _):
        lines = [await ask(nbus, alias, LONG, batch_id="q3") for _ in range(12)]
        deadline = asyncio.get_running_loop().time() + 60
        while worker.engine.held() < 1:
            assert asyncio.get_running_loop().time() < deadline, "no batch line was held ready"
            await asyncio.sleep(0.02)
        assert worker.engine.inner.active() == 8
        person = await ask(nbus, alias, SamplingParams(max_new_tokens=8, temperature=0.0, ignore_eos=True))
        answered = await ended(nbus, person)
        done = [await ended(nbus, line) for line in lines]
    assert answered.completion_tokens == 8 and all(d.completion_tokens == LONG.max_new_tokens for d in done)
    for line in lines:  # each line ended once
        ends = await bus.read_all(nbus.js, "CHAT", [f"chat.{line.chat_id}.reply.{line.reply_id}.completed"])
        assert len(ends) == 1
    assert not worker.active and worker.engine.active() == 0


async def test_with_no_reserve_batch_lines_take_every_slot(nbus: Bus, demo_model_dir: Path) -> None:
    alias = "lanes-open"
    async with running(nbus, demo_model_dir, alias, capacity=2, batch_reserve=0):
        lines = [await ask(nbus, alias, LONG, batch_id="q2") for _ in range(2)]
        done = [await ended(nbus, line) for line in lines]
    line_starts = [(await starts(nbus, line))[0] for line in lines]
    assert max(s.at for s in line_starts) < min(d.at for d in done)  # both ran at once


async def test_a_worker_whose_engine_died_hands_back_and_exits(nbus: Bus, demo_model_dir: Path) -> None:
    alias = "lanes-dead"
    async with running(nbus, demo_model_dir, alias, capacity=2, ack_wait=5.0) as (worker, task, stop):
        running_one = await ask(
            nbus, alias, SamplingParams(max_new_tokens=1500, temperature=0.0, ignore_eos=True)
        )
        await wait_event(nbus, f"chat.{running_one.chat_id}.reply.{running_one.reply_id}.started")
        manager = worker.engine.inner._manager  # type: ignore[attr-defined]
        manager.stop(block=False)  # its generation thread ends under the worker, on its own
        with pytest.raises(EngineDied):
            await asyncio.wait_for(task, 30)
        assert not stop.is_set()
        queued = await ask(nbus, alias, SamplingParams(max_new_tokens=8, temperature=0.0))
    await asyncio.sleep(0.5)
    failed = await bus.read_all(nbus.js, "CHAT", [f"chat.{running_one.chat_id}.reply.*.failed"])
    assert not failed, failed[0].data  # handed back, not failed
    async with running(nbus, demo_model_dir, alias, capacity=2, ack_wait=5.0, worker_id="w-restarted"):
        again, served = await ended(nbus, running_one), await ended(nbus, queued)
    assert again.worker_id == served.worker_id == "w-restarted"
    assert again.attempt == 2 and served.attempt == 1  # the queued one lost no attempt
    for request in (running_one, queued):
        assert not await bus.read_all(nbus.js, "CHAT", [f"chat.{request.chat_id}.reply.*.failed"])


def test_the_reserve_is_read_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    assert WorkerSettings.from_env().batch_reserve == 1
    monkeypatch.setenv("CHATBUS_BATCH_RESERVE", "0")
    monkeypatch.setenv("CHATBUS_WORKER_CAPACITY", "4")
    assert batch_limit(WorkerSettings.from_env()) == 4
    monkeypatch.setenv("CHATBUS_BATCH_RESERVE", "3")
    assert batch_limit(WorkerSettings.from_env()) == 1
    monkeypatch.setenv("CHATBUS_BATCH_RESERVE", "9")  # a worker of capacity <= reserve still runs batches
    assert batch_limit(WorkerSettings.from_env()) == 1


async def test_a_worker_process_whose_engine_died_exits_non_zero(
    nbus: Bus, nats_url: str, demo_model_dir: Path, tmp_path: Path
) -> None:
    """`chatbus worker` with a KV cache too small for the prompt: transformers' generation loop fails and
    ends; the process exits non-zero (for its supervisor to start it again), the request handed back to
    the next worker."""
    alias, log = "lanes-proc", tmp_path / "worker.log"
    tiny = {"CHATBUS_WORKER_KV_BLOCKS": "2", "CHATBUS_WORKER_KV_PAGE_SIZE": "32"}
    child = spawn(["worker", "--model", str(demo_model_dir), "--alias", alias], nats_url, log, **tiny)
    try:
        await wait_models(nbus, alias)
        request = await ask(nbus, alias, SamplingParams(max_new_tokens=8), content="word " * 200)
        for _ in range(600):
            if child.poll() is not None:
                break
            await asyncio.sleep(0.1)
        assert child.returncode == 3, log.read_text()[-2000:]  # not 2 (a bad config): start it again
    finally:
        stop_process(child)
    said = log.read_text()
    assert "generation thread died: exiting (3)" in said and "raise EngineDied" not in said  # no traceback
    chat = f"chat.{request.chat_id}.reply.{request.reply_id}"
    assert not await bus.read_all(nbus.js, "CHAT", [f"{chat}.failed"])
    async with running(nbus, demo_model_dir, alias, capacity=2, ack_wait=5.0, worker_id="w-big-cache"):
        done = await ended(nbus, request)  # handed back: a worker with a live engine serves it
    assert (done.worker_id, done.attempt) == ("w-big-cache", 2)


def test_the_batch_narrows_while_people_chat_and_widens_after(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    now = [100.0]
    monkeypatch.setenv("CHATBUS_WORKER_CAPACITY", "33")
    width = BatchWidth(WorkerSettings.from_env(), clock=lambda: now[0])
    assert width.limit() == 32  # nobody asked yet: every slot but the reserve
    width.note_person()
    assert width.limit() == 16  # half the capacity while people chat
    now[0] += 9.9
    assert width.limit() == 16
    now[0] += 0.2  # CHATBUS_BATCH_YIELD_SECONDS (10) after the last person's request
    assert width.limit() == 32
    monkeypatch.setenv("CHATBUS_BATCH_BUSY_SLOTS", "40")  # never more than the full width
    monkeypatch.setenv("CHATBUS_BATCH_YIELD_SECONDS", "0")  # 0: never narrows
    width = BatchWidth(WorkerSettings.from_env(), clock=lambda: now[0])
    width.note_person()
    assert width.busy == 32 and width.limit() == 32
