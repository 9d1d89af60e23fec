"""Batches: the logic of the batch routes (services/api/routes_batches.py; docs/batches.md).

A batch is stored as its checked plan (object store `batch_inputs`) and the event `batch.created`; the
`batches` service makes each line a job. What a batch is comes from the log (stream BATCHES: its
created, expanded and cancelled events, read at each request as bots are); how far its lines are, and
their answers, from the read model's `jobs` table (projector `batches.counts`, `batches.results`).
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import datetime, timedelta

import msgspec
from aiohttp import web

import bus
import schemas
from bus import JetStream
from identity.accounts import Principal
from schemas.api_batches import Batch, BatchError, BatchErrors, BatchStatus, LineCounts, RequestCounts
from schemas.batch import BatchCancelled, BatchCreated, BatchExpanded
from schemas.batch_lines import PlanLine, encode_plan
from schemas.batch_queries import BatchCounts, BatchCountsAnswer, BatchResults, BatchResultsAnswer, LineResult
from schemas.ids import is_valid_id, new_id
from schemas.streams import BATCH_INPUTS_OBJECTS, BATCHES, CHAT
from schemas.subjects import ANY, batch_event
from services.api.errors import ApiError
from services.api.keys import BUS
from services.api.projector import query

MAX_WINDOW = timedelta(days=7)
_WINDOW = re.compile(r"^([1-9][0-9]{0,5})([hm])\Z")
OUTPUT_SUFFIX = "-output"
ERRORS_SUFFIX = "-errors"


def parse_window(text: str) -> timedelta:
    """A completion window: `<n>h` or `<n>m`, at most 7 days (400 otherwise)."""
    match = _WINDOW.match(text)
    if match is None:
        raise ApiError(
            400,
            "invalid_request_error",
            "completion_window: `24h`, or `<n>h` / `<n>m`",
            param="completion_window",
        )
    amount, unit = int(match.group(1)), match.group(2)
    window = timedelta(hours=amount) if unit == "h" else timedelta(minutes=amount)
    if window > MAX_WINDOW:
        raise ApiError(
            400,
            "invalid_request_error",
            "completion_window: at most 7 days (168h)",
            param="completion_window",
        )
    return window


async def store_batch(
    js: JetStream,
    owner_id: str,
    plan: list[PlanLine],
    *,
    model: str,
    window: str,
    metadata: dict[str, str] | None,
    input_file_id: str = "",
) -> BatchCreated:
    """Keep the checked plan, then append `batch.created` (the `batches` service makes the jobs)."""
    batch_id = new_id("q")
    await bus.put_object(js, BATCH_INPUTS_OBJECTS.bucket, batch_id, encode_plan(plan))
    now = schemas.now()
    created = BatchCreated(
        event_id=new_id("e"),
        batch_id=batch_id,
        at=now,
        owner_id=owner_id,
        lines=len(plan),
        model=model,
        completion_window=window,
        deadline_at=now + parse_window(window),
        metadata=metadata or {},
        input_file_id=input_file_id,
        input_object=batch_id,
    )
    await bus.append_event(js, created)
    return created


@dataclass(frozen=True)
class BatchLog:
    """A batch's own events."""

    created: BatchCreated
    expanded: BatchExpanded | None
    cancelled: BatchCancelled | None


async def _last(js: JetStream, subject: str) -> schemas.Event | None:
    msg = await bus.last_msg(js, BATCHES.name, subject)
    return None if msg is None else bus.decode_one(msg.subject, msg.data)


async def read_batch(js: JetStream, batch_id: str) -> BatchLog | None:
    """A batch's events from the log; None when there is no such batch."""
    if not is_valid_id(batch_id):
        return None
    created, expanded, cancelled = await asyncio.gather(
        *(_last(js, batch_event(batch_id, kind)) for kind in ("created", "expanded", "cancelled"))
    )
    if not isinstance(created, BatchCreated):
        return None
    return BatchLog(
        created=created,
        expanded=expanded if isinstance(expanded, BatchExpanded) else None,
        cancelled=cancelled if isinstance(cancelled, BatchCancelled) else None,
    )


async def own_batch(js: JetStream, batch_id: str, principal: Principal) -> BatchLog:
    """The caller's batch (admins: any); another user's, or none, is a 404."""
    log = await read_batch(js, batch_id)
    if log is None or not (principal.is_admin or log.created.owner_id == principal.user_id):
        raise ApiError(404, "not_found", f"no batch {batch_id[:80]!r}")
    return log


async def owned_batches(js: JetStream, principal: Principal) -> list[BatchCreated]:
    """The caller's batches, newest first (read from the log)."""
    mine = []
    for msg in await bus.read_all(js, BATCHES.name, [batch_event(ANY, "created")]):
        event = bus.decode_one(msg.subject, msg.data)
        if isinstance(event, BatchCreated) and event.owner_id == principal.user_id:
            mine.append(event)
    mine.sort(key=lambda e: (e.at, e.batch_id), reverse=True)
    return mine


async def line_counts(request: web.Request, owner_id: str, batch_ids: list[str]) -> BatchCountsAnswer:
    """How far the lines of these batches of `owner_id` are, as of the log's end now (read your writes)."""
    min_seq = await bus.last_seq(request.app[BUS].js, CHAT.name)
    question = BatchCounts(owner_id=owner_id, batch_ids=batch_ids, now=schemas.now(), min_seq=min_seq)
    return await query(request, "batches.counts", question, BatchCountsAnswer)


def _unix(at: datetime | None) -> int | None:
    return None if at is None else int(at.timestamp())


def batch_body(log: BatchLog, counts: LineCounts, last_ended: datetime | None, now: datetime) -> Batch:
    """The OpenAI Batch object of a batch, its status from its events and its lines' counts.

    A batch has ended once it is expanded and each line made is counted ended (none queued or
    processing). Lines never made count `expired` (the window passed first) or `error` (the expander
    could not make them: the batch is `failed`). A cancel that came after every line had ended changes
    nothing: the batch stays completed."""
    created, expanded = log.created, log.expanded
    made = expanded.lines if expanded is not None else created.lines  # lines counted once all ended
    if expanded is not None and made < created.lines and (expanded.expired or expanded.error):
        unmade, made = created.lines - made, created.lines
        if expanded.expired:
            counts = msgspec.structs.replace(counts, expired=counts.expired + unmade)
        else:
            counts = msgspec.structs.replace(counts, error=counts.error + unmade)
    failed = counts.error + counts.cancelled + counts.expired
    open_lines = counts.queued + counts.processing
    all_ended = expanded is not None and open_lines == 0 and counts.done + failed >= made
    status: BatchStatus = "in_progress"
    times: dict[str, int | None] = {}
    end_at = _unix(last_ended) or _unix(now)
    cancelled = log.cancelled
    if cancelled is not None and all_ended and last_ended is not None and last_ended <= cancelled.at:
        cancelled = None  # it had ended before the cancel: completed
    errors = None
    if expanded is not None and expanded.error:
        errors = BatchErrors(data=[BatchError(code="batch_failed", message=expanded.error)])
    if cancelled is not None:
        times["cancelling_at"] = _unix(cancelled.at)
        status = "cancelled" if all_ended else "cancelling"
        if all_ended:
            times["cancelled_at"] = max(end_at or 0, _unix(cancelled.at) or 0)
    elif all_ended and errors is not None:
        status, times["failed_at"] = "failed", end_at
    elif all_ended:
        deadline = created.deadline_at
        if counts.expired and deadline is not None and deadline <= now:
            status, times["expired_at"] = "expired", _unix(deadline)
        else:
            status, times["completed_at"], times["finalizing_at"] = "completed", end_at, end_at
    return Batch(
        id=created.batch_id,
        endpoint=created.endpoint,
        errors=errors,
        input_file_id=created.input_file_id or None,
        completion_window=created.completion_window,
        status=status,
        output_file_id=created.batch_id + OUTPUT_SUFFIX,
        error_file_id=created.batch_id + ERRORS_SUFFIX,
        created_at=int(created.at.timestamp()),
        in_progress_at=int(created.at.timestamp()),
        expires_at=_unix(created.deadline_at),
        request_counts=RequestCounts(total=created.lines, completed=counts.done, failed=failed),
        metadata=created.metadata or None,
        model=created.model,
        chatbus_counts=counts,
        **times,  # type: ignore[arg-type]
    )


async def batch_bodies(request: web.Request, logs: list[BatchLog]) -> list[Batch]:
    """The Batch objects of these batches, with one counts query for each owner's (one, but for admins)."""
    owners: dict[str, list[str]] = {}
    for log in logs:
        owners.setdefault(log.created.owner_id, []).append(log.created.batch_id)
    answers = {owner: await line_counts(request, owner, ids) for owner, ids in owners.items()}
    now = schemas.now()
    bodies = []
    for log in logs:
        answer, batch_id = answers[log.created.owner_id], log.created.batch_id
        counts = answer.counts.get(batch_id, LineCounts())
        bodies.append(batch_body(log, counts, answer.last_ended.get(batch_id), now))
    return bodies


async def cancel_batch(js: JetStream, log: BatchLog, by: str, body: Batch) -> None:
    """Append `batch.cancelled` once (fenced); 409 when the batch has already ended."""
    if body.status in ("completed", "expired", "failed", "cancelled"):
        raise ApiError(
            409,
            "batch_finished",
            f"the batch has already ended ({body.status})",
            headers={"x-should-retry": "false"},  # the openai SDKs retry a 409 unless told not to
        )
    if log.cancelled is not None:
        return
    event = BatchCancelled(event_id=new_id("e"), batch_id=log.created.batch_id, at=schemas.now(), by=by)
    try:
        await bus.append_event(js, event, expected_subject_seq=0)
    except bus.ConcurrencyConflict:
        pass  # cancelled at the same moment by another request: once is enough


async def ended_lines(
    request: web.Request, batch_id: str, owner_id: str, done: bool
) -> AsyncIterator[LineResult]:
    """A batch's ended lines in line order (answered ones, or the others), a page at a time."""
    min_seq = await bus.last_seq(request.app[BUS].js, CHAT.name)
    after = -1
    while True:
        question = BatchResults(
            batch_id=batch_id, owner_id=owner_id, done=done, now=schemas.now(), after=after, min_seq=min_seq
        )
        page = await query(request, "batches.results", question, BatchResultsAnswer)
        for item in page.items:
            yield item
        if not page.more or not page.items:
            return
        after = page.items[-1].line
