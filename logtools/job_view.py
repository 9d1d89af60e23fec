"""A job as its reply's events tell it: the body of `GET /v1/jobs/{job_id}` and of a webhook delivery.

`job_view` is a pure fold (the chat's creation, the job's input message and the reply's events, in log
order); `read_job` reads those events from the log, so the view is never stale.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import Literal

import msgspec

import bus
import schemas
from bus import JetStream
from schemas.chat import (
    ChatCreated,
    MessagePosted,
    ReplyCancelled,
    ReplyCompleted,
    ReplyFailed,
    ReplyRequested,
    ReplyRetrying,
    ReplyStarted,
    WebhookAttempted,
)
from schemas.streams import CHAT
from schemas.subjects import chat_event, one_reply

JobStatus = Literal["queued", "processing", "done", "error", "cancelled", "expired"]
Outcome = Literal["", "done", "error", "retrying", "lost", "cancelled", "expired"]


class JobAttempt(msgspec.Struct, kw_only=True):
    """One attempt of a worker at the job; `outcome` "" while it runs."""

    attempt: int
    worker_id: str
    started_at: datetime | None = None
    ended_at: datetime | None = None
    outcome: Outcome = ""
    code: str = ""
    error: str = ""


class JobUsage(msgspec.Struct, frozen=True, kw_only=True):
    """Tokens the job took."""

    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


class JobError(msgspec.Struct, frozen=True, kw_only=True):
    """Why a job ended without a result."""

    code: str
    message: str


class JobWebhook(msgspec.Struct, frozen=True, kw_only=True):
    """The deliveries of the finished job to its callback_url so far."""

    deliveries: int = 0
    last_status: int | None = None
    delivered: bool = False


class JobView(msgspec.Struct, kw_only=True):
    """The job: the same fields in GET /v1/jobs/{job_id} and in the body a webhook POSTs."""

    job_id: str
    status: JobStatus = "queued"
    model: str
    session_id: str = ""
    chat_id: str
    input: str = ""
    result: str | None = None
    usage: JobUsage | None = None
    attempts: list[JobAttempt] = []
    error: JobError | None = None
    created_at: datetime
    started_at: datetime | None = None
    finished_at: datetime | None = None
    deadline_at: datetime | None = None
    callback_url: str = ""
    webhook: JobWebhook = JobWebhook()


def job_id_of(chat_id: str, reply_id: str) -> str:
    """A job's id: its chat and its reply (ids never hold "-")."""
    return f"{chat_id}-{reply_id}"


def job_view(events: Iterable[schemas.Event], reply_id: str, now: datetime) -> JobView | None:
    """Fold the chat's creation, the messages and the reply's events into the job; None without a request."""
    created: ChatCreated | None = None
    messages: dict[str, str] = {}
    view: JobView | None = None
    cancelled = False
    for event in events:
        match event:
            case ChatCreated():
                created = event
            case MessagePosted():
                messages[event.message_id] = event.content
            case ReplyRequested() if event.reply_id == reply_id:
                view = _requested(event, messages.get(event.message_id, ""), created)
            case ReplyCancelled() if view is not None and event.reply_id == reply_id:
                cancelled = True
            case _ if view is not None and getattr(event, "reply_id", None) == reply_id:
                _apply(view, event, cancelled)
    if view is not None and view.status in ("queued", "processing"):
        if view.deadline_at is not None and now >= view.deadline_at:
            view.status = "expired"
    return view


def _requested(request: ReplyRequested, text: str, created: ChatCreated | None) -> JobView:
    job = request.job
    return JobView(
        job_id=job.job_id if job is not None else job_id_of(request.chat_id, request.reply_id),
        model=request.model,
        session_id=created.session_id if created is not None else "",
        chat_id=request.chat_id,
        input=text,
        created_at=request.at,
        deadline_at=job.deadline_at if job is not None else None,
        callback_url=job.callback_url if job is not None else "",
    )


def _attempt(view: JobView, number: int, worker_id: str) -> JobAttempt:
    for attempt in view.attempts:
        if attempt.attempt == number:
            return attempt
    attempt = JobAttempt(attempt=number, worker_id=worker_id)
    view.attempts.append(attempt)
    return attempt


def _apply(view: JobView, event: schemas.Event, cancelled: bool) -> None:
    match event:
        case ReplyStarted():
            for earlier in view.attempts:
                if earlier.outcome == "":
                    earlier.outcome = "lost"  # the worker stopped answering: a later attempt began
            attempt = _attempt(view, event.attempt, event.worker_id)
            attempt.started_at = event.at
            view.started_at = view.started_at or event.at
            view.status = "processing"
        case ReplyRetrying():
            attempt = _attempt(view, event.attempt, event.worker_id)
            attempt.ended_at, attempt.outcome = event.at, "retrying"
            attempt.code, attempt.error = event.code, event.error
            view.status = "queued"
        case ReplyCompleted():
            ended: Outcome = "cancelled" if cancelled or event.finish_reason == "cancelled" else "done"
            attempt = _attempt(view, event.attempt, event.worker_id)
            attempt.ended_at, attempt.outcome = event.at, ended
            view.status = "cancelled" if ended == "cancelled" else "done"
            view.result, view.finished_at = event.text, event.at
            total = event.prompt_tokens + event.completion_tokens
            view.usage = JobUsage(
                prompt_tokens=event.prompt_tokens,
                completion_tokens=event.completion_tokens,
                total_tokens=total,
            )
        case ReplyFailed():
            expired = event.code == "expired"
            attempt = _attempt(view, event.attempt, event.worker_id)
            attempt.ended_at, attempt.outcome = event.at, "expired" if expired else "error"
            attempt.code, attempt.error = event.code, event.error
            view.status = "expired" if expired else "error"
            view.finished_at = event.at
            view.error = JobError(code=event.code or "error", message=event.error)
        case WebhookAttempted():
            delivered = view.webhook.delivered or (event.final and 200 <= event.status < 300)
            view.webhook = JobWebhook(
                deliveries=event.delivery, last_status=event.status, delivered=delivered
            )


async def read_job_events(js: JetStream, chat_id: str, reply_id: str) -> list[schemas.Event]:
    """What a job is folded from, as the log holds it now: the chat's creation, its messages, the reply."""
    subjects = [
        chat_event(chat_id, "created"),
        chat_event(chat_id, "message.posted"),
        one_reply(chat_id, reply_id),
    ]
    msgs = await bus.read_all(js, CHAT.name, subjects)
    decoded = (bus.decode_one(m.subject, m.data, where=f"CHAT seq {m.seq}") for m in msgs)
    return [event for event in decoded if event is not None]


async def read_job(js: JetStream, chat_id: str, reply_id: str, now: datetime) -> JobView | None:
    """The job of a reply as the log holds it now; None when the reply was never asked."""
    return job_view(await read_job_events(js, chat_id, reply_id), reply_id, now)
