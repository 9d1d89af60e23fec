"""Bodies of the batch routes (`/v1/batches`, `/v1/files`; docs/batches.md): OpenAI's Batch and File
objects, so the official SDKs work, plus chatbus's own counts."""

from __future__ import annotations

from typing import Annotated, Literal

import msgspec

from schemas.batch_lines import LineError
from schemas.openai import ChatCompletion

BatchStatus = Literal[
    "validating", "in_progress", "finalizing", "completed", "failed", "expired", "cancelling", "cancelled"
]
CHAT_COMPLETIONS = "/v1/chat/completions"
MAX_METADATA_KEYS = 16


class RequestCounts(msgspec.Struct, frozen=True, kw_only=True):
    """OpenAI's counts: lines in all, lines answered, lines that ended without an answer."""

    total: int
    completed: int
    failed: int


class LineCounts(msgspec.Struct, frozen=True, kw_only=True):
    """How many of a batch's lines are in each job status (schemas/job_status.py)."""

    queued: int = 0
    processing: int = 0
    done: int = 0
    error: int = 0
    cancelled: int = 0
    expired: int = 0


class BatchError(msgspec.Struct, frozen=True, kw_only=True):
    """Why a batch failed (OpenAI's batch error)."""

    code: str
    message: str
    param: str | None = None
    line: int | None = None


class BatchErrors(msgspec.Struct, frozen=True, kw_only=True):
    """A failed batch's errors (OpenAI's shape)."""

    object: str = "list"
    data: list[BatchError]


class Batch(msgspec.Struct, frozen=True, kw_only=True):
    """OpenAI's Batch object; times are unix seconds. `chatbus_counts` is chatbus's own."""

    id: str
    object: str = "batch"
    endpoint: str = CHAT_COMPLETIONS
    errors: BatchErrors | None = None  # why the batch failed
    input_file_id: str | None
    completion_window: str
    status: BatchStatus
    output_file_id: str | None
    error_file_id: str | None
    created_at: int
    in_progress_at: int | None = None
    expires_at: int | None = None
    finalizing_at: int | None = None
    completed_at: int | None = None
    failed_at: int | None = None
    expired_at: int | None = None
    cancelling_at: int | None = None
    cancelled_at: int | None = None
    request_counts: RequestCounts
    metadata: dict[str, str] | None = None
    model: str = ""  # the default model of lines that name none
    chatbus_counts: LineCounts


class BatchList(msgspec.Struct, frozen=True, kw_only=True):
    """OpenAI's list of batches, newest first."""

    object: str = "list"
    data: list[Batch]
    first_id: str | None
    last_id: str | None
    has_more: bool


MAX_METADATA_KEY_CHARS = 64
MAX_METADATA_VALUE_CHARS = 512
# OpenAI's metadata: at most 16 keys of at most 64 characters, values of at most 512.
Metadata = Annotated[
    dict[
        Annotated[str, msgspec.Meta(max_length=MAX_METADATA_KEY_CHARS)],
        Annotated[str, msgspec.Meta(max_length=MAX_METADATA_VALUE_CHARS)],
    ],
    msgspec.Meta(max_length=MAX_METADATA_KEYS),
]


class CreateBatchRequest(msgspec.Struct, frozen=True, kw_only=True):
    """POST /v1/batches as JSON (what the openai SDK sends): a batch of an uploaded file's lines.

    Fields chatbus does not implement (`output_expires_after`, ...) are taken and ignored, as the SDKs
    send them (docs/batches.md)."""

    input_file_id: Annotated[str, msgspec.Meta(min_length=1, max_length=64)]
    endpoint: str = CHAT_COMPLETIONS
    completion_window: str = "24h"
    metadata: Metadata | None = None


class FileObject(msgspec.Struct, frozen=True, kw_only=True):
    """OpenAI's File object: an uploaded batch input, or a batch's output or errors (virtual)."""

    id: str
    object: str = "file"
    bytes: int
    created_at: int
    filename: str
    purpose: str
    status: str = "processed"


class LineResponse(msgspec.Struct, frozen=True, kw_only=True):
    """A done line's answer: the chat completion as /v1/chat/completions returns it."""

    status_code: int = 200
    request_id: str  # the line's job id
    body: ChatCompletion


class LineFailure(msgspec.Struct, frozen=True, kw_only=True):
    """Why a line ended without an answer: `cancelled`, `expired`, or its reply's failure code."""

    code: str
    message: str


class OutputLine(msgspec.Struct, frozen=True, kw_only=True):
    """A line of a batch's output or errors file (OpenAI's batch output format)."""

    id: str  # batch_req_<reply_id>
    custom_id: str
    response: LineResponse | None
    error: LineFailure | None


class InvalidBatchDetail(msgspec.Struct, frozen=True, kw_only=True):
    """What was wrong with a batch's input (OpenAI's error shape) and the first lines at fault (<= 20)."""

    message: str
    type: str = "invalid_request_error"
    param: str | None = None
    code: str = "invalid_batch"
    lines: list[LineError]


class InvalidBatch(msgspec.Struct, frozen=True, kw_only=True):
    """The 400 body of a batch refused for its lines (nothing was stored)."""

    error: InvalidBatchDetail
