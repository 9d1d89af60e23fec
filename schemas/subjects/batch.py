"""Batch subjects: `batch.<batch_id>.<kind>` and `batchfile.<file_id>.uploaded`, in stream BATCHES."""

from __future__ import annotations

from typing import Literal, get_args

import msgspec

from schemas.subjects.roots import ANY, BATCH_FILE_ROOT, BATCH_ROOT, REST, join

BatchKind = Literal["created", "expanded", "cancelled"]
BATCH_KINDS: frozenset[str] = frozenset(get_args(BatchKind))
FileKind = Literal["uploaded"]
FILE_KINDS: frozenset[str] = frozenset(get_args(FileKind))
_UPLOADED: FileKind = "uploaded"


def batch_event(batch_id: str, kind: BatchKind) -> str:
    """Subject of a batch event, e.g. `batch.<batch_id>.created` (`batch_id` may be ANY)."""
    return join(BATCH_ROOT, batch_id, kind)


def batches_of_kind(kind: BatchKind) -> str:
    """Every batch's event of one kind: `batch.*.<kind>` (the expander's consumers filter on it)."""
    return join(BATCH_ROOT, ANY, kind)


def one_batch(batch_id: str) -> str:
    """Every event of one batch: `batch.<batch_id>.>` (erasure purges it)."""
    return join(BATCH_ROOT, batch_id, REST)


def file_uploaded(file_id: str) -> str:
    """Subject of an uploaded batch input file: `batchfile.<file_id>.uploaded`."""
    return join(BATCH_FILE_ROOT, file_id, _UPLOADED)


class BatchSubject(msgspec.Struct, frozen=True):
    """A batch event's subject, parsed."""

    batch_id: str
    kind: BatchKind


class FileSubject(msgspec.Struct, frozen=True):
    """A batch file event's subject, parsed."""

    file_id: str
    kind: FileKind


def parse_batch_subject(subject: str) -> BatchSubject | FileSubject | None:
    """The parts of a subject in BATCHES, or None."""
    parts = subject.split(".")
    if len(parts) != 3:
        return None
    if parts[0] == BATCH_ROOT and parts[2] in BATCH_KINDS:
        return BatchSubject(parts[1], parts[2])  # type: ignore[arg-type]
    if parts[0] == BATCH_FILE_ROOT and parts[2] in FILE_KINDS:
        return FileSubject(parts[1], parts[2])  # type: ignore[arg-type]
    return None
