"""A job's attempts as pure rules (no NATS): which delivery is refused, which failure is asked again and
after how long, and what the attempts before a give-up left behind."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Literal

from schemas.chat import ReplyRetrying, ReplyStarted
from schemas.job import JobSpec

# Failures that are not the input's: another attempt (perhaps on another worker) may succeed.
RETRYABLE: frozenset[str] = frozenset({"engine_error"})
# The input's own failures: the same request fails the same way every time, so it is never asked again.
INPUT_FAILURES: frozenset[str] = frozenset({"invalid_prompt", "context_length_exceeded"})
MAX_BACKOFF_S = 60.0

Refusal = Literal["expired", "gave_up"]


def attempt_limit(job: JobSpec, max_deliver: int) -> int:
    """How many attempts a job may take: its own `max_attempts`, never more than the consumer delivers."""
    if job.max_attempts > 0:
        return min(job.max_attempts, max_deliver) if max_deliver > 0 else job.max_attempts
    return max_deliver


def backoff_s(attempt: int) -> float:
    """Seconds before the attempt after `attempt` (1, 2, 4, ... up to a minute)."""
    return min(2.0 ** (max(attempt, 1) - 1), MAX_BACKOFF_S)


def retry_in(job: JobSpec | None, attempt: int, code: str, max_deliver: int) -> float | None:
    """Seconds to wait before asking a failed attempt again, or None when the failure is final: a reply
    that is not a job, a failure that is the input's (or of no retryable kind), or no attempts left."""
    if job is None or code not in RETRYABLE:
        return None
    if attempt >= attempt_limit(job, max_deliver):
        return None
    return backoff_s(attempt)


def seconds_left(job: JobSpec | None, now: datetime) -> float | None:
    """Seconds until the job's deadline (negative once passed), or None without one; a deadline without
    a time zone (appended by hand) is read as UTC."""
    if job is None or job.deadline_at is None:
        return None
    deadline = job.deadline_at
    if deadline.tzinfo is None:
        deadline = deadline.replace(tzinfo=UTC)
    return (deadline - now).total_seconds()


def refusal(job: JobSpec | None, attempt: int, now: datetime) -> Refusal | None:
    """Why a delivery of a job must end its reply at once instead of being served: its deadline passed
    (`expired`), or it is an attempt beyond the job's `max_attempts` (`gave_up`); None: serve it."""
    if job is None:
        return None
    left = seconds_left(job, now)
    if left is not None and left <= 0:
        return "expired"
    if 0 < job.max_attempts < attempt:
        return "gave_up"
    return None


def expired_error(job: JobSpec, attempt: int, tokens: int | None = None) -> str:
    """The error of a job ended by its deadline: before `attempt` could start (None), or cancelled in it
    after `tokens` tokens."""
    if tokens is not None:
        return f"deadline passed after {tokens} tokens"
    at = job.deadline_at.isoformat() if job.deadline_at is not None else "?"
    return f"deadline passed ({at}) before attempt {attempt} could start"


def last_cause(events: Sequence[object]) -> str:
    """What ended the last attempt recorded in a reply's events: its `reply.retrying` error, or (a
    started attempt with nothing after it) that its worker stopped answering."""
    started = [e for e in events if isinstance(e, ReplyStarted)]
    retried = {e.attempt: e for e in events if isinstance(e, ReplyRetrying)}
    if not started:
        return "no attempt started (each delivery was lost before it began)"
    last = max(started, key=lambda e: e.attempt)
    if last.attempt in retried:
        retrying = retried[last.attempt]
        return f"attempt {last.attempt}: {retrying.code}: {retrying.error}"
    return f"attempt {last.attempt} was lost: worker {last.worker_id} stopped answering"


def gave_up_error(attempts: int, cause: str) -> str:
    """The error of a job that used up its attempts."""
    return f"gave up after {attempts} attempt{'' if attempts == 1 else 's'}: {cause}"
