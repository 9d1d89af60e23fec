"""What the API asks the projector about batches' lines (`projector.batches.counts`,
`projector.batches.results`): each line is a job in the read model's `jobs` table."""

from __future__ import annotations

from datetime import datetime

import msgspec

from schemas.api_batches import LineCounts

RESULTS_PAGE = 500  # lines a `batches.results` answer holds at most (one NATS reply stays small)


class BatchCounts(msgspec.Struct, frozen=True, kw_only=True):
    """Endpoint `projector.batches.counts`: how many lines of each batch are in each status at `now`
    (only the lines of `owner_id`'s jobs: the batches' owner)."""

    owner_id: str
    batch_ids: list[str]
    now: datetime
    min_seq: int = 0


class BatchCountsAnswer(msgspec.Struct, frozen=True, kw_only=True):
    """The counts of each batch asked (a batch with no job yet is absent), and when its last line ended."""

    counts: dict[str, LineCounts]
    last_ended: dict[str, datetime] = {}


class BatchResults(msgspec.Struct, frozen=True, kw_only=True):
    """Endpoint `projector.batches.results`: a batch's ended lines in line order, from line `after` + 1;
    `done` the answered ones (the output file), else the others (the errors file); only the lines of
    `owner_id`'s jobs (the batch's owner)."""

    batch_id: str
    owner_id: str
    done: bool
    now: datetime
    after: int = -1
    limit: int = RESULTS_PAGE
    min_seq: int = 0


class LineResult(msgspec.Struct, frozen=True, kw_only=True):
    """One ended line: its job, its answer or why it has none."""

    line: int
    custom_id: str
    job_id: str
    reply_id: str
    status: str
    model: str
    text: str = ""
    prompt_tokens: int = 0
    completion_tokens: int = 0
    finish_reason: str = ""
    code: str = ""
    error: str = ""
    created_at: datetime


class BatchResultsAnswer(msgspec.Struct, frozen=True, kw_only=True):
    """A page of results; `more` when lines after the last one may follow."""

    items: list[LineResult]
    more: bool
