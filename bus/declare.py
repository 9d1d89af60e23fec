"""Declare streams, KV buckets and consumers from their specs, idempotently."""

from __future__ import annotations

import dataclasses
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from nats.errors import Error as NatsError
from nats.js import JetStreamContext
from nats.js.api import (
    AckPolicy,
    ConsumerConfig,
    DeliverPolicy,
    DiscardPolicy,
    KeyValueConfig,
    ObjectStoreConfig,
    StorageType,
    StreamConfig,
)
from nats.js.errors import APIError, NotFoundError, ServiceUnavailableError

from bus.errors import BusError, BusUnavailable
from schemas.streams import (
    KV_BUCKETS,
    OBJECT_STORES,
    STREAMS,
    ConsumerSpec,
    KVSpec,
    ObjectStoreSpec,
    StreamSpec,
)
from schemas.subjects import kv_stream, object_stream


@dataclass(frozen=True)
class Change:
    """A setting of a declared stream or bucket that differs from the catalogue (or was changed)."""

    what: str  # "stream CHAT", "KV bucket workers", "object store images"
    setting: str
    old: str
    new: str

    def __str__(self) -> str:
        return f"{self.what}: {self.setting} {self.old} -> {self.new}"


def _stream_config(spec: StreamSpec, replicas: int) -> StreamConfig:
    return StreamConfig(
        name=spec.name,
        description=spec.description,
        subjects=list(spec.subjects),
        storage=StorageType.FILE if spec.storage == "file" else StorageType.MEMORY,
        max_age=spec.max_age,
        duplicate_window=spec.duplicate_window,
        deny_delete=spec.deny_delete,
        allow_direct=True,
        max_consumers=spec.max_consumers,
        discard=DiscardPolicy.OLD,
        num_replicas=replicas,
    )


def _owned(config: StreamConfig) -> dict[str, Any]:
    """The settings the catalogue owns (a stream's or a bucket's underlying stream's)."""
    return {
        "description": config.description or "",
        "subjects": sorted(config.subjects or []),
        "max_age": float(config.max_age or 0.0),
        "duplicate_window": float(config.duplicate_window or 0.0),
        "deny_delete": bool(config.deny_delete),
        "allow_direct": bool(config.allow_direct),
        "discard": config.discard,
        "max_msgs_per_subject": config.max_msgs_per_subject or -1,  # None and -1: no limit
        "num_replicas": config.num_replicas or 1,
        "max_consumers": config.max_consumers or -1,  # None and -1: the server's default
    }


def _reconcile(what: str, current: StreamConfig, wanted: StreamConfig) -> tuple[StreamConfig, list[Change]]:
    """The current config with the catalogue's settings applied, and what that changes."""
    have, want = _owned(current), _owned(wanted)
    changes = [
        Change(what, setting, str(have[setting]), str(want[setting]))
        for setting in have
        if have[setting] != want[setting]
    ]
    updated = dataclasses.replace(
        current,
        description=wanted.description,
        subjects=wanted.subjects,
        max_age=wanted.max_age,
        duplicate_window=wanted.duplicate_window,
        deny_delete=wanted.deny_delete,
        allow_direct=wanted.allow_direct,
        discard=wanted.discard,
        max_msgs_per_subject=wanted.max_msgs_per_subject,
        num_replicas=wanted.num_replicas,
        max_consumers=wanted.max_consumers,
    )
    return updated, changes


async def _existing(js: JetStreamContext, stream: str) -> StreamConfig | None:
    try:
        info = await js.stream_info(stream)
    except NotFoundError:
        return None
    return info.config


def _kv_config(spec: KVSpec, replicas: int) -> KeyValueConfig:
    return KeyValueConfig(
        bucket=spec.bucket,
        description=spec.description,
        ttl=spec.ttl or None,
        history=spec.history,
        replicas=replicas,
    )


@dataclass(frozen=True)
class _Declared:
    """A stream, KV bucket or object store of the catalogue: its JetStream stream, how to create it,
    and its settings as the catalogue wants them (applied to the stream as it is)."""

    what: str
    stream: str
    create: Callable[[int], Awaitable[Any]]
    wanted: Callable[[StreamConfig, int], StreamConfig]


def _stream(js: JetStreamContext, spec: StreamSpec) -> _Declared:
    return _Declared(
        f"stream {spec.name}",
        spec.name,
        lambda replicas: js.add_stream(_stream_config(spec, replicas)),
        lambda current, replicas: _stream_config(spec, replicas),
    )


def _kv(js: JetStreamContext, spec: KVSpec) -> _Declared:
    return _Declared(
        f"KV bucket {spec.bucket}",
        kv_stream(spec.bucket),
        lambda replicas: js.create_key_value(_kv_config(spec, replicas)),
        lambda current, replicas: dataclasses.replace(  # what nats-py's create sets
            current,
            description=spec.description,
            max_age=spec.ttl or 0.0,
            max_msgs_per_subject=spec.history,
            num_replicas=replicas,
        ),
    )


def _object_store(js: JetStreamContext, spec: ObjectStoreSpec) -> _Declared:
    return _Declared(
        f"object store {spec.bucket}",
        object_stream(spec.bucket),
        # nats-py overwrites config.bucket with its `bucket` argument: pass both.
        lambda replicas: js.create_object_store(
            spec.bucket,
            config=ObjectStoreConfig(bucket=spec.bucket, description=spec.description, replicas=replicas),
        ),
        lambda current, replicas: dataclasses.replace(
            current, description=spec.description, num_replicas=replicas
        ),
    )


async def _ensure(js: JetStreamContext, item: _Declared, replicas: int | None, apply: bool) -> list[Change]:
    """Create `item` when missing (`replicas` or 1). When it exists: the settings where it differs from
    the catalogue (replicas as given, else its own), changed only if `apply`."""
    current = await _existing(js, item.stream)
    if current is None:
        await item.create(replicas or 1)
        return [Change(item.what, "created", "-", f"{replicas or 1} replica(s)")] if apply else []
    wanted = item.wanted(current, replicas or current.num_replicas or 1)
    updated, changes = _reconcile(item.what, current, wanted)
    if apply and changes:
        await js.update_stream(updated)
    return changes


async def declare_stream(js: JetStreamContext, spec: StreamSpec, replicas: int | None = None) -> list[Change]:
    """Create the stream when it is missing; an existing one is left as it is (the list says where it
    differs from the catalogue)."""
    return await _ensure(js, _stream(js, spec), replicas, apply=False)


async def declare_kv(js: JetStreamContext, spec: KVSpec, replicas: int | None = None) -> list[Change]:
    """Create the KV bucket when it is missing; an existing one is left as it is (see declare_stream)."""
    return await _ensure(js, _kv(js, spec), replicas, apply=False)


async def declare_consumer(js: JetStreamContext, spec: ConsumerSpec) -> None:
    """Create the durable pull consumer (all requests ever made for its filter, acked explicitly)."""
    config = ConsumerConfig(
        durable_name=spec.durable,
        filter_subject=spec.filter_subject,
        ack_policy=AckPolicy.EXPLICIT,
        deliver_policy=DeliverPolicy.ALL,
        ack_wait=spec.ack_wait,
        max_deliver=spec.max_deliver,
        max_ack_pending=spec.max_ack_pending,
    )
    await js.add_consumer(spec.stream, config=config)


async def declare_all(js: JetStreamContext) -> list[Change]:
    """Create every stream, KV bucket and object store of the catalogue that is missing (one replica).

    What exists is never changed (a service starting must not undo `chatbus admin init --replicas
    3`, nor settings an operator changed): the list says where it differs from the catalogue, for
    the caller to report. Raises BusUnavailable when NATS does not answer, BusError when JetStream
    refuses (e.g. a user without the rights to declare).
    """
    return await _all(js, None, apply=False)


async def apply_all(js: JetStreamContext, replicas: int | None = None) -> list[Change]:
    """`chatbus admin init`: create what is missing and bring what exists to the catalogue's settings,
    with `replicas` (None: each keeps its own, new ones get one); the list is what changed."""
    return await _all(js, replicas, apply=True)


async def _all(js: JetStreamContext, replicas: int | None, apply: bool) -> list[Change]:
    items = [
        *(_stream(js, spec) for spec in STREAMS),
        *(_kv(js, spec) for spec in KV_BUCKETS),
        *(_object_store(js, spec) for spec in OBJECT_STORES),
    ]
    changes: list[Change] = []
    try:
        for item in items:
            changes += await _ensure(js, item, replicas, apply)
    except ServiceUnavailableError as exc:
        raise BusUnavailable(f"cannot declare the streams: JetStream did not answer: {exc}") from exc
    except APIError as exc:
        raise BusError(f"cannot declare the streams: {exc.description} (code {exc.err_code})") from exc
    except NatsError as exc:
        raise BusUnavailable(f"cannot declare the streams: {exc!r}") from exc
    return changes
