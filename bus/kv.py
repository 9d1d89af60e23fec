"""A JetStream key-value bucket with typed errors: the one place that says how a KV miss looks.

`NotFound`: the key is missing, deleted, purged or expired. `Conflict`: a create found the key
there, or an update's revision is stale. `BusUnavailable`: NATS did not answer (timeout, no
responders, cut connection). Any other failure (e.g. the bucket was never declared) is a `BusError`.
A caller can thus act on a miss without ever reading an outage as "nothing there".
"""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import Awaitable
from dataclasses import dataclass
from typing import TypeVar

from nats.aio.msg import Msg
from nats.errors import Error as NatsError
from nats.js import JetStreamContext
from nats.js.api import DeliverPolicy
from nats.js.errors import (
    APIError,
    KeyWrongLastSequenceError,
    NoStreamResponseError,
    NotFoundError,
    ServiceUnavailableError,
)
from nats.js.kv import KV_DEL, KV_MARKER_REASON, KV_OP, KV_PURGE, KeyValue

from bus.errors import BusError, BusUnavailable, Conflict, NotFound
from schemas.subjects import kv_key, kv_prefix, kv_stream, parse_kv_subject

# JetStream error codes (server/errors.json).
_NO_MESSAGE_FOUND = 10037
_STREAM_NOT_FOUND = 10059
# The key rule of nats-py and the server: tokens of [-/_=a-zA-Z0-9] separated by dots.
_KEY = re.compile(r"^[-/_=a-zA-Z0-9]+(\.[-/_=a-zA-Z0-9]+)*\Z")  # \Z: `$` takes a trailing newline

_SCAN_IDLE = 5.0  # seconds a scan's ephemeral consumer outlives the scan (the server's default)

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class KVEntry:
    """A key's current value and its revision (the stream sequence an update must name)."""

    key: str
    value: bytes
    revision: int


class KV:
    """One KV bucket, opened without a round trip (the bucket is declared by `declare_kv`)."""

    def __init__(self, js: JetStreamContext, bucket: str) -> None:
        self.bucket = bucket
        self._js = js
        self._stream = kv_stream(bucket)
        # Built directly: nats-py's `js.key_value()` asks for the stream's info on every open.
        self._kv = KeyValue(name=bucket, stream=self._stream, pre=kv_prefix(bucket), js=js, direct=False)

    async def get(self, key: str) -> KVEntry:
        """The key's current entry; NotFound when it is missing, deleted, purged or expired."""
        msg = await self._call(
            f"get {key}", self._js.get_msg(self._stream, subject=self._subject(key), direct=False)
        )
        headers = msg.headers or {}
        if headers.get(KV_OP) in (KV_DEL, KV_PURGE) or KV_MARKER_REASON in headers:
            raise NotFound(f"{self.bucket}: {key} was deleted")
        return KVEntry(key=key, value=msg.data or b"", revision=msg.seq or 0)

    async def create(self, key: str, value: bytes) -> int:
        """Store a new key (a deleted one may be recreated); Conflict when it exists. The revision."""
        self._subject(key)
        return await self._call(f"create {key}", self._kv.create(key, value))

    async def update(self, key: str, value: bytes, revision: int) -> int:
        """Replace the value only if the key is still at `revision`; Conflict otherwise. The new revision."""
        self._subject(key)
        return await self._call(f"update {key}", self._kv.update(key, value, last=revision))

    async def put(self, key: str, value: bytes) -> int:
        """Store the value whatever was there. The revision."""
        self._subject(key)
        return await self._call(f"put {key}", self._kv.put(key, value))

    async def delete(self, key: str) -> None:
        """Delete the key (deleting a missing key is no error)."""
        self._subject(key)
        await self._call(f"delete {key}", self._kv.delete(key))

    async def entries(self, pattern: str = ">", timeout: float = 5.0) -> list[KVEntry]:
        """The current entries of the keys matching `pattern` (`*` one token, `>` the rest); deleted
        and expired keys are left out."""
        return await self._call(f"list {pattern}", self._scan(pattern, timeout))

    async def keys(self, pattern: str = ">", timeout: float = 5.0) -> list[str]:
        """The live keys matching `pattern`."""
        return [entry.key for entry in await self.entries(pattern, timeout)]

    async def _scan(self, pattern: str, timeout: float) -> list[KVEntry]:
        """The last entry of each key, read by an ordered consumer until it has delivered what the
        server counted when it was made (nats-py's watcher can signal "caught up" before a message the
        server already sent has been handed over, and a busy machine then lists nothing)."""
        arrived: asyncio.Queue[Msg] = asyncio.Queue()

        async def on_message(msg: Msg) -> None:
            arrived.put_nowait(msg)

        sub = await self._js.subscribe(
            kv_key(self.bucket, pattern),
            stream=self._stream,
            cb=on_message,
            ordered_consumer=True,
            deliver_policy=DeliverPolicy.LAST_PER_SUBJECT,
            inactive_threshold=_SCAN_IDLE,  # nats-py's default keeps a finished scan's consumer 5 minutes
        )
        try:
            info = await sub.consumer_info()
            total = (info.delivered.consumer_seq if info.delivered else 0) + (info.num_pending or 0)
            found: dict[str, KVEntry] = {}
            for _ in range(total):
                msg = await asyncio.wait_for(arrived.get(), timeout)
                parsed = parse_kv_subject(msg.subject)
                if parsed is None:
                    continue
                if msg.headers and msg.headers.get(KV_OP) in (KV_DEL, KV_PURGE):
                    found.pop(parsed.key, None)
                else:
                    found[parsed.key] = KVEntry(
                        key=parsed.key, value=msg.data, revision=msg.metadata.sequence.stream
                    )
            return list(found.values())
        finally:
            with contextlib.suppress(NatsError, ConnectionError):  # it expires on its own when idle
                await sub.unsubscribe()

    def _subject(self, key: str) -> str:
        if not _KEY.match(key):
            raise ValueError(f"not a valid KV key: {key!r}")
        return kv_key(self.bucket, key)

    async def _call(self, what: str, op: Awaitable[T]) -> T:
        """Await a nats-py call, its errors mapped to the bus's own."""
        try:
            return await op
        except KeyWrongLastSequenceError as exc:
            raise Conflict(f"{self.bucket}: {what}: {exc.description}") from exc
        except NotFoundError as exc:
            if exc.err_code == _NO_MESSAGE_FOUND:
                raise NotFound(f"{self.bucket}: {what}: no such key") from exc
            if exc.err_code == _STREAM_NOT_FOUND:
                raise self._missing(what) from exc
            raise BusError(f"{self.bucket}: {what}: {exc.description} (code {exc.err_code})") from exc
        except NoStreamResponseError as exc:
            raise self._missing(what) from exc
        except ServiceUnavailableError as exc:  # no responders: JetStream is down or electing a leader
            raise BusUnavailable(f"{self.bucket}: {what}: JetStream did not answer") from exc
        except APIError as exc:
            raise BusError(f"{self.bucket}: {what}: {exc.description} (code {exc.err_code})") from exc
        except (NatsError, ConnectionError) as exc:  # timeouts, a cut or closed connection
            raise BusUnavailable(f"{self.bucket}: {what}: no answer ({type(exc).__name__}: {exc})") from exc

    def _missing(self, what: str) -> BusError:
        return BusError(f"{self.bucket}: {what}: the bucket does not exist: run `chatbus admin init`")
