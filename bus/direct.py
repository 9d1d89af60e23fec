"""Small reads without a consumer: JetStream's batched Direct Get (nats-server 2.11+, ADR-31).

A reply request reads its chat's events; so do the API's posting and the job view. Through an ordered
consumer each of those reads creates a consumer on the server and deletes it again, which costs the server
CPU and, with hundreds of reads in flight, trips its consumer limits. A batched Direct Get asks the stream
for up to `batch` messages on one subject (wildcards allowed) from a sequence on, in one request; the
server answers with the messages and an end-of-batch marker saying how many more match.

Any replica of a stream answers a direct get, so on a cluster one that is a few messages behind may
answer. A reader that must see a message it knows was stored (a worker, the reply request it was handed)
names its sequence as `min_seq`: an answer that stops short is asked again, then read from the stream's
leader through a consumer.
"""

from __future__ import annotations

import asyncio
import json
import time

from nats.errors import Error as NatsError
from nats.js import JetStreamContext

from bus.errors import BusUnavailable
from bus.reader import StoredMsg, read_all
from schemas.subjects import js_api, matches

_BATCH = 256
_BEHIND_RETRIES = 3


async def read_direct(
    js: JetStreamContext,
    stream: str,
    subject: str,
    start_seq: int = 1,
    timeout: float = 10.0,
    batch: int = _BATCH,
    min_seq: int = 0,
) -> list[StoredMsg]:
    """Every message on `subject` (wildcards allowed) from `start_seq` on, as far as the stream held them
    when the last batch was read, and at least up to `min_seq` (the sequence of a message on `subject`).
    The stream must allow direct gets (every stream of the catalogue does)."""
    for attempt in range(_BEHIND_RETRIES):
        out = await _read_batches(js, stream, subject, start_seq, timeout, batch)
        if not min_seq or (out and out[-1].seq >= min_seq):
            return out
        await asyncio.sleep(0.05 * (attempt + 1))  # a replica behind the leader: it catches up in ms
    return await read_all(js, stream, [subject], start_seq=start_seq, timeout=timeout)


async def _read_batches(
    js: JetStreamContext, stream: str, subject: str, start_seq: int, timeout: float, batch: int
) -> list[StoredMsg]:
    nc = js._nc  # noqa: SLF001 - nats-py's JetStreamContext keeps its connection private
    request_subject = js_api("DIRECT.GET", stream)
    deadline = time.monotonic() + timeout
    out: list[StoredMsg] = []
    seq = max(start_seq, 1)
    try:
        inbox = nc.new_inbox()
        sub = await nc.subscribe(inbox)
    except NatsError as exc:
        raise BusUnavailable(f"cannot read {stream} {subject}: {exc!r}") from exc
    try:
        while True:
            body = json.dumps({"seq": seq, "next_by_subj": subject, "batch": batch}).encode()
            await nc.publish(request_subject, body, reply=inbox)
            pending = None
            while pending is None:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"reading {stream} {subject}: got {len(out)} messages, then nothing")
                try:
                    msg = await sub.next_msg(timeout=left)
                except TimeoutError as exc:
                    raise TimeoutError(f"reading {stream} {subject}: no answer in {timeout:g} s") from exc
                headers = msg.headers or {}
                status = headers.get("Status")
                if status == "404":  # nothing (more) on the subject
                    return out
                if status == "204":  # end of this batch
                    pending = int(headers.get("Nats-Num-Pending", "0"))
                    seq = int(headers.get("Nats-Last-Sequence", str(seq - 1))) + 1
                    continue
                if status:
                    why = headers.get("Description", "")
                    raise BusUnavailable(f"cannot read {stream} {subject}: {status} {why}".strip())
                if "Nats-Num-Pending" not in headers:
                    raise BusUnavailable(f"reading {stream}: nats-server 2.11+ needed (batched direct get)")
                out.append(
                    StoredMsg(
                        stream=stream,
                        seq=int(headers["Nats-Sequence"]),
                        subject=headers.get("Nats-Subject", ""),
                        data=msg.data,
                        pending=int(headers["Nats-Num-Pending"]),
                    )
                )
            if pending == 0:
                return out
    except NatsError as exc:
        raise BusUnavailable(f"cannot read {stream} {subject}: {exc!r}") from exc
    finally:
        try:
            await sub.unsubscribe()
        except NatsError:
            pass


async def read_subjects(
    js: JetStreamContext,
    stream: str,
    within: str,
    subjects: list[str],
    timeout: float = 10.0,
    min_seq: int = 0,
) -> list[StoredMsg]:
    """The messages on any of `subjects`, all of them under `within` (e.g. one chat's `chat.<id>.>`), read
    in one pass over `within` (at least up to `min_seq`, see read_direct) and kept in stream order."""
    return [
        m
        for m in await read_direct(js, stream, within, timeout=timeout, min_seq=min_seq)
        if any(matches(s, m.subject) for s in subjects)
    ]
