"""Llamalith's request and answer shapes (`/llamalith/chat/api/...`, docs/jobs.md), field for field as its
FastAPI handlers have them, so an n8n workflow written for Llamalith moves by changing its base URL.

Llamalith's job row is {id, conversation_id, user_input, model, system_prompt, status, result, created_at,
processed_at} with the status words `queued`, `processing`, `done`, `error` (its worker writes no others;
a failed job's `result` is the error's text). chatbus adds `job_id` and `session_id` (the same values as
`id` and `conversation_id`) and `chatbus_status`, its own word (`cancelled` and `expired` read `error`).
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

import msgspec

from schemas.api import MAX_SYSTEM_PROMPT

LlamalithStatus = Literal["queued", "processing", "done", "error"]
LLAMALITH_STATUSES: tuple[str, ...] = ("queued", "processing", "done", "error")
# chatbus's status words (schemas/job_status.py) as Llamalith says them.
LLAMALITH_STATUS: dict[str, LlamalithStatus] = {
    "queued": "queued",
    "processing": "processing",
    "done": "done",
    "error": "error",
    "expired": "error",
    "cancelled": "error",
}


class SubmitRequest(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """POST /llamalith/chat/api/submit: Llamalith's ChatRequest. `session_id` continues a conversation
    (absent or empty: a new one); `model` absent: the default model."""

    user_input: str
    model: str | None = None
    session_id: str | None = None
    system_prompt: Annotated[str, msgspec.Meta(max_length=MAX_SYSTEM_PROMPT)] = ""


class SubmitAnswer(msgspec.Struct, frozen=True, kw_only=True):
    """Llamalith's answer to a submit: the job to poll and the conversation to continue."""

    job_id: str
    conversation_id: str
    created_new: bool
    status: LlamalithStatus
    session_id: str


class LlamalithJob(msgspec.Struct, frozen=True, kw_only=True):
    """GET /llamalith/chat/api/jobs/{job_id}: Llamalith's job row (and chatbus's names for two fields)."""

    id: str
    job_id: str
    conversation_id: str | None
    session_id: str | None
    user_input: str
    model: str
    system_prompt: str
    status: LlamalithStatus
    result: str | None
    created_at: datetime
    processed_at: datetime | None
    chatbus_status: str


class LlamalithJobs(msgspec.Struct, frozen=True, kw_only=True):
    """GET /llamalith/chat/api/jobs: newest first."""

    jobs: list[LlamalithJob]


class LlamalithSessionStatus(msgspec.Struct, frozen=True, kw_only=True):
    """GET /llamalith/chat/api/status/{session_id}: `response` is the session's latest answer once its
    latest job is done (null before, and for a session with no job); the latest job's id and status."""

    response: str | None
    job_id: str | None
    status: LlamalithStatus | None
