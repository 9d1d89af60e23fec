"""The REST API's bodies for jobs (`/v1/jobs`, `/v1/sessions/{session_id}/latest`): what an automation
sends and what it reads back (docs/jobs.md). A job is a reply of a chat of origin "jobs" (schemas/job.py)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

import msgspec

from schemas.api import MAX_SYSTEM_PROMPT, ModelAlias
from schemas.ids import ID_PATTERN
from schemas.job import MAX_CALLBACK_URL_CHARS, MAX_JOB_ATTEMPTS
from schemas.job_status import Attempt, JobError, WebhookInfo
from schemas.openai import MAX_MESSAGES, InputMessage, Usage
from schemas.sampling import SamplingParams

SESSION_ID_PATTERN = r"^[A-Za-z0-9_.:-]{1,128}\Z"
MAX_DEADLINE_SECONDS = 86_400
SessionId = Annotated[str, msgspec.Meta(pattern=SESSION_ID_PATTERN)]


class JobRequest(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """POST /v1/jobs: `input` (one user message) or `messages` (OpenAI-style: earlier turns, the last the
    user's), `model` (else the default) or `bot` (a bot the caller may use)."""

    input: str | None = None
    messages: Annotated[list[InputMessage], msgspec.Meta(min_length=1, max_length=MAX_MESSAGES)] | None = None
    model: ModelAlias | None = None
    bot: Annotated[str, msgspec.Meta(pattern=ID_PATTERN)] | None = None
    session_id: SessionId | None = None
    system_prompt: Annotated[str, msgspec.Meta(max_length=MAX_SYSTEM_PROMPT)] | None = None
    params: SamplingParams | None = None
    deadline_seconds: Annotated[int, msgspec.Meta(ge=1, le=MAX_DEADLINE_SECONDS)] | None = None
    max_attempts: Annotated[int, msgspec.Meta(ge=1, le=MAX_JOB_ATTEMPTS)] | None = None
    callback_url: Annotated[str, msgspec.Meta(min_length=1, max_length=MAX_CALLBACK_URL_CHARS)] | None = None


class JobAccepted(msgspec.Struct, frozen=True, kw_only=True):
    """202 answer to POST /v1/jobs: poll `status_url` (GET /v1/jobs/{job_id})."""

    job_id: str
    status_url: str
    status: str
    session_id: str | None
    chat_id: str


class JobBody(msgspec.Struct, frozen=True, kw_only=True):
    """GET /v1/jobs/{job_id}: the job as its reply's events say now (read from the log, never stale)."""

    job_id: str
    status: str
    model: str
    session_id: str | None
    chat_id: str
    input: str
    result: str | None
    usage: Usage | None
    attempts: list[Attempt]
    error: JobError | None
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    deadline_at: datetime | None
    callback_url: str | None
    webhook: WebhookInfo


class JobSummary(msgspec.Struct, frozen=True, kw_only=True):
    """One job of GET /v1/jobs (from the read model: the body itself is GET /v1/jobs/{job_id})."""

    job_id: str
    status: str
    model: str
    session_id: str | None
    chat_id: str
    created_at: datetime
    updated_at: datetime
    deadline_at: datetime | None
    batch_id: str | None = None
    custom_id: str | None = None


class JobList(msgspec.Struct, frozen=True, kw_only=True):
    """GET /v1/jobs: newest first; follow `next_cursor` (null on the last page)."""

    items: list[JobSummary]
    next_cursor: str | None


class JobCancelled(msgspec.Struct, frozen=True, kw_only=True):
    """202 answer to POST /v1/jobs/{job_id}/cancel: the job's status as the cancel found it."""

    job_id: str
    status: str
