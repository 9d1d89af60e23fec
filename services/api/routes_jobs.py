"""Jobs routes: submit, read, list and cancel jobs, and a session's latest job (docs/jobs.md).

The logic is services/api/jobs.py (other front doors call it too); these handlers read the request and
shape the answer. Every route reaches the caller's own jobs only (another user's is a 404); admins read any.
"""

from __future__ import annotations

import re

from aiohttp import web

import schemas
from schemas.api_jobs import SESSION_ID_PATTERN, JobAccepted, JobBody, JobCancelled, JobList, JobRequest
from schemas.job_status import JOB_STATUSES
from schemas.queries import ListJobs
from services.api.auth import principal_of
from services.api.errors import ApiError, json_response
from services.api.inputs import query_int, query_str
from services.api.jobs import cancel_job, job_body, latest_job_id, own_job, read_job_request, submit_job
from services.api.keys import BUS, SETTINGS
from services.api.projector import min_seq_of, query
from services.api.route_spec import Param, Route

_SESSION_ID = re.compile(SESSION_ID_PATTERN)


def _session_id(value: str | None, param: str = "session_id") -> str | None:
    """A session id (1-128 of `[A-Za-z0-9_.:-]`), else 400; None when not given."""
    if value is not None and not _SESSION_ID.match(value):
        raise ApiError(400, "bad_parameter", f"{param}: 1 to 128 characters of A-Z a-z 0-9 _ . : -")
    return value


async def create_job(request: web.Request) -> web.StreamResponse:
    """POST /v1/jobs: append the job and answer 202 at once; poll `status_url`."""
    body = await read_job_request(request)
    accepted = await submit_job(request, body)
    return json_response(accepted, status=202, headers={"Location": accepted.status_url})


async def get_job(request: web.Request) -> web.StreamResponse:
    """GET /v1/jobs/{job_id}: the job as its events say now (read from the log, never stale)."""
    body = await job_body(request.app[BUS].js, request.match_info["job_id"], principal_of(request))
    return json_response(body)


async def list_jobs(request: web.Request) -> web.StreamResponse:
    """GET /v1/jobs: the caller's jobs, newest first, filtered by session and status, a page at a time."""
    page = request.app[SETTINGS].max_page_size
    status = query_str(request, "status", max_length=32)
    if status is not None and status not in JOB_STATUSES:
        raise ApiError(400, "bad_parameter", f"status: one of {', '.join(JOB_STATUSES)}")
    question = ListJobs(
        user_id=principal_of(request).user_id,
        session_id=_session_id(query_str(request, "session_id", max_length=128)),
        status=status,
        batch_id=query_str(request, "batch_id", max_length=64),
        now=schemas.now(),
        limit=query_int(request, "limit", min(50, page), low=1, high=page),
        cursor=query_str(request, "cursor"),
        min_seq=await min_seq_of(request),
    )
    return json_response(await query(request, "jobs.list", question, JobList))


async def cancel(request: web.Request) -> web.StreamResponse:
    """POST /v1/jobs/{job_id}/cancel: ask it to stop (202: the status the cancel found); 409 once ended."""
    principal = principal_of(request)
    js = request.app[BUS].js
    job_id = request.match_info["job_id"]
    log = await own_job(js, job_id, principal)
    status = await cancel_job(js, log, principal.user_id)
    return json_response(JobCancelled(job_id=job_id, status=status), status=202)


async def session_latest(request: web.Request) -> web.StreamResponse:
    """GET /v1/sessions/{session_id}/latest: the session's latest job (the body of GET /v1/jobs/{id})."""
    principal = principal_of(request)
    session_id = _session_id(request.match_info["session_id"])
    assert session_id is not None
    js = request.app[BUS].js
    job_id = await latest_job_id(js, principal.user_id, session_id)
    if job_id is None:
        raise ApiError(404, "not_found", f"no job in session {session_id!r}")
    return json_response(await job_body(js, job_id, principal))


# The jobs' part of the route table (services/api/routes.py).
JOB_ROUTES: tuple[Route, ...] = (
    Route(
        "POST",
        "/v1/jobs",
        create_job,
        "jobs.create",
        status=202,
        body=JobRequest,
        answer=JobAccepted,
    ),
    Route(
        "GET",
        "/v1/jobs",
        list_jobs,
        "jobs.list",
        answer=JobList,
        params=(
            Param("session_id", "string", "Only the jobs of this session."),
            Param("status", "string", "Only jobs in this status: queued, processing, done, error, ..."),
            Param("batch_id", "string", "Only the lines of this batch."),
            Param("limit", "integer", "Page size, 1 to CHATBUS_MAX_PAGE_SIZE (default 50)."),
            Param("cursor", "string", "The `next_cursor` of the previous page."),
            Param(
                "min_seq", "integer", "Read your writes: wait until the read model has applied this CHAT seq."
            ),
        ),
    ),
    Route("GET", "/v1/jobs/{job_id}", get_job, "jobs.get", answer=JobBody),
    Route("POST", "/v1/jobs/{job_id}/cancel", cancel, "jobs.cancel", status=202, answer=JobCancelled),
    Route(
        "GET",
        "/v1/sessions/{session_id}/latest",
        session_latest,
        "sessions.latest",
        answer=JobBody,
    ),
)
