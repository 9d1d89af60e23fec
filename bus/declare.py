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
    )
    return updated, changes


async def _existing(js: JetStreamContext, stream: str) -> StreamConfig | None:
    try:
        info = await js.stream_info(stream)
    except NotFoundError:
        return None
    return info.config


async def declare_stream(js: JetStreamContext, spec: StreamSpec, replicas: int | None = None) -> list[Change]:
    """Create the stream when it is missing (`replicas` or 1). An existing stream is left as it is:
    the list says where it differs from the catalogue, which `apply_stream` would change."""
    current = await _existing(js, spec.name)
    if current is None:
        await js.add_stream(_stream_config(spec, replicas or 1))
        return []
    wanted = _stream_config(spec, replicas or current.num_replicas or 1)
    return _reconcile(f"stream {spec.name}", current, wanted)[1]


async def apply_stream(js: JetStreamContext, spec: StreamSpec, replicas: int | None = None) -> list[Change]:
    """Create the stream, or bring its settings to the catalogue's (replicas: as given, else kept)."""
    current = await _existing(js, spec.name)
    if current is None:
        await js.add_stream(_stream_config(spec, replicas or 1))
        return [Change(f"stream {spec.name}", "created", "-", f"{replicas or 1} replica(s)")]
    wanted = _stream_config(spec, replicas or current.num_replicas or 1)
    updated, changes = _reconcile(f"stream {spec.name}", current, wanted)
    if changes:
        await js.update_stream(updated)
    return changes


def _kv_config(spec: KVSpec, replicas: int) -> KeyValueConfig:
    return KeyValueConfig(
        bucket=spec.bucket,
        description=spec.description,
        ttl=spec.ttl or None,
        history=spec.history,
        replicas=replicas,
    )


def _kv_stream(spec: KVSpec, current: StreamConfig, replicas: int) -> StreamConfig:
    """The bucket's underlying stream as the catalogue wants it (what nats-py's create sets)."""
    return dataclasses.replace(
        current,
        description=spec.description,
        max_age=spec.ttl or 0.0,
        max_msgs_per_subject=spec.history,
        num_replicas=replicas,
    )


async def declare_kv(js: JetStreamContext, spec: KVSpec, replicas: int | None = None) -> list[Change]:
    """Create the KV bucket when it is missing; an existing one is left as it is (see declare_stream)."""
    current = await _existing(js, f"KV_{spec.bucket}")
    if current is None:
        await js.create_key_value(_kv_config(spec, replicas or 1))
        return []
    wanted = _kv_stream(spec, current, replicas or current.num_replicas or 1)
    return _reconcile(f"KV bucket {spec.bucket}", current, wanted)[1]


async def apply_kv(js: JetStreamContext, spec: KVSpec, replicas: int | None = None) -> list[Change]:
    """Create the KV bucket, or bring its TTL, history, description and replicas to the catalogue's."""
    current = await _existing(js, f"KV_{spec.bucket}")
    if current is None:
        await js.create_key_value(_kv_config(spec, replicas or 1))
        return [Change(f"KV bucket {spec.bucket}", "created", "-", f"{replicas or 1} replica(s)")]
    wanted = _kv_stream(spec, current, replicas or current.num_replicas or 1)
    updated, changes = _reconcile(f"KV bucket {spec.bucket}", current, wanted)
    if changes:
        await js.update_stream(updated)
    return changes


async def _create_object_store(js: JetStreamContext, spec: ObjectStoreSpec, replicas: int) -> None:
    # nats-py overwrites config.bucket with its `bucket` argument: pass both.
    await js.create_object_store(
        spec.bucket,
        config=ObjectStoreConfig(bucket=spec.bucket, description=spec.description, replicas=replicas),
    )


async def declare_object_store(
    js: JetStreamContext, spec: ObjectStoreSpec, replicas: int | None = None
) -> list[Change]:
    """Create the object-store bucket when it is missing; an existing one is left as it is."""
    current = await _existing(js, f"OBJ_{spec.bucket}")
    if current is None:
        await _create_object_store(js, spec, replicas or 1)
        return []
    wanted = dataclasses.replace(
        current, description=spec.description, num_replicas=replicas or current.num_replicas or 1
    )
    return _reconcile(f"object store {spec.bucket}", current, wanted)[1]


async def apply_object_store(
    js: JetStreamContext, spec: ObjectStoreSpec, replicas: int | None = None
) -> list[Change]:
    """Create the object-store bucket, or bring its description and replicas to the catalogue's."""
    current = await _existing(js, f"OBJ_{spec.bucket}")
    if current is None:
        await _create_object_store(js, spec, replicas or 1)
        return [Change(f"object store {spec.bucket}", "created", "-", f"{replicas or 1} replica(s)")]
    wanted = dataclasses.replace(
        current, description=spec.description, num_replicas=replicas or current.num_replicas or 1
    )
    updated, changes = _reconcile(f"object store {spec.bucket}", current, wanted)
    if changes:
        await js.update_stream(updated)
    return changes


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


_Step = Callable[[JetStreamContext, Any, "int | None"], Awaitable[list[Change]]]


async def declare_all(js: JetStreamContext) -> list[Change]:
    """Create every stream, KV bucket and object store of the catalogue that is missing (one replica).

    What exists is never changed (a service starting must not undo `chatbus admin init --replicas
    3`, nor settings an operator changed): the list says where it differs from the catalogue, for
    the caller to report. Raises BusUnavailable when NATS does not answer, BusError when JetStream
    refuses (e.g. a user without the rights to declare).
    """
    return await _all(js, None, declare_stream, declare_kv, declare_object_store)


async def apply_all(js: JetStreamContext, replicas: int | None = None) -> list[Change]:
    """`chatbus admin init`: create what is missing and bring what exists to the catalogue's settings,
    with `replicas` (None: each keeps its own, new ones get one); the list is what changed."""
    return await _all(js, replicas, apply_stream, apply_kv, apply_object_store)


async def _all(
    js: JetStreamContext, replicas: int | None, stream: _Step, kv: _Step, store: _Step
) -> list[Change]:
    changes: list[Change] = []
    try:
        for spec in STREAMS:
            changes += await stream(js, spec, replicas)
        for kv_spec in KV_BUCKETS:
            changes += await kv(js, kv_spec, replicas)
        for store_spec in OBJECT_STORES:
            changes += await store(js, store_spec, replicas)
    except ServiceUnavailableError as exc:
        raise BusUnavailable(f"cannot declare the streams: JetStream did not answer: {exc}") from exc
    except APIError as exc:
        raise BusError(f"cannot declare the streams: {exc.description} (code {exc.err_code})") from exc
    except NatsError as exc:
        raise BusUnavailable(f"cannot declare the streams: {exc!r}") from exc
    return changes
