"""Declare streams, KV buckets and consumers from their specs, idempotently."""

from __future__ import annotations

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


async def declare_stream(js: JetStreamContext, spec: StreamSpec, replicas: int = 1) -> None:
    """Create the stream, or update it to the spec when it exists."""
    config = _stream_config(spec, replicas)
    try:
        await js.stream_info(spec.name)
    except NotFoundError:
        await js.add_stream(config)
        return
    await js.update_stream(config)


async def declare_kv(js: JetStreamContext, spec: KVSpec, replicas: int = 1) -> None:
    """Create the KV bucket if it does not exist."""
    try:
        await js.key_value(spec.bucket)
    except NotFoundError:  # nats-py's BucketNotFoundError
        await js.create_key_value(
            KeyValueConfig(
                bucket=spec.bucket,
                description=spec.description,
                ttl=spec.ttl or None,
                history=spec.history,
                replicas=replicas,
            )
        )


async def declare_object_store(js: JetStreamContext, spec: ObjectStoreSpec, replicas: int = 1) -> None:
    """Create the object-store bucket if it does not exist."""
    try:
        await js.object_store(spec.bucket)
    except NotFoundError:  # nats-py's BucketNotFoundError
        # nats-py overwrites config.bucket with its `bucket` argument: pass both.
        await js.create_object_store(
            spec.bucket,
            config=ObjectStoreConfig(bucket=spec.bucket, description=spec.description, replicas=replicas),
        )


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


async def declare_all(js: JetStreamContext, replicas: int = 1) -> None:
    """Declare every stream, KV bucket and object store of the catalogue.

    Raises BusUnavailable when NATS does not answer, BusError when JetStream refuses (e.g. a user
    without the rights to declare).
    """
    try:
        for spec in STREAMS:
            await declare_stream(js, spec, replicas)
        for kv in KV_BUCKETS:
            await declare_kv(js, kv, replicas)
        for store in OBJECT_STORES:
            await declare_object_store(js, store, replicas)
    except ServiceUnavailableError as exc:
        raise BusUnavailable(f"cannot declare the streams: JetStream did not answer: {exc}") from exc
    except APIError as exc:
        raise BusError(f"cannot declare the streams: {exc.description} (code {exc.err_code})") from exc
    except NatsError as exc:
        raise BusUnavailable(f"cannot declare the streams: {exc!r}") from exc
