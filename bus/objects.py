"""Object-store helpers: put, look up and read blobs by name (images are named by their sha256)."""

from __future__ import annotations

from nats.errors import Error as NatsError
from nats.js import JetStreamContext
from nats.js.errors import ObjectNotFoundError

from bus.errors import BusUnavailable


async def object_size(js: JetStreamContext, bucket: str, name: str) -> int | None:
    """The size of a stored object, or None when there is none."""
    try:
        store = await js.object_store(bucket)
        info = await store.get_info(name)
    except ObjectNotFoundError:
        return None
    except NatsError as exc:
        raise BusUnavailable(f"cannot look up {bucket}/{name}: {exc!r}") from exc
    return int(info.size or 0)


async def put_object(js: JetStreamContext, bucket: str, name: str, data: bytes) -> None:
    """Store bytes under a name (replacing what was there)."""
    try:
        store = await js.object_store(bucket)
        await store.put(name, data)
    except NatsError as exc:
        raise BusUnavailable(f"cannot store {bucket}/{name}: {exc!r}") from exc


async def get_object(js: JetStreamContext, bucket: str, name: str) -> bytes | None:
    """The bytes stored under a name, or None."""
    try:
        store = await js.object_store(bucket)
        result = await store.get(name)
    except ObjectNotFoundError:
        return None
    except NatsError as exc:
        raise BusUnavailable(f"cannot read {bucket}/{name}: {exc!r}") from exc
    return bytes(result.data or b"")
