"""A job's status and attempts from its reply's events (schemas/job_status.py): pure, no bus."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from schemas.chat import (
    ChatEvent,
    ReplyCancelled,
    ReplyCompleted,
    ReplyFailed,
    ReplyRequested,
    ReplyRetrying,
    ReplyStarted,
    WebhookAttempted,
)
from schemas.job import JobSpec
from schemas.job_status import job_state, read_status

T0 = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)


def _at(seconds: int, **fields: Any) -> dict[str, Any]:
    return {
        "event_id": f"e{seconds}",
        "chat_id": "c1",
        "reply_id": "r1",
        "at": T0 + timedelta(seconds=seconds),
    }


def requested(deadline_s: int | None = None) -> ReplyRequested:
    deadline = None if deadline_s is None else T0 + timedelta(seconds=deadline_s)
    job = JobSpec(job_id="c1-r1", deadline_at=deadline)
    return ReplyRequested(**_at(0), message_id="m1", model="demo", requested_by="ann", job=job)


def started(s: int, attempt: int) -> ReplyStarted:
    return ReplyStarted(**_at(s), attempt=attempt, worker_id=f"w{attempt}", model="demo")


def completed(s: int, attempt: int, reason: str = "stop") -> ReplyCompleted:
    return ReplyCompleted(
        **_at(s),
        attempt=attempt,
        worker_id=f"w{attempt}",
        model="demo",
        text="hi",
        prompt_tokens=5,
        completion_tokens=2,
        finish_reason=reason,  # type: ignore[arg-type]
    )


def failed(s: int, attempt: int, code: str) -> ReplyFailed:
    return ReplyFailed(**_at(s), attempt=attempt, worker_id=f"w{attempt}", error=f"{code}!", code=code)


def retrying(s: int, attempt: int) -> ReplyRetrying:
    return ReplyRetrying(
        **_at(s), attempt=attempt, worker_id=f"w{attempt}", code="engine_error", error="oom", retry_in_s=1.0
    )


def statuses(*events: ChatEvent) -> list[str]:
    out, state = [], job_state([])
    for event in events:
        state.apply(event)
        out.append(state.status)
    return out


def test_the_status_words_follow_the_reply() -> None:
    assert statuses(requested(), started(1, 1), completed(2, 1)) == ["queued", "processing", "done"]
    assert statuses(requested(), started(1, 1), retrying(2, 1), started(4, 2)) == [
        "queued",
        "processing",
        "queued",
        "processing",
    ]
    cancel = ReplyCancelled(**_at(1), by="ann")
    assert statuses(requested(), cancel, completed(2, 1, "cancelled"))[-1] == "cancelled"
    assert statuses(requested(), started(1, 1), failed(2, 1, "expired"))[-1] == "expired"
    assert statuses(requested(), started(1, 1), failed(2, 1, "engine_error"))[-1] == "error"
    assert statuses(requested(), completed(2, 1), failed(3, 1, "gave_up"))[-1] == "done"  # ends are final


def test_a_deadline_expires_an_open_job_when_read() -> None:
    state = job_state([requested(deadline_s=10), started(1, 1)])
    assert state.read_status(T0 + timedelta(seconds=9)) == "processing"
    assert state.read_status(T0 + timedelta(seconds=10)) == "expired"
    done = job_state([requested(deadline_s=10), started(1, 1), completed(5, 1)])
    assert done.read_status(T0 + timedelta(hours=1)) == "done"  # a finished job keeps its end
    assert read_status("queued", None, T0 + timedelta(days=400)) == "queued"  # no deadline, no expiry


def test_attempts_record_each_try_and_a_lost_worker() -> None:
    state = job_state(
        [requested(), started(1, 1), retrying(2, 1), started(4, 2), started(40, 3), completed(41, 3)]
    )
    attempts = state.attempt_list()
    assert [(a.attempt, a.worker_id, a.outcome, a.code) for a in attempts] == [
        (1, "w1", "retrying", "engine_error"),
        (2, "w2", "lost", ""),
        (3, "w3", "done", ""),
    ]
    assert attempts[0].started_at == T0 + timedelta(seconds=1)
    assert attempts[0].ended_at == T0 + timedelta(seconds=2)
    assert attempts[1].ended_at is None and "stopped answering" in attempts[1].error
    assert state.usage() is not None and state.usage().total_tokens == 7  # type: ignore[union-attr]
    assert state.error() is None
    assert (state.started_at, state.finished_at) == (T0 + timedelta(seconds=1), T0 + timedelta(seconds=41))


def test_an_error_and_webhook_deliveries() -> None:
    hooks = [
        WebhookAttempted(**_at(5 + n), delivery=n, status=status, final=status == 200)
        for n, status in ((1, 500), (2, 0), (3, 200))
    ]
    state = job_state([requested(), started(1, 1), failed(2, 1, "invalid_prompt"), *hooks])
    assert state.status == "error" and state.usage() is None
    assert state.error() is not None and state.error().code == "invalid_prompt"  # type: ignore[union-attr]
    assert [a.outcome for a in state.attempt_list()] == ["error"]
    webhook = state.webhook()
    assert (webhook.deliveries, webhook.last_status, webhook.delivered) == (3, 200, True)
    assert job_state([requested()]).webhook().deliveries == 0
