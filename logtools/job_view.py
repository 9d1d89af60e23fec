"""A job as the log holds it: the body of `GET /v1/jobs/{job_id}`, which a webhook delivery POSTs too.

`fold_job` is pure (the chat's creation, the messages and the reply's events, in log order; the status
rule and the attempts are schemas/job_status.py's `JobState`); `read_job` reads those events from the
log, so the body is never stale; `body_of` is the JSON both the API and the webhooks service send.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime

import bus
import schemas
from bus import JetStream
from schemas.api_jobs import JobBody
from schemas.chat import ChatCreated, ChatEvent, MessagePosted, ReplyRequested, WebhookAttempted
from schemas.job_status import JobError, JobState
from schemas.streams import CHAT
from schemas.subjects import chat_event, one_chat, one_reply


def job_id_of(chat_id: str, reply_id: str) -> str:
    """What a caller polls: the chat and the reply, joined by "-" (which no id holds)."""
    return f"{chat_id}-{reply_id}"


@dataclass
class JobLog:
    """A job as the log holds it: its chat's creation, the message it answers, its reply's events."""

    chat_id: str
    reply_id: str
    created: ChatCreated | None = None
    input: str = ""
    state: JobState = field(default_factory=JobState)
    deliveries: list[WebhookAttempted] = field(default_factory=list)  # its webhook's, in log order

    @property
    def request(self) -> ReplyRequested | None:
        """The reply request when it is a job's (None: no such reply, or an ordinary chat's)."""
        request = self.state.request
        return request if request is not None and request.job is not None else None


def fold_job(chat_id: str, reply_id: str, events: Iterable[schemas.Event]) -> JobLog:
    """Fold the chat's creation, its messages and the reply's events (in log order) into the job."""
    log = JobLog(chat_id, reply_id)
    messages: dict[str, str] = {}
    for event in events:
        match event:
            case ChatCreated():
                log.created = log.created or event
            case MessagePosted():
                messages.setdefault(event.message_id, event.content)
            case ChatEvent() if getattr(event, "reply_id", None) == reply_id:
                log.state.apply(event)
                if isinstance(event, WebhookAttempted):
                    log.deliveries.append(event)
    request = log.state.request
    if request is not None:
        log.input = messages.get(request.message_id, "")
    return log


async def read_job(js: JetStream, chat_id: str, reply_id: str) -> JobLog:
    """A job's events (and its chat's creation and messages) as the log holds them now, folded."""
    subjects = [
        chat_event(chat_id, "created"),
        chat_event(chat_id, "message.posted"),
        one_reply(chat_id, reply_id),
    ]
    msgs = await bus.read_subjects(js, CHAT.name, one_chat(chat_id), subjects)
    decoded = (bus.decode_one(m.subject, m.data, where=f"CHAT seq {m.seq}") for m in msgs)
    return fold_job(chat_id, reply_id, (event for event in decoded if event is not None))


def body_of(log: JobLog, now: datetime) -> JobBody:
    """The job's body as its events say at `now` (an open job past its deadline reads `expired`)."""
    state, request = log.state, log.request
    assert request is not None and request.job is not None, "body_of needs a job's reply"
    job = request.job
    status = state.read_status(now)
    answer = state.answer
    result = answer.text if answer is not None and answer.finish_reason != "error" else None
    return JobBody(
        job_id=job.job_id,
        status=status,
        model=request.model,
        session_id=job.session_id or None,
        chat_id=log.chat_id,
        input=log.input,
        result=result,
        usage=state.usage(),
        attempts=state.attempt_list(),
        error=state.error() or _expired_error(status),
        created_at=request.at,
        started_at=state.started_at,
        finished_at=state.finished_at,
        deadline_at=job.deadline_at,
        callback_url=job.callback_url or None,
        webhook=state.webhook(),
    )


def _expired_error(status: str) -> JobError | None:
    """The error of a job read as expired before the worker recorded it (its deadline passed while open)."""
    if status != "expired":
        return None
    return JobError(code="expired", message="the deadline passed before the job finished")
