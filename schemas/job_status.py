"""A job's status and attempts, from its reply's events: one pure fold shared by the API (GET /v1/jobs/{id}
reads the log) and the projector (the `jobs` table the list reads).

The status words: `queued` (requested, or waiting again after a failed attempt), `processing` (an attempt
started), `done` (completed: stop or length), `cancelled` (completed after a cancel), `expired` (failed with
code `expired`, or still queued/processing after its deadline: derived when read, so a deadline needs no
timer to be true), `error` (any other failure). An attempt that started and was followed by a higher one
without an end of its own is `lost`: the worker stopped answering and JetStream redelivered the job.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Literal

import msgspec

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
from schemas.openai import Usage  # a job's token counts are OpenAI's, as a completion's

JobStatus = Literal["queued", "processing", "done", "error", "cancelled", "expired"]
JOB_STATUSES: tuple[str, ...] = ("queued", "processing", "done", "error", "cancelled", "expired")
OPEN: frozenset[str] = frozenset({"queued", "processing"})
Outcome = Literal["done", "error", "retrying", "lost", "cancelled", "expired", ""]


class Attempt(msgspec.Struct, frozen=True, kw_only=True):
    """One attempt at a job: who worked on it, when, and how it ended ("": still running)."""

    attempt: int
    worker_id: str = ""
    started_at: datetime | None = None
    ended_at: datetime | None = None
    outcome: Outcome = ""
    code: str = ""
    error: str = ""


class JobError(msgspec.Struct, frozen=True, kw_only=True):
    """Why a job ended without an answer."""

    code: str
    message: str


class WebhookInfo(msgspec.Struct, frozen=True, kw_only=True):
    """Deliveries of the finished job to its callback URL so far."""

    deliveries: int = 0
    last_status: int | None = None
    delivered: bool = False


def status_after(event: ChatEvent, current: str) -> str:
    """The stored status after one reply event (the step the projector folds too; ends are final)."""
    if current in ("done", "error", "cancelled", "expired"):
        return current
    match event:
        case ReplyRequested() | ReplyRetrying():
            return "queued"
        case ReplyStarted():
            return "processing"
        case ReplyCompleted():
            return "cancelled" if event.finish_reason == "cancelled" else "done"
        case ReplyFailed():
            return "expired" if event.code == "expired" else "error"
    return current


def read_status(stored: str, deadline_at: datetime | None, now: datetime) -> JobStatus:
    """The status as read at `now`: an open job past its deadline is `expired`."""
    if stored in OPEN and deadline_at is not None and now >= deadline_at:
        return "expired"
    return stored  # type: ignore[return-value]


@dataclass
class JobState:
    """A job's reply events, folded in stream order."""

    request: ReplyRequested | None = None
    status: str = "queued"
    attempts: dict[int, Attempt] = field(default_factory=dict)
    answer: ReplyCompleted | None = None
    failure: ReplyFailed | None = None
    cancel_asked: bool = False
    started_at: datetime | None = None
    finished_at: datetime | None = None
    deliveries: int = 0
    last_status: int | None = None
    delivered: bool = False

    def apply(self, event: ChatEvent) -> None:
        """Fold one event of the reply."""
        ended = self.finished_at is not None
        self.status = status_after(event, self.status)
        match event:
            case ReplyRequested():
                self.request = self.request or event
            case ReplyStarted():
                one = self.attempts.get(event.attempt) or Attempt(attempt=event.attempt)
                started = one.started_at or event.at
                self.attempts[event.attempt] = msgspec.structs.replace(
                    one, worker_id=event.worker_id, started_at=started
                )
                self.started_at = self.started_at or event.at
            case ReplyRetrying():
                self._end(event.attempt, event.worker_id, event.at, "retrying", event.code, event.error)
            case ReplyCompleted() if not ended:
                self.answer, self.finished_at = event, event.at
                outcome: Outcome = "cancelled" if event.finish_reason == "cancelled" else "done"
                self._end(event.attempt, event.worker_id, event.at, outcome, "", "")
            case ReplyFailed() if not ended:
                self.failure, self.finished_at = event, event.at
                outcome = "expired" if event.code == "expired" else "error"
                self._end(event.attempt, event.worker_id, event.at, outcome, event.code, event.error)
            case ReplyCancelled():
                self.cancel_asked = True
            case WebhookAttempted():
                self.deliveries = max(self.deliveries, event.delivery)
                self.last_status = event.status
                self.delivered = self.delivered or 200 <= event.status < 300

    def _end(self, number: int, worker: str, at: datetime, outcome: Outcome, code: str, error: str) -> None:
        one = self.attempts.get(number) or Attempt(attempt=number)
        if one.outcome:
            return  # an attempt ends once (a zombie's late end changes nothing)
        self.attempts[number] = msgspec.structs.replace(
            one, worker_id=one.worker_id or worker, ended_at=at, outcome=outcome, code=code, error=error
        )

    def attempt_list(self) -> list[Attempt]:
        """Every attempt in order; a started one with a later attempt after it and no end is `lost`."""
        out = []
        highest = max(self.attempts, default=0)
        for number in sorted(self.attempts):
            one = self.attempts[number]
            if not one.outcome and number < highest:
                one = msgspec.structs.replace(one, outcome="lost", error="the worker stopped answering")
            out.append(one)
        return out

    def usage(self) -> Usage | None:
        """Token counts of the answer, if it has one."""
        if self.answer is None:
            return None
        prompt, completion = self.answer.prompt_tokens, self.answer.completion_tokens
        return Usage(prompt_tokens=prompt, completion_tokens=completion, total_tokens=prompt + completion)

    def error(self) -> JobError | None:
        """The failure, if the job ended with one."""
        if self.failure is None:
            return None
        return JobError(code=self.failure.code or "error", message=self.failure.error)

    def webhook(self) -> WebhookInfo:
        """Deliveries to the callback URL so far."""
        return WebhookInfo(deliveries=self.deliveries, last_status=self.last_status, delivered=self.delivered)

    def read_status(self, now: datetime) -> JobStatus:
        """The status at `now` (past its deadline while open: `expired`)."""
        deadline = self.request.job.deadline_at if self.request and self.request.job else None
        return read_status(self.status, deadline, now)


def job_state(events: Iterable[ChatEvent]) -> JobState:
    """The state of a job from its reply's events in stream order."""
    state = JobState()
    for event in events:
        state.apply(event)
    return state
