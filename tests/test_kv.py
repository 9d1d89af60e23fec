"""bus.KV against a real nats-server: how a miss, a lost race and an outage look to a service."""

from __future__ import annotations

import asyncio
import contextlib

import pytest

import bus
from bus import Bus, EmbeddedServer
from schemas.streams import KVSpec

BUCKET = KVSpec(bucket="kvtest", description="test bucket", history=1)


@pytest.fixture
async def kv(nbus: Bus) -> bus.KV:
    await bus.declare_kv(nbus.js, BUCKET)
    return bus.KV(nbus.js, BUCKET.bucket)


async def test_a_missing_deleted_or_purged_key_is_not_found(nbus: Bus, kv: bus.KV) -> None:
    with pytest.raises(bus.NotFound):
        await kv.get("never")
    revision = await kv.put("k", b"v1")
    assert await kv.get("k") == bus.KVEntry(key="k", value=b"v1", revision=revision)
    await kv.delete("k")
    with pytest.raises(bus.NotFound):
        await kv.get("k")
    await kv.delete("k")  # deleting what is gone is no error
    await kv.put("p", b"v")
    await (await nbus.js.key_value(BUCKET.bucket)).purge("p")  # the wrapper has no purge: nats-py's own
    with pytest.raises(bus.NotFound):
        await kv.get("p")


async def test_an_expired_key_is_not_found(nbus: Bus) -> None:
    await bus.declare_kv(nbus.js, KVSpec(bucket="short", description="1 s", ttl=1.0))
    short = bus.KV(nbus.js, "short")
    await short.put("k", b"v")
    assert (await short.get("k")).value == b"v"
    await asyncio.sleep(2.0)
    with pytest.raises(bus.NotFound):
        await short.get("k")
    assert await short.keys() == []


async def test_create_on_an_existing_key_and_a_stale_update_conflict(kv: bus.KV) -> None:
    first = await kv.create("c", b"1")
    with pytest.raises(bus.Conflict):
        await kv.create("c", b"again")
    second = await kv.update("c", b"2", first)
    with pytest.raises(bus.Conflict):
        await kv.update("c", b"3", first)  # someone updated since `first` was read
    assert await kv.get("c") == bus.KVEntry(key="c", value=b"2", revision=second)
    await kv.delete("c")
    await kv.create("c", b"new")  # a deleted key can be created again
    assert (await kv.get("c")).value == b"new"


async def test_entries_and_keys_leave_out_deleted_keys(kv: bus.KV) -> None:
    assert await kv.entries() == [] and await kv.keys() == []
    for key in ("a.1", "a.2", "b.1"):
        await kv.put(key, key.encode())
    await kv.put("a.1", b"newer")
    await kv.delete("a.2")
    assert [(e.key, e.value) for e in await kv.entries("a.*")] == [("a.1", b"newer")]
    assert sorted(await kv.keys()) == ["a.1", "b.1"]


async def test_a_bad_key_is_a_value_error_and_a_missing_bucket_is_no_miss(nbus: Bus, kv: bus.KV) -> None:
    for bad in ("", "a b", ".a", "a.", "a..b", "a*"):
        with pytest.raises(ValueError):
            await kv.put(bad, b"v")
    missing = bus.KV(nbus.js, "never_declared")
    for op in (missing.get("k"), missing.put("k", b"v"), missing.create("k", b"v"), missing.keys()):
        with pytest.raises(bus.BusError) as raised:
            await op
        assert not isinstance(raised.value, bus.NotFound | bus.Conflict), raised.value
        assert "does not exist" in str(raised.value)


async def test_a_stopped_server_is_bus_unavailable(own_server: EmbeddedServer) -> None:
    nbus = await bus.connect(own_server.url_for(), name="kv-outage", timeout=1.0)
    try:
        await bus.declare_kv(nbus.js, BUCKET)
        kv = bus.KV(nbus.js, BUCKET.bucket)
        await kv.put("k", b"v")
        own_server.stop()
        for op in (kv.get("k"), kv.get("missing"), kv.put("k", b"w"), kv.update("k", b"w", 1), kv.keys()):
            with pytest.raises(bus.BusUnavailable):
                await op
    finally:
        with contextlib.suppress(Exception):  # the server is gone: closing may fail, nothing to flush
            await nbus.close()
