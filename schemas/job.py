"""Jobs: a reply asked through the automation front door (`POST /v1/jobs`, batches, Llamalith's routes).

A job is an ordinary reply request of an ordinary chat (origin "jobs"; a `session_id` names one chat of the
caller, so a session keeps its history across jobs), whose `ReplyRequested.job` says what makes it a job:
its deadline, how many attempts it may take, where to POST the finished job, and the batch line it came
from. Everything else — attempts, the answer, a cancel — is the reply's own events, so a job is audited,
replayed, exported and erased like any chat.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

import msgspec

MAX_JOB_ATTEMPTS = 10
MAX_CALLBACK_URL_CHARS = 2048


class JobSpec(msgspec.Struct, frozen=True, kw_only=True):
    """What makes a reply request a job. `job_id` is what the caller polls (GET /v1/jobs/{job_id})."""

    job_id: str
    session_id: str = (
        ""  # the caller's name for the chat that keeps this job's history ("": a chat of its own)
    )
    # When the job ends as `expired` if it has not finished (its generation is cancelled); None: no deadline.
    deadline_at: datetime | None = None
    # Attempts it may take when a failure is not the input's (a worker died, an engine error), retried with
    # exponential backoff; 0: the worker's own limit (its consumer's max_deliver).
    max_attempts: Annotated[int, msgspec.Meta(ge=0, le=MAX_JOB_ATTEMPTS)] = 0
    callback_url: str = ""  # POSTed the finished job, signed (docs/jobs.md); "" for none
    batch_id: str = ""  # the batch it is a line of ("" for none)
    custom_id: str = ""  # the batch line's `custom_id`
    line: int = 0  # the batch line's index in its input (0-based): results are listed in input order
