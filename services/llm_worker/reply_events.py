"""What a worker appends on a reply: its end events, and the fence that lets only one attempt append."""

from __future__ import annotations

import logging

import msgspec

import bus
import schemas
from bus import ConcurrencyConflict, Delivery
from schemas.chat import ReplyCompleted, ReplyFailed, ReplyRequested, ReplyRetrying, ReplyStarted
from schemas.ids import new_id
from schemas.job import JobSpec
from schemas.streams import CHAT
from schemas.subjects import REPLY_ENDS, one_reply, reply_kind
from services.llm_worker.attempts import Refusal, expired_error, gave_up_error, last_cause
from services.llm_worker.settings import WorkerSettings

log = logging.getLogger(__name__)
_request_decoder = msgspec.json.Decoder(ReplyRequested)


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
    js: bus.JetStream,
    event: ReplyStarted | ReplyCompleted | ReplyFailed | ReplyRetrying,
    msg_id: str,
    expected: int | None,
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


async def retry(
    js: bus.JetStream, end: ReplyFailed, retry_in_s: float, fence: int, delivery: Delivery
) -> None:
    """Instead of the end `end`: record `reply.retrying` (fenced by our `started`) and hand the request back
    to JetStream, which delivers it again, as the next attempt, after `retry_in_s` seconds."""
    retrying = ReplyRetrying(
        event_id=new_id("e"),
        chat_id=end.chat_id,
        at=schemas.now(),
        reply_id=end.reply_id,
        attempt=end.attempt,
        worker_id=end.worker_id,
        code=end.code,
        error=end.error,
        retry_in_s=retry_in_s,
    )
    if await append_fenced(js, retrying, f"{end.reply_id}.retrying.{end.attempt}", fence) is None:
        last = await bus.last_msg(js, CHAT.name, one_reply(end.chat_id, end.reply_id))
        # Ours, deduplicated (a publish retried after its ack was lost); else a later attempt or an end got
        # there first, and the request is not ours to hand back.
        if last is None or schemas.decode_event(last.data) != retrying:
            log.warning("reply %s attempt %s was superseded; not retrying it", end.reply_id, end.attempt)
            return
    log.info("reply %s attempt %s failed (%s); again in %ss", end.reply_id, end.attempt, end.code, retry_in_s)
    await delivery.nak(delay=retry_in_s)


async def refuse(
    js: bus.JetStream,
    settings: WorkerSettings,
    request: ReplyRequested,
    job: JobSpec,
    delivery: Delivery,
    why: Refusal,
) -> None:
    """End a job's reply without serving the delivery (no `reply.started`): `expired` (its deadline passed)
    or `gave_up` (beyond its attempts; the error says what ended the last one), then ack it."""
    if why == "expired":
        error = expired_error(job, delivery.attempt)
    else:
        stored = await bus.read_direct(js, CHAT.name, one_reply(request.chat_id, request.reply_id))
        error = gave_up_error(
            delivery.attempt - 1, last_cause([schemas.decode_event(m.data) for m in stored])
        )
    end = failed(settings, request, delivery.attempt, error, why)
    # None: the reply has ended already (an earlier delivery's end, not acked before its worker died).
    await append_fenced(js, end, f"{request.reply_id}.end", None)
    await delivery.ack()


async def end_given_up(js: bus.JetStream, settings: WorkerSettings, advisory_data: bytes) -> None:
    """On JetStream's max-deliveries advisory (the last delivery's worker died too): end the reply with
    `reply.failed` code `gave_up`, once."""
    try:
        advisory = bus.decode_max_deliveries(advisory_data)
        stored = await bus.msg_at(js, advisory.stream, advisory.stream_seq)
        if stored is None:
            return
        request = _request_decoder.decode(stored.data)
        last = await bus.last_msg(js, CHAT.name, one_reply(request.chat_id, request.reply_id))
        if last is not None and reply_kind(last.subject) in REPLY_ENDS:
            return
        error = f"no worker finished it in {advisory.deliveries} attempts"
        await bus.append_event(
            js,
            failed(settings, request, advisory.deliveries, error, "gave_up"),
            msg_id=f"{request.reply_id}.end",
        )
    except (bus.BusError, msgspec.DecodeError):  # logged, not raised: the advisory is not redelivered
        log.exception("could not end a reply JetStream gave up on")
