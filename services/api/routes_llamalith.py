"""Llamalith's four API routes under `/llamalith/chat/api` (docs/jobs.md): an n8n workflow written for
Llamalith moves to chatbus by changing its base URL (and sending a chatbus API key as its Bearer token).

They are the jobs API in Llamalith's words (services/api/jobs.py does the work): a `session_id` is a
Llamalith conversation; a submit without one starts a new conversation with a fresh id (a UUID, as
Llamalith makes them) which the answer names, so the workflow can continue it. Field names and status words
are Llamalith's (schemas/api_llamalith.py). The caller's own jobs only, as every jobs route.
"""

from __future__ import annotations

import asyncio
import uuid

import msgspec
from aiohttp import web

import schemas
from identity.accounts import Principal
from logtools.job_view import body_of
from schemas.api_jobs import JobBody, JobList, JobRequest
from schemas.api_llamalith import (
    LLAMALITH_STATUS,
    LLAMALITH_STATUSES,
    LlamalithJob,
    LlamalithJobs,
    LlamalithSessionStatus,
    SubmitAnswer,
    SubmitRequest,
)
from schemas.queries import ListJobs
from services.api.auth import principal_of
from services.api.errors import ApiError, json_response
from services.api.inputs import query_int, query_str, read_body
from services.api.jobs import latest_job_id, own_job, submit_job
from services.api.keys import BUS, SETTINGS
from services.api.projector import query
from services.api.route_spec import Param, Route

PREFIX = "/llamalith/chat/api"
DEFAULT_LIMIT = 100  # Llamalith's
# The list reads each job's row from the log (an ordered consumer each): this many at once per request.
LIST_READS = 8
# Llamalith's field for each of the jobs API's, in the messages of a 400.
_FIELDS = {
    "input": "user_input",
    "session_id": "session_id",
    "model": "model",
    "system_prompt": "system_prompt",
}


def _job_request(body: SubmitRequest, session_id: str) -> JobRequest:
    """The jobs API's request for a Llamalith submit; a value the jobs API refuses is a 400 naming the
    Llamalith field."""
    fields = {
        "input": body.user_input,
        "model": body.model or None,
        "session_id": session_id,
        "system_prompt": body.system_prompt or None,  # Llamalith sends "" for none
    }
    try:
        return msgspec.convert(fields, JobRequest)
    except msgspec.ValidationError as exc:
        text = str(exc)
        field = next((name for ours, name in _FIELDS.items() if f"$.{ours}" in text), "user_input")
        message = text.split(" - at ", 1)[0]
        raise ApiError(400, "bad_request", f"{field}: {message}", param=field) from None


async def submit(request: web.Request) -> web.StreamResponse:
    """POST /llamalith/chat/api/submit: queue the prompt as a job of the conversation `session_id`."""
    body = await read_body(request, SubmitRequest)
    given = (body.session_id or "").strip()
    session_id = given or str(uuid.uuid4())
    try:
        accepted = await submit_job(request, _job_request(body, session_id))
    except ApiError as exc:
        if exc.param in _FIELDS:  # name Llamalith's field, not the jobs API's
            field = _FIELDS[exc.param]
            message = exc.message.replace(f"{exc.param}: ", f"{field}: ", 1)
            raise ApiError(exc.status, exc.code, message, exc.headers, field) from None
        raise
    answer = SubmitAnswer(
        job_id=accepted.job_id,
        conversation_id=session_id,
        created_new=not given,
        status="queued",
        session_id=session_id,
    )
    return json_response(answer)


def _finished_text(body: JobBody) -> str | None:
    """Llamalith's `result`: the answer once done; a job that ended without one says why (as Llamalith's
    worker writes its error there)."""
    if body.status == "done":
        return body.result
    if body.error is not None:
        return body.error.message
    return f"the job was {body.status}" if body.finished_at is not None else None


def llamalith_job(body: JobBody, system_prompt: str) -> LlamalithJob:
    """A job as Llamalith's job row."""
    return LlamalithJob(
        id=body.job_id,
        job_id=body.job_id,
        conversation_id=body.session_id,
        session_id=body.session_id,
        user_input=body.input,
        model=body.model,
        system_prompt=system_prompt,
        status=LLAMALITH_STATUS[body.status],
        result=_finished_text(body),
        created_at=body.created_at,
        processed_at=body.finished_at,
        chatbus_status=body.status,
    )


async def _row(request: web.Request, job_id: str, principal: Principal) -> LlamalithJob:
    log = await own_job(request.app[BUS].js, job_id, principal)
    return llamalith_job(body_of(log, schemas.now()), log.created.system_prompt if log.created else "")


async def get_job(request: web.Request) -> web.StreamResponse:
    """GET /llamalith/chat/api/jobs/{job_id}: the job, read from the log (never stale)."""
    return json_response(await _row(request, request.match_info["job_id"], principal_of(request)))


async def session_status(request: web.Request) -> web.StreamResponse:
    """GET /llamalith/chat/api/status/{session_id}: the conversation's latest answer (null until its latest
    job is done, and for a conversation with no job)."""
    principal = principal_of(request)
    session_id = request.match_info["session_id"]
    job_id = await latest_job_id(request.app[BUS].js, principal.user_id, session_id)
    if job_id is None:
        return json_response(LlamalithSessionStatus(response=None, job_id=None, status=None))
    row = await _row(request, job_id, principal)
    response = row.result if row.status == "done" else None
    return json_response(LlamalithSessionStatus(response=response, job_id=job_id, status=row.status))


async def list_jobs(request: web.Request) -> web.StreamResponse:
    """GET /llamalith/chat/api/jobs?conversation_id=&status=&limit=: the caller's jobs, newest first, each
    as GET jobs/{id} has it."""
    principal = principal_of(request)
    most = request.app[SETTINGS].max_page_size
    limit = query_int(request, "limit", min(DEFAULT_LIMIT, most), low=1, high=most)
    status = query_str(request, "status", max_length=32)
    if status is not None and status not in LLAMALITH_STATUSES:
        raise ApiError(
            400, "bad_parameter", f"status: one of {', '.join(LLAMALITH_STATUSES)}", param="status"
        )
    ours = [s for s, theirs in LLAMALITH_STATUS.items() if status is None or theirs == status]
    session_id = query_str(request, "conversation_id", max_length=128)
    now = schemas.now()
    asks = [
        ListJobs(
            user_id=principal.user_id,
            session_id=session_id,
            status=None if status is None else one,
            now=now,
            limit=limit,
        )
        for one in (ours if status is not None else [None])
    ]
    pages = await asyncio.gather(*(query(request, "jobs.list", ask, JobList) for ask in asks))
    summaries = sorted((s for page in pages for s in page.items), key=lambda s: s.created_at, reverse=True)
    reads = asyncio.Semaphore(LIST_READS)

    async def row(job_id: str) -> LlamalithJob | None:
        async with reads:
            try:
                return await _row(request, job_id, principal)
            except ApiError as exc:
                if exc.status == 404:  # erased since the read model listed it
                    return None
                raise

    rows = await asyncio.gather(*(row(s.job_id) for s in summaries[:limit]))
    return json_response(LlamalithJobs(jobs=[r for r in rows if r is not None]))


# Llamalith's part of the route table (services/api/routes.py).
LLAMALITH_ROUTES: tuple[Route, ...] = (
    Route("POST", f"{PREFIX}/submit", submit, "llamalith.submit", body=SubmitRequest, answer=SubmitAnswer),
    Route("GET", f"{PREFIX}/jobs/{{job_id}}", get_job, "llamalith.jobs.get", answer=LlamalithJob),
    Route(
        "GET",
        f"{PREFIX}/status/{{session_id}}",
        session_status,
        "llamalith.status",
        answer=LlamalithSessionStatus,
    ),
    Route(
        "GET",
        f"{PREFIX}/jobs",
        list_jobs,
        "llamalith.jobs.list",
        answer=LlamalithJobs,
        params=(
            Param("conversation_id", "string", "Only the jobs of this conversation (a jobs `session_id`)."),
            Param("status", "string", "Only jobs in this Llamalith status: queued, processing, done, error."),
            Param("limit", "integer", "How many, 1 to CHATBUS_MAX_PAGE_SIZE (default 100 or that)."),
        ),
    ),
)
