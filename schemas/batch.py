"""Batches: a set of jobs, one per line of an OpenAI batch input, on subjects `batch.<batch_id>.>` and
`batchfile.<file_id>.>` in stream BATCHES (docs/batches.md).

The API checks every line and stores the checked plan in the object store `batch_inputs` (one
`PlanLine` a line, schemas/batch_lines.py) before it appends `batch.created`; the `batches` service
expands a created batch into one job a line (schemas/batch_decide.py). Each line's progress and result
is its job's (a reply of a chat of origin "batch"), so these events say only what the batch itself is.
"""

from __future__ import annotations

from datetime import datetime

import msgspec


class BatchEvent(msgspec.Struct, frozen=True, kw_only=True, tag_field="type"):
    """Base of batch events: every event names its batch, its own id and when it happened."""

    event_id: str
    batch_id: str
    at: datetime


class BatchCreated(BatchEvent, frozen=True, kw_only=True, tag="batch.created"):
    """A user submitted a batch; its checked lines are in the object store `batch_inputs` under
    `input_object`. Subject `batch.<batch_id>.created`."""

    owner_id: str
    lines: int
    model: str  # the default model of lines that name none
    endpoint: str = "/v1/chat/completions"
    completion_window: str = "24h"
    deadline_at: datetime | None = None  # every line's job expires then
    metadata: dict[str, str] = {}
    input_file_id: str = ""  # the uploaded file it was made from ("": posted as the body)
    input_object: str = ""  # its plan's name in `batch_inputs`


class BatchExpanded(BatchEvent, frozen=True, kw_only=True, tag="batch.expanded"):
    """Every line of the batch is a job now, or the expander stopped before the rest were made: the batch
    was cancelled, its completion window passed (`expired`), or its lines could not be made (`error`).

    Subject `batch.<batch_id>.expanded`."""

    lines: int  # how many lines were made jobs (the first `lines` of the input)
    expired: bool = False  # the rest were not made: the completion window had passed
    error: str = ""  # the rest were not made: why (the batch is `failed`)


class BatchCancelled(BatchEvent, frozen=True, kw_only=True, tag="batch.cancelled"):
    """The owner (or an admin) cancelled the batch: lines not yet ended are cancelled, no more are made.

    Subject `batch.<batch_id>.cancelled`."""

    by: str


class FileUploaded(msgspec.Struct, frozen=True, kw_only=True, tag_field="type", tag="batchfile.uploaded"):
    """A user uploaded a batch input file (`POST /v1/files`); its bytes are in the object store
    `batch_files` under its id. Subject `batchfile.<file_id>.uploaded`."""

    event_id: str
    file_id: str
    at: datetime
    owner_id: str
    filename: str
    bytes: int
    purpose: str = "batch"


BatchEventUnion = BatchCreated | BatchExpanded | BatchCancelled | FileUploaded
