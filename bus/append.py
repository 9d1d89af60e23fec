"""Append events with a dedup id and, where order matters, an expected sequence."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from nats.errors import Error as NatsError
from nats.js import JetStreamContext
from nats.js.errors import APIError, NoStreamResponseError

import schemas
from bus.errors import BusError, BusUnavailable, ConcurrencyConflict
from schemas.subjects import subject_of

# JetStream error codes (server/errors.json) that mean "the expected sequence did not hold".
_WRONG_LAST_SEQUENCE = 10071
_WRONG_LAST_MSG_ID = 10070
_CONFLICT_CODES = {_WRONG_LAST_SEQUENCE, _WRONG_LAST_MSG_ID}


@dataclass(frozen=True)
class Appended:
    """Where an event landed; `duplicate` when the dedup id had been seen (nothing new stored)."""

    stream: str
    seq: int
    duplicate: bool


def _headers(msg_id: str, expected_subject_seq: int | None, expected_subject: str | None) -> dict[str, str]:
    headers = {"Nats-Msg-Id": msg_id}
    if expected_subject_seq is not None:
        headers["Nats-Expected-Last-Subject-Sequence"] = str(expected_subject_seq)
        if expected_subject is not None:
            headers["Nats-Expected-Last-Subject-Sequence-Subject"] = expected_subject
    return headers


async def append_raw(
    js: JetStreamContext,
    subject: str,
    payload: bytes,
    *,
    msg_id: str,
    expected_subject_seq: int | None = None,
    expected_subject: str | None = None,
    timeout: float = 5.0,
) -> Appended:
    """Publish bytes and await the ack; a conflict on the expected sequence raises ConcurrencyConflict.

    `expected_subject_seq` is the sequence of the last message on `expected_subject` (a subject
    or wildcard; default: the subject itself); 0 means "nothing there yet".
    """
    try:
        ack = await js.publish(
            subject,
            payload,
            timeout=timeout,
            headers=_headers(msg_id, expected_subject_seq, expected_subject),
        )
    except APIError as exc:
        if exc.err_code in _CONFLICT_CODES:
            raise ConcurrencyConflict(f"{subject}: {exc.description}") from exc
        raise BusError(f"append to {subject} refused: {exc.description} (code {exc.err_code})") from exc
    except NoStreamResponseError as exc:
        raise BusError(f"no stream takes subject {subject}: run `chatbus admin init`") from exc
    except NatsError as exc:  # timeout or cut connection: unknown whether stored; retry with the same id
        raise BusUnavailable(f"append to {subject} unanswered: {exc!r}") from exc
    return Appended(stream=ack.stream, seq=ack.seq, duplicate=bool(ack.duplicate))


async def append_event(
    js: JetStreamContext,
    event: schemas.Event,
    *,
    msg_id: str | None = None,
    expected_subject_seq: int | None = None,
    expected_subject: str | None = None,
) -> Appended:
    """Append one event on its subject; the dedup id is the event id unless given."""
    return await append_raw(
        js,
        subject_of(event),
        schemas.encode(event),
        msg_id=msg_id or event.event_id,  # type: ignore[union-attr]
        expected_subject_seq=expected_subject_seq,
        expected_subject=expected_subject,
    )


async def append_events(
    js: JetStreamContext, events: list[schemas.Event], timeout: float = 5.0
) -> list[Appended]:
    """Append events in this order with one round trip for all (each by its event id as dedup id).

    The server stores one connection's publishes in the order sent, so this keeps their order
    without waiting for each ack; a retry of the whole list after an error stores nothing twice.
    """
    futures = [
        await js.publish_async(
            subject_of(event),
            schemas.encode(event),
            headers={"Nats-Msg-Id": event.event_id},  # type: ignore[union-attr]
        )
        for event in events
    ]
    appended = []
    try:
        async with asyncio.timeout(timeout):
            for event, future in zip(events, futures, strict=True):
                subject = subject_of(event)
                try:
                    ack = await future
                except APIError as exc:
                    raise BusError(
                        f"append to {subject} refused: {exc.description} (code {exc.err_code})"
                    ) from exc
                except NoStreamResponseError as exc:
                    raise BusError(f"no stream takes subject {subject}: run `chatbus admin init`") from exc
                appended.append(Appended(stream=ack.stream, seq=ack.seq, duplicate=bool(ack.duplicate)))
    except TimeoutError as exc:
        raise BusUnavailable(f"appends unanswered after {timeout} s") from exc
    finally:
        for future in futures:
            future.cancel()  # no-op on the answered ones
    return appended


async def purge_subject(js: JetStreamContext, stream: str, subject: str) -> None:
    """Remove every message on `subject` (wildcards allowed) from a stream: erasure, not history."""
    try:
        await js.purge_stream(stream, subject=subject)
    except NatsError as exc:
        raise BusUnavailable(f"cannot purge {subject} from {stream}: {exc!r}") from exc


async def purge_before(js: JetStreamContext, stream: str, subject: str, seq: int) -> None:
    """Remove the messages on `subject` (wildcards allowed) whose sequence is below `seq`."""
    try:
        await js.purge_stream(stream, subject=subject, seq=seq)
    except NatsError as exc:
        raise BusUnavailable(f"cannot purge {subject} before {seq} from {stream}: {exc!r}") from exc
