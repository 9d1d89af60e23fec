"""Object-store helpers: put, look up and read blobs by name (images are named by their sha256)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from nats.errors import Error as NatsError
from nats.js import JetStreamContext
from nats.js.errors import NotFoundError, ObjectNotFoundError

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


@dataclass(frozen=True)
class ObjectEntry:
    """A stored object: its name, size and when it was put (UTC, None if the store did not say)."""

    name: str
    size: int
    mtime: datetime | None


async def list_objects(js: JetStreamContext, bucket: str) -> list[ObjectEntry]:
    """Every live object of a bucket (none → empty list)."""
    try:
        store = await js.object_store(bucket)
        infos = await store.list(ignore_deletes=True)
    except NotFoundError:
        return []
    except NatsError as exc:
        raise BusUnavailable(f"cannot list {bucket}: {exc!r}") from exc
    return [
        ObjectEntry(name=info.name, size=int(info.size or 0), mtime=_parse_time(info.mtime))
        for info in infos
        if not info.deleted
    ]


async def delete_object(js: JetStreamContext, bucket: str, name: str) -> bool:
    """Delete an object and purge its chunks; False if there was none."""
    try:
        store = await js.object_store(bucket)
        await store.delete(name)
    except ObjectNotFoundError:
        return False
    except NatsError as exc:
        raise BusUnavailable(f"cannot delete {bucket}/{name}: {exc!r}") from exc
    return True


def _parse_time(value: str | None) -> datetime | None:
    if not value:
        return None
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
