"""The read model's jobs: the `jobs` table, folded from the events of replies asked as jobs (a
`reply.requested` with `job`, schemas/job.py), and the query GET /v1/jobs asks of it.

A part of the fold (services/projector/fold.py) like services/projector/arena.py: the same pure functions
of events to rows, live and in replay. The status step is schemas/job_status.py's, the one GET
/v1/jobs/{job_id} folds from the log; a deadline passed while open reads `expired` at query time.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import duckdb
import msgspec
from msgspec.structs import asdict

import schemas
from schemas.api_jobs import JobList, JobSummary
from schemas.chat import (
    ReplyCancelled,
    ReplyCompleted,
    ReplyFailed,
    ReplyRequested,
    ReplyRetrying,
    ReplyStarted,
)
from schemas.job_status import status_after
from schemas.queries import ListJobs
from services.projector.queries import newest_first_page
from services.projector.rows import JobRow
from services.projector.tables import JOBS

if TYPE_CHECKING:
    from services.projector.batch import Rows
    from services.projector.service import Projector

JobEvent = ReplyStarted | ReplyCompleted | ReplyFailed | ReplyRetrying


class JobsFold:
    """Apply functions of the job events (mixed into `Fold`)."""

    tables: dict[str, Rows]

    def job_requested(self, seq: int, e: ReplyRequested) -> None:
        """A job's row (called for every reply requested; only jobs have one)."""
        if e.job is None:
            return
        batch = not e.imported  # an imported request is history, never a line of a batch (docs/batches.md)
        row = JobRow(
            reply_id=e.reply_id,
            job_id=e.job.job_id,
            owner_id=e.requested_by,
            session_id=e.job.session_id,
            chat_id=e.chat_id,
            model=e.model,
            status="queued",
            created_at=e.at,
            updated_at=e.at,
            deadline_at=e.job.deadline_at,
            batch_id=e.job.batch_id if batch else "",
            custom_id=e.job.custom_id if batch else "",
            line=e.job.line if batch else 0,
        )
        self.tables[JOBS.name].add(e.reply_id, asdict(row))

    def job_cancel_asked(self, seq: int, e: ReplyCancelled) -> None:
        """A cancel of a job asked: a batch line not started by then counts as cancelled (batches.py)."""
        job = self.tables[JOBS.name].known.get(e.reply_id)
        if job is not None and job["cancel_at"] is None:
            job["cancel_at"] = e.at
            if job["status"] == "queued":
                job["updated_at"] = e.at

    def job_moved(self, seq: int, e: JobEvent) -> None:
        """The job's status after an attempt's start, retry or end (ends are final)."""
        job = self.tables[JOBS.name].known.get(e.reply_id)
        if job is not None:
            if isinstance(e, ReplyStarted) and job["status"] == "queued" and job["cancel_at"] is not None:
                return  # cancelled before it started: the worker ends it unanswered (a batch counts it so)
            status = status_after(e, job["status"])
            if status != job["status"]:
                job.update(status=status, updated_at=e.at)
                if isinstance(e, ReplyFailed):
                    job["code"] = e.code


def _naive(at: datetime) -> datetime:
    return at.astimezone(UTC).replace(tzinfo=None)  # the file holds naive UTC


# The status as read: an open job past its deadline is expired.
_STATUS = (
    "CASE WHEN status IN ('queued', 'processing') AND deadline_at IS NOT NULL AND deadline_at <= ?"
    " THEN 'expired' ELSE status END"
)


def list_jobs(cur: duckdb.DuckDBPyConnection, query: ListJobs) -> JobList:
    """A user's jobs, newest first, `limit` (at most MAX_PAGE_SIZE) per page."""
    now = _naive(query.now)
    sql = (
        f"SELECT job_id, {_STATUS}, model, session_id, chat_id, created_at, updated_at, deadline_at,"
        " batch_id, custom_id, reply_id FROM jobs WHERE owner_id = ?"
    )
    params: list[Any] = [now, query.user_id]
    if query.session_id is not None:
        sql += " AND session_id = ?"
        params.append(query.session_id)
    if query.batch_id is not None:
        sql += " AND batch_id = ?"
        params.append(query.batch_id)
    if query.status is not None:
        sql += f" AND {_STATUS} = ?"
        params += [now, query.status]
    rows, next_cursor = newest_first_page(
        cur,
        sql,
        params,
        order=("created_at", "reply_id"),
        cursor=query.cursor,
        limit=query.limit,
        key=lambda values: (values[5], values[10]),
    )
    return JobList(items=[_summary(values) for values in rows], next_cursor=next_cursor)


def _summary(values: tuple[Any, ...]) -> JobSummary:
    job_id, status, model, session_id, chat_id, created, updated, deadline, batch_id, custom_id, _ = values
    return JobSummary(
        job_id=job_id,
        status=status,
        model=model,
        session_id=session_id or None,
        chat_id=chat_id,
        created_at=created.replace(tzinfo=UTC),
        updated_at=updated.replace(tzinfo=UTC),
        deadline_at=deadline.replace(tzinfo=UTC) if deadline is not None else None,
        batch_id=batch_id or None,
        custom_id=custom_id or None,
    )


def endpoints(projector: Projector) -> dict[str, Callable[[bytes], Awaitable[bytes]]]:
    """The micro service endpoint of the jobs: jobs.list."""

    async def jobs_list(data: bytes) -> bytes:
        query = msgspec.json.decode(data, type=ListJobs)
        await projector.wait_for(query.min_seq)
        return schemas.encode(await projector.read(list_jobs, query))

    return {"jobs.list": jobs_list}
