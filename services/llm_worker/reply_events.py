"""What a worker appends on a reply: its end events, and the fence that lets only one attempt append."""

from __future__ import annotations

import logging

import bus
import schemas
from bus import ConcurrencyConflict, Delivery
from schemas.chat import ReplyCompleted, ReplyFailed, ReplyRequested, ReplyStarted
from schemas.ids import new_id
from schemas.streams import CHAT
from schemas.subjects import REPLY_ENDS, one_reply, reply_kind
from services.llm_worker.settings import WorkerSettings

log = logging.getLogger(__name__)


def failed(
    settings: WorkerSettings, request: ReplyRequested, attempt: int, error: str, code: str
) -> ReplyFailed:
    """This worker's `reply.failed` for an attempt, with an error a client can act on by `code`."""
    return ReplyFailed(
        event_id=new_id("e"),
        chat_id=request.chat_id,
        at=schemas.now(),
        reply_id=request.reply_id,
        attempt=attempt,
        worker_id=settings.worker_id,
        error=error,
        code=code,
    )


def completed(
    settings: WorkerSettings,
    request: ReplyRequested,
    attempt: int,
    text: str,
    prompt_tokens: int,
    completion_tokens: int,
    finish_reason: str,
    queue_ms: float,
    first_token_ms: float,
    generation_ms: float,
    images_seen: list[str] | None = None,
    images_ignored: list[str] | None = None,
    context_dropped: list[str] | None = None,
) -> ReplyCompleted:
    """This worker's `reply.completed` for an attempt, with its text, usage and timings."""
    return ReplyCompleted(
        event_id=new_id("e"),
        chat_id=request.chat_id,
        at=schemas.now(),
        reply_id=request.reply_id,
        attempt=attempt,
        worker_id=settings.worker_id,
        model=settings.alias,
        text=text,
        prompt_tokens=prompt_tokens,
        completion_tokens=completion_tokens,
        finish_reason=finish_reason,  # type: ignore[arg-type]
        queue_ms=queue_ms,
        first_token_ms=first_token_ms,
        generation_ms=generation_ms,
        images_seen=images_seen or [],
        images_ignored=images_ignored or [],
        speaker=request.speaker,
        context_dropped=context_dropped or [],
    )


async def append_fenced(
    js: bus.JetStream, event: ReplyStarted | ReplyCompleted | ReplyFailed, msg_id: str, expected: int | None
) -> int | None:
    """Append on the reply only if nothing but a cancel landed on it since `expected` (our `started`;
    None: whatever is last now). Returns the sequence, or None when another attempt or an end got
    there first: then this attempt's result must be dropped."""
    reply_all = one_reply(event.chat_id, event.reply_id)
    if expected is None:
        last = await bus.last_msg(js, CHAT.name, reply_all)
        if last is None or reply_kind(last.subject) in REPLY_ENDS:
            return None
        expected = last.seq
    for _ in range(20):
        try:
            appended = await bus.append_event(
                js,
                event,
                msg_id=msg_id,
                expected_subject_seq=expected,
                expected_subject=reply_all,
            )
        except ConcurrencyConflict:
            last = await bus.last_msg(js, CHAT.name, reply_all)
            if last is None or reply_kind(last.subject) != "cancelled":
                return None
            expected = last.seq  # a cancel is not a competitor: append after it
            continue
        return None if appended.duplicate else appended.seq
    return None


async def finish(
    js: bus.JetStream, end: ReplyCompleted | ReplyFailed, fence: int, delivery: Delivery
) -> None:
    """Append the one end event, fenced by our `started`; a zombie's late result is refused."""
    if await append_fenced(js, end, f"{end.reply_id}.end", fence) is None:
        last = await bus.last_msg(js, CHAT.name, one_reply(end.chat_id, end.reply_id))
        if last is not None and reply_kind(last.subject) in REPLY_ENDS and last.seq >= fence:
            pass  # the end is in the log (ours, deduplicated after a retry): acking is right
        else:
            # A later attempt owns this reply now; its worker acks the request, we must not.
            log.warning("reply %s attempt %s was superseded; dropping its result", end.reply_id, end.attempt)
            return
    await delivery.ack()
