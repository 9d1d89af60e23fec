"""A batch line as events: the pure part of expanding a batch into jobs (the `batches` service appends
them; docs/batches.md).

Every id of a line's events is derived from (batch id, line index), so a restarted expander makes the
same chat, messages and request again: the log's dedup ids and the chat's fenced create make each line
exactly one job however often it is expanded.
"""

from __future__ import annotations

import hashlib
from datetime import datetime

from schemas.batch import BatchCreated
from schemas.batch_lines import PlanLine
from schemas.chat import ChatCreated, MessagePosted, ReplyRequested
from schemas.job import JobSpec

BATCH_ORIGIN = "batch"
LineEvent = ChatCreated | MessagePosted | ReplyRequested
MAX_TITLE_CHARS = 80


def _derived(prefix: str, *parts: object) -> str:
    """A token-safe id (no "-": a job id joins two with one) derived from `parts`."""
    text = "\0".join(str(part) for part in parts)
    return prefix + hashlib.sha256(text.encode()).hexdigest()[:32]


def line_chat_id(batch_id: str, index: int) -> str:
    """The chat of a batch's line `index` (0-based)."""
    return _derived("c", batch_id, index)


def line_reply_id(batch_id: str, index: int) -> str:
    """The reply (the job) of a batch's line `index`."""
    return _derived("r", batch_id, index)


def line_job_id(batch_id: str, index: int) -> str:
    """The job id of a batch's line: `<chat_id>-<reply_id>`, as every job's."""
    return f"{line_chat_id(batch_id, index)}-{line_reply_id(batch_id, index)}"


def line_events(batch: BatchCreated, line: PlanLine, at: datetime) -> list[LineEvent]:
    """A line's events in order: its chat (origin "batch"), its turns, the reply request that is its job."""
    chat_id = line_chat_id(batch.batch_id, line.index)
    reply_id = line_reply_id(batch.batch_id, line.index)
    first = next((t.content for t in line.turns if t.role == "user" and t.content), line.custom_id)
    events: list[LineEvent] = [
        ChatCreated(
            event_id=_derived("e", batch.batch_id, line.index, "created"),
            chat_id=chat_id,
            at=at,
            owner_id=batch.owner_id,
            title=" ".join(first.split())[:MAX_TITLE_CHARS] or line.custom_id[:MAX_TITLE_CHARS],
            model=line.model,
            system_prompt=line.system_prompt,
            origin=BATCH_ORIGIN,
        )
    ]
    parent: str | None = None
    context: list[str] = []
    for j, turn in enumerate(line.turns):
        message = MessagePosted(
            event_id=_derived("e", batch.batch_id, line.index, "message", j),
            chat_id=chat_id,
            at=at,
            message_id=_derived("m", batch.batch_id, line.index, j),
            author_id=batch.owner_id,
            role=turn.role,  # type: ignore[arg-type]
            content=turn.content,
            parent_id=parent,
            author_name=batch.owner_id if turn.role == "user" else "",
        )
        events.append(message)
        parent = message.message_id
        context.append(message.message_id)
    job = JobSpec(
        job_id=f"{chat_id}-{reply_id}",
        deadline_at=batch.deadline_at,
        batch_id=batch.batch_id,
        custom_id=line.custom_id,
        line=line.index,
    )
    events.append(
        ReplyRequested(
            event_id=_derived("e", batch.batch_id, line.index, "requested"),
            chat_id=chat_id,
            at=at,
            reply_id=reply_id,
            message_id=parent or "",
            model=line.model,
            params=line.params,
            context=context,
            requested_by=batch.owner_id,
            job=job,
        )
    )
    return events
