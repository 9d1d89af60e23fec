"""A job's failure handling in the worker, against a real nats-server and the demo model: a worker killed
mid-job, max_attempts, a real engine death handed back (not retried), and deadlines (a delivery too late, a
running job cancelled at its deadline with its slot freed); the retry decision as a pure function."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

import bus
import schemas
from bus import Bus
from schemas.chat import (
    ChatCreated,
    MessagePosted,
    ReplyCompleted,
    ReplyFailed,
    ReplyRequested,
    ReplyRetrying,
    ReplyStarted,
)
from schemas.ids import new_id
from schemas.job import JobSpec
from schemas.sampling import SamplingParams
from services.llm_worker import WorkerSettings
from services.llm_worker.attempts import (
    INPUT_FAILURES,
    attempt_limit,
    backoff_s,
    last_cause,
    refusal,
    retry_in,
)
from services.llm_worker.continuous_batching import ContinuousBatchingEngine
from services.llm_worker.engine import EngineConfig
from services.llm_worker.lanes import EngineDied
from services.llm_worker.worker import Worker
from tests.stack import chat_events, spawn, stop_process, wait_event, wait_models

NOW = datetime(2026, 1, 1, tzinfo=UTC)


# The decision, as pure functions.


@pytest.mark.parametrize(
    ("attempt", "seconds"), [(1, 1.0), (2, 2.0), (3, 4.0), (4, 8.0), (6, 32.0), (7, 60.0), (10, 60.0)]
)
def test_backoff_doubles_from_one_second_up_to_a_minute(attempt: int, seconds: float) -> None:
    assert backoff_s(attempt) == seconds


def test_only_an_engine_error_of_a_job_with_attempts_left_is_retried() -> None:
    job = JobSpec(job_id="j", max_attempts=3)
    assert retry_in(job, 1, "engine_error", max_deliver=5) == 1.0
    assert retry_in(job, 2, "engine_error", max_deliver=5) == 2.0
    assert retry_in(job, 3, "engine_error", max_deliver=5) is None  # its last attempt: final
    assert INPUT_FAILURES == {"invalid_prompt", "context_length_exceeded"}
    for code in (*INPUT_FAILURES, "expired", "gave_up", ""):
        assert retry_in(job, 1, code, max_deliver=5) is None  # the input's failure, or an end already
    assert retry_in(None, 1, "engine_error", max_deliver=5) is None  # not a job: as before jobs
    # 0: the worker's own limit (its consumer's max_deliver), which also caps a job's own.
    assert attempt_limit(JobSpec(job_id="j"), max_deliver=5) == 5
    assert attempt_limit(JobSpec(job_id="j", max_attempts=10), max_deliver=5) == 5
    assert retry_in(JobSpec(job_id="j"), 4, "engine_error", max_deliver=5) == 8.0
    assert retry_in(JobSpec(job_id="j"), 5, "engine_error", max_deliver=5) is None


def test_a_delivery_is_refused_past_the_deadline_or_beyond_the_attempts() -> None:
    soon = JobSpec(job_id="j", deadline_at=NOW + timedelta(seconds=1), max_attempts=2)
    assert refusal(soon, 1, NOW) is None and refusal(soon, 2, NOW) is None
    assert refusal(soon, 3, NOW) == "gave_up"
    assert refusal(soon, 1, NOW + timedelta(seconds=1)) == "expired"
    naive = JobSpec(job_id="j", deadline_at=datetime(2025, 12, 31))  # appended by hand: read as UTC
    assert refusal(naive, 1, NOW) == "expired"
    assert refusal(JobSpec(job_id="j"), 99, NOW) is None  # no limit of its own: JetStream's applies
    assert refusal(None, 99, NOW) is None


def test_the_last_cause_is_the_last_attempts_retry_or_its_lost_worker() -> None:
    def started(attempt: int, worker: str) -> ReplyStarted:
        return ReplyStarted(
            event_id="e", chat_id="c", at=NOW, reply_id="r", attempt=attempt, worker_id=worker, model="m"
        )

    retried = ReplyRetrying(
        event_id="e",
        chat_id="c",
        at=NOW,
        reply_id="r",
        attempt=1,
        worker_id="wa",
        code="engine_error",
        error="out of KV cache",
        retry_in_s=1.0,
    )
    assert last_cause([started(1, "wa"), retried]) == "attempt 1: engine_error: out of KV cache"
    assert last_cause([started(1, "wa"), retried, started(2, "wb")]) == (
        "attempt 2 was lost: worker wb stopped answering"
    )
    assert "no attempt started" in last_cause([])


# Against the real thing.


async def post_job(
    nbus: Bus, chat_id: str, text: str, params: SamplingParams, **job: object
) -> ReplyRequested:
    """Append what the jobs API appends for a job in a chat of its own: the chat, the message, the request."""
    now = schemas.now()
    created = ChatCreated(
        event_id=new_id("e"), chat_id=chat_id, at=now, owner_id="ann", title="t", model="demo"
    )
    await bus.append_event(nbus.js, created, expected_subject_seq=0)
    message = MessagePosted(
        event_id=new_id("e"), chat_id=chat_id, at=now, message_id=new_id("m"), author_id="ann", content=text
    )
    await bus.append_event(nbus.js, message)
    reply_id = new_id("r")
    request = ReplyRequested(
        event_id=new_id("e"),
        chat_id=chat_id,
        at=now,
        reply_id=reply_id,
        message_id=message.message_id,
        model="demo",
        params=params,
        context=[message.message_id],
        requested_by="ann",
        job=JobSpec(job_id=f"{chat_id}-{reply_id}", **job),  # type: ignore[arg-type]
    )
    await bus.append_event(nbus.js, request)
    return request


async def reply_events(nbus: Bus, request: ReplyRequested) -> list[schemas.Event]:
    """The reply's events after its request, in log order."""
    events = await chat_events(nbus, request.chat_id)
    return [
        e
        for e in events
        if getattr(e, "reply_id", None) == request.reply_id and not isinstance(e, ReplyRequested)
    ]


async def wait_end(nbus: Bus, request: ReplyRequested, timeout: float = 60) -> ReplyCompleted | ReplyFailed:
    deadline = asyncio.get_running_loop().time() + timeout
    while asyncio.get_running_loop().time() < deadline:
        ends = [e for e in await reply_events(nbus, request) if isinstance(e, ReplyCompleted | ReplyFailed)]
        if ends:
            return ends[0]
        await asyncio.sleep(0.05)
    raise TimeoutError(f"reply {request.reply_id} never ended")


@contextlib.asynccontextmanager
async def running(
    nbus: Bus, model_dir: Path, engine_config: EngineConfig, **settings: object
) -> AsyncIterator[Worker]:
    """A worker of alias `demo` in this process, on an engine of `engine_config`, until the block ends."""
    engine = await asyncio.to_thread(ContinuousBatchingEngine.from_pretrained, str(model_dir), engine_config)
    config = WorkerSettings(model=str(model_dir), alias="demo", **settings)  # type: ignore[arg-type]
    worker = Worker(config, nbus, engine, engine.tokenizer)
    stop = asyncio.Event()
    task = asyncio.create_task(worker.run(stop))
    try:
        await wait_models(nbus, "demo")
        yield worker
    finally:
        stop.set()
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.wait_for(task, 30)


async def test_kill_9_mid_job_another_worker_finishes_it_once_and_max_attempts_1_gives_up(
    nbus: Bus, nats_url: str, demo_model_dir: Path, tmp_path: Path
) -> None:
    victim = spawn(
        ["worker", "--model", str(demo_model_dir), "--alias", "demo", "--ack-wait", "2", "--worker-id", "wa"],
        nats_url,
        tmp_path / "wa.log",
    )
    try:
        await wait_models(nbus, "demo")
        long = SamplingParams(max_new_tokens=400, ignore_eos=True)
        retried = await post_job(nbus, "ja", "Hello", long, max_attempts=3)
        once = await post_job(nbus, "jb", "Hello", long, max_attempts=1)
        for request in (retried, once):
            started = await wait_event(nbus, f"chat.{request.chat_id}.reply.{request.reply_id}.started", 60)
            assert isinstance(started, ReplyStarted) and started.worker_id == "wa" and started.attempt == 1
            await wait_event(nbus, f"tokens.{request.chat_id}.{request.reply_id}", 30, stream="TOKENS")
        os.kill(victim.pid, signal.SIGKILL)  # mid-generation, the hard way
        victim.wait()
    finally:
        stop_process(victim)
    async with running(nbus, demo_model_dir, EngineConfig(), ack_wait=2.0, worker_id="wb"):
        done = await wait_end(nbus, retried, 120)
        gave_up = await wait_end(nbus, once, 60)
        await asyncio.sleep(3)  # longer than ack_wait: nothing else may arrive
    assert isinstance(done, ReplyCompleted) and done.worker_id == "wb" and done.attempt == 2
    assert done.completion_tokens == 400
    events = await reply_events(nbus, retried)
    assert [(e.attempt, e.worker_id) for e in events if isinstance(e, ReplyStarted)] == [(1, "wa"), (2, "wb")]
    assert sum(isinstance(e, ReplyCompleted | ReplyFailed) for e in events) == 1
    # max_attempts=1: its second delivery ends it at once, saying why, without starting an attempt.
    assert isinstance(gave_up, ReplyFailed) and gave_up.code == "gave_up" and gave_up.attempt == 2
    assert gave_up.error == "gave up after 1 attempt: attempt 1 was lost: worker wa stopped answering"
    events = await reply_events(nbus, once)
    assert [type(e) for e in events] == [ReplyStarted, ReplyFailed]
    info = await nbus.js.consumer_info("CHAT", "worker-demo")
    assert info.num_ack_pending == 0 and info.num_pending == 0


async def dies(nbus: Bus, model_dir: Path, engine_config: EngineConfig, worker_id: str) -> None:
    """Run a worker of alias `demo` until its engine dies under it: it must exit with EngineDied."""
    engine = await asyncio.to_thread(ContinuousBatchingEngine.from_pretrained, str(model_dir), engine_config)
    config = WorkerSettings(model=str(model_dir), alias="demo", ack_wait=5.0, worker_id=worker_id)
    with pytest.raises(EngineDied):
        await asyncio.wait_for(Worker(config, nbus, engine, engine.tokenizer).run(asyncio.Event()), 60)


async def test_a_job_that_kills_the_engine_is_handed_back_until_its_attempts_run_out(
    nbus: Bus, demo_model_dir: Path
) -> None:
    """A real engine death: a KV cache of 64 tokens cannot hold a 200-token prompt, and transformers'
    generation loop fails and ends. The worker neither fails nor retries the job (not the job's fault):
    it hands it back and exits, to be restarted; the job's attempts bound the workers it takes down."""
    tiny = EngineConfig(num_blocks=2, page_size=32, max_batch_tokens=512)
    job = await post_job(nbus, "je", "word " * 200, SamplingParams(max_new_tokens=8), max_attempts=2)
    await dies(nbus, demo_model_dir, tiny, "wk1")
    await dies(nbus, demo_model_dir, tiny, "wk2")
    async with running(nbus, demo_model_dir, EngineConfig(), ack_wait=5.0, worker_id="wok"):
        end = await wait_end(nbus, job, 30)
        too_long = await post_job(
            nbus, "jl", "word " * 6000, SamplingParams(max_new_tokens=8), max_attempts=3
        )
        too_long_end = await wait_end(nbus, too_long, 30)
    events = await reply_events(nbus, job)
    assert [type(e) for e in events] == [ReplyStarted, ReplyStarted, ReplyFailed]
    assert [(e.attempt, e.worker_id) for e in events[:2]] == [(1, "wk1"), (2, "wk2")]
    # Its third delivery is refused: two attempts were allowed.
    assert isinstance(end, ReplyFailed) and end.attempt == 3 and end.code == "gave_up"
    # The input's failure is never retried.
    assert isinstance(too_long_end, ReplyFailed) and too_long_end.code == "context_length_exceeded"
    assert [type(e) for e in await reply_events(nbus, too_long)] == [ReplyStarted, ReplyFailed]
    await asyncio.sleep(0.3)
    info = await nbus.js.consumer_info("CHAT", "worker-demo")
    assert info.num_ack_pending == 0 and info.num_pending == 0


async def test_a_deadline_cancels_a_running_job_frees_its_slot_and_expires_a_late_delivery(
    nbus: Bus, demo_model_dir: Path
) -> None:
    async with running(nbus, demo_model_dir, EngineConfig(), capacity=1, ack_wait=5.0) as worker:
        at = schemas.now()
        endless = SamplingParams(max_new_tokens=4000, ignore_eos=True)
        running_job = await post_job(nbus, "jd1", "Go on", endless, deadline_at=at + timedelta(seconds=1.5))
        # Queued behind it (capacity 1): its deadline passes before a slot is free.
        late = await post_job(nbus, "jd2", "Hi", endless, deadline_at=at + timedelta(seconds=0.5))
        following = await post_job(nbus, "jd3", "Hi", SamplingParams(max_new_tokens=8, ignore_eos=True))
        expired = await wait_end(nbus, running_job, 30)
        late_end = await wait_end(nbus, late, 30)
        done = await wait_end(nbus, following, 30)
        await asyncio.sleep(0.5)
        assert worker.engine.active() == 0
    assert isinstance(expired, ReplyFailed) and expired.code == "expired" and expired.attempt == 1
    generated = int(expired.error.removeprefix("deadline passed after ").removesuffix(" tokens"))
    assert 0 < generated < 4000
    assert (expired.at - at).total_seconds() >= 1.5
    assert [type(e) for e in await reply_events(nbus, running_job)] == [ReplyStarted, ReplyFailed]  # one end
    # Delivered past its deadline: ended at once, never started.
    assert isinstance(late_end, ReplyFailed) and late_end.code == "expired"
    assert late_end.error.startswith("deadline passed (") and late_end.error.endswith("attempt 1 could start")
    assert [type(e) for e in await reply_events(nbus, late)] == [ReplyFailed]
    # The slot was freed at the deadline: the next request started right after.
    assert isinstance(done, ReplyCompleted) and done.completion_tokens == 8
    started = next(e for e in await reply_events(nbus, following) if isinstance(e, ReplyStarted))
    assert (started.at - expired.at).total_seconds() < 1.0


async def test_a_job_whose_engine_died_is_finished_by_a_healthy_worker(
    nbus: Bus, demo_model_dir: Path
) -> None:
    """The broken worker (its KV cache cannot hold the prompt) hands the job back as its engine dies and
    exits; a healthy one takes the next delivery and finishes it: no retry, no failure on the way."""
    tiny = EngineConfig(num_blocks=2, page_size=32, max_batch_tokens=512)
    params = SamplingParams(max_new_tokens=8, ignore_eos=True)
    job = await post_job(nbus, "jr", "word " * 200, params, max_attempts=5)
    await dies(nbus, demo_model_dir, tiny, "wbroken")
    async with running(nbus, demo_model_dir, EngineConfig(), ack_wait=3.0, worker_id="whealthy"):
        done = await wait_end(nbus, job, 60)
    assert isinstance(done, ReplyCompleted) and done.worker_id == "whealthy" and done.completion_tokens == 8
    events = await reply_events(nbus, job)
    assert [type(e) for e in events] == [ReplyStarted, ReplyStarted, ReplyCompleted]
    assert [(e.attempt, e.worker_id) for e in events] == [(1, "wbroken"), (2, "whealthy"), (2, "whealthy")]
