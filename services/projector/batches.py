"""The read model's answers about batches: each line is a job in the `jobs` table (batch_id, custom_id,
line), its answer the reply's row (services/projector/jobs.py). Status as read: an open line past its
deadline is `expired`, as GET /v1/jobs says."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import duckdb
import msgspec

import schemas
from schemas.api_batches import LineCounts
from schemas.batch_queries import (
    RESULTS_PAGE,
    BatchCounts,
    BatchCountsAnswer,
    BatchResults,
    BatchResultsAnswer,
    LineResult,
)

if TYPE_CHECKING:
    from services.projector.service import Projector

MAX_BATCHES_COUNTED = 200  # batches one counts query may name (a page of the list)

# A line still queued (never started) when its cancel came counts as cancelled: a worker skips it if
# it ever pulls it, and with no worker for its model it would wait for its deadline otherwise.
_STATUS = (
    "CASE WHEN j.status IN ('queued', 'processing') AND j.deadline_at IS NOT NULL AND j.deadline_at <= ?"
    " THEN 'expired' WHEN j.status = 'queued' AND j.cancel_at IS NOT NULL THEN 'cancelled'"
    " ELSE j.status END"
)


def _naive(at: datetime) -> datetime:
    return at.astimezone(UTC).replace(tzinfo=None)  # the file holds naive UTC


def count_lines(cur: duckdb.DuckDBPyConnection, query: BatchCounts) -> BatchCountsAnswer:
    """The lines of each batch in each status, and when the last ended line of each ended."""
    ids = query.batch_ids[:MAX_BATCHES_COUNTED]
    if not ids:
        return BatchCountsAnswer(counts={})
    marks = ", ".join("?" for _ in ids)
    rows = cur.execute(
        f"SELECT j.batch_id, {_STATUS} AS s, count(*), max(j.updated_at) FROM jobs j"
        f" WHERE j.batch_id IN ({marks}) AND j.owner_id = ? GROUP BY j.batch_id, s",
        [_naive(query.now), *ids, query.owner_id],
    ).fetchall()
    counts: dict[str, dict[str, int]] = {}
    ended: dict[str, datetime] = {}
    for batch_id, status, count, updated in rows:
        counts.setdefault(batch_id, {})[status] = count
        if status not in ("queued", "processing"):
            at = updated.replace(tzinfo=UTC)
            ended[batch_id] = max(ended.get(batch_id, at), at)
    return BatchCountsAnswer(
        counts={batch_id: LineCounts(**by_status) for batch_id, by_status in counts.items()},
        last_ended=ended,
    )


def line_results(cur: duckdb.DuckDBPyConnection, query: BatchResults) -> BatchResultsAnswer:
    """A page of a batch's ended lines, in line order: the answered ones, or the others."""
    wanted = "= 'done'" if query.done else "IN ('error', 'cancelled', 'expired')"
    limit = max(1, min(query.limit, RESULTS_PAGE))
    rows = cur.execute(
        f"SELECT j.line, j.custom_id, j.job_id, j.reply_id, {_STATUS} AS s, j.model, r.text, r.prompt_tokens,"
        " r.completion_tokens, r.finish_reason, j.code, r.error, j.created_at"
        " FROM jobs j LEFT JOIN replies r ON r.reply_id = j.reply_id"
        f" WHERE j.batch_id = ? AND j.owner_id = ? AND j.line > ? AND s {wanted} ORDER BY j.line LIMIT ?",
        [_naive(query.now), query.batch_id, query.owner_id, query.after, limit + 1],
    ).fetchall()
    items = [_result(values) for values in rows[:limit]]
    return BatchResultsAnswer(items=items, more=len(rows) > limit)


def _result(values: tuple[Any, ...]) -> LineResult:
    line, custom_id, job_id, reply_id, status, model, text, prompt, completion, finish, code, err, at = values
    return LineResult(
        line=line,
        custom_id=custom_id,
        job_id=job_id,
        reply_id=reply_id,
        status=status,
        model=model,
        text=text or "",
        prompt_tokens=prompt or 0,
        completion_tokens=completion or 0,
        finish_reason=finish or "",
        code=code or "",
        error=err or "",
        created_at=at.replace(tzinfo=UTC),
    )


def endpoints(projector: Projector) -> dict[str, Callable[[bytes], Awaitable[bytes]]]:
    """The micro service endpoints of batches: batches.counts, batches.results."""

    async def counts(data: bytes) -> bytes:
        query = msgspec.json.decode(data, type=BatchCounts)
        await projector.wait_for(query.min_seq)
        return schemas.encode(await projector.read(count_lines, query))

    async def results(data: bytes) -> bytes:
        query = msgspec.json.decode(data, type=BatchResults)
        await projector.wait_for(query.min_seq)
        return schemas.encode(await projector.read(line_results, query))

    return {"batches.counts": counts, "batches.results": results}
