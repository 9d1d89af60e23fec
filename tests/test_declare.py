"""Declaring the streams on a real three-node cluster: a service starting never lowers replicas nor
undoes a setting; only `chatbus admin init` changes what exists, and it says what it changed."""

from __future__ import annotations

import asyncio
import dataclasses
import subprocess
import time
from collections.abc import Iterator

import pytest
from typer.testing import CliRunner

import bus
from schemas.streams import CHAT, IMAGES_OBJECTS, KV_BUCKETS, STREAMS, WORKERS_KV
from services.cli.app import app


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Three nats-server processes with JetStream, routed to each other; the client URL of all three."""
    root = tmp_path_factory.mktemp("cluster")
    clients = [bus.free_port() for _ in range(3)]
    routes = [bus.free_port() for _ in range(3)]
    procs = []
    for i in range(3):
        others = ", ".join(f"nats-route://127.0.0.1:{routes[j]}" for j in range(3) if j != i)
        config = root / f"n{i}.conf"
        config.write_text(
            f'server_name: "n{i}"\nlisten: "127.0.0.1:{clients[i]}"\n'
            f'jetstream {{ store_dir: "{root / f"js{i}"}" }}\n'
            f'cluster {{ name: "test", listen: "127.0.0.1:{routes[i]}", routes: [{others}] }}\n'
        )
        log = (root / f"n{i}.log").open("wb")
        procs.append(subprocess.Popen([bus.nats_server_binary(), "-c", str(config)], stderr=log))
    url = ",".join(f"nats://127.0.0.1:{port}" for port in clients)
    try:
        asyncio.run(_wait_for_jetstream(url))
        yield url
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            proc.wait(timeout=15)


async def _wait_for_jetstream(url: str) -> None:
    deadline = time.monotonic() + 60
    while True:
        try:
            nbus = await bus.connect(url, name="cluster-wait")
            try:  # ready when a three-replica stream can be placed: every peer has joined
                await nbus.js.add_stream(name="PROBE", subjects=["probe"], num_replicas=3)
                await nbus.js.delete_stream("PROBE")
                return
            finally:
                await nbus.close()
        except Exception:  # not up yet: servers starting, electing the meta leader, peers joining
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.5)


async def _replicas(js: bus.JetStream, stream: str) -> int:
    return (await js.stream_info(stream)).config.num_replicas or 1


def test_a_service_starting_keeps_three_replicas_and_settings_only_init_changes(cluster: str) -> None:
    runner = CliRunner()
    first = runner.invoke(
        app, ["admin", "init", "--replicas", "3", "--nats", cluster], env={"COLUMNS": "200"}
    )
    assert first.exit_code == 0, first.output
    assert "created" in first.output and "CHAT" in first.output

    async def check_created_and_serve_start() -> None:
        nbus = await bus.connect(cluster, name="test")
        try:
            for stream in [s.name for s in STREAMS] + [f"KV_{kv.bucket}" for kv in KV_BUCKETS]:
                assert await _replicas(nbus.js, stream) == 3, stream
            assert await _replicas(nbus.js, f"OBJ_{IMAGES_OBJECTS.bucket}") == 3
            # What every service and admin command does as it starts: nothing to change, nothing changed.
            assert await bus.declare_all(nbus.js) == []
            assert await _replicas(nbus.js, CHAT.name) == 3

            # An operator (or an older version) changed settings: a service reports and leaves them.
            chat = (await nbus.js.stream_info(CHAT.name)).config
            await nbus.js.update_stream(dataclasses.replace(chat, max_age=3600.0))
            workers = (await nbus.js.stream_info(f"KV_{WORKERS_KV.bucket}")).config
            await nbus.js.update_stream(dataclasses.replace(workers, max_age=600.0))
            drift = await bus.declare_all(nbus.js)
            assert {(c.what, c.setting) for c in drift} == {
                (f"stream {CHAT.name}", "max_age"),
                (f"KV bucket {WORKERS_KV.bucket}", "max_age"),
            }
            assert (await nbus.js.stream_info(CHAT.name)).config.max_age == 3600.0
        finally:
            await nbus.close()

    asyncio.run(check_created_and_serve_start())

    again = runner.invoke(app, ["admin", "init", "--nats", cluster], env={"COLUMNS": "200"})
    assert again.exit_code == 0, again.output
    assert "max_age" in again.output and "2 change(s) applied" in again.output

    async def check_restored() -> None:
        nbus = await bus.connect(cluster, name="test")
        try:
            assert (await nbus.js.stream_info(CHAT.name)).config.max_age == CHAT.max_age
            kv = (await nbus.js.stream_info(f"KV_{WORKERS_KV.bucket}")).config
            assert kv.max_age == WORKERS_KV.ttl
            assert await _replicas(nbus.js, CHAT.name) == 3  # init without --replicas keeps them
        finally:
            await nbus.close()

    asyncio.run(check_restored())
    unchanged = runner.invoke(app, ["admin", "init", "--nats", cluster], env={"COLUMNS": "200"})
    assert unchanged.exit_code == 0 and "nothing changed" in unchanged.output, unchanged.output


async def test_a_single_server_keeps_what_a_service_declares(nbus: bus.Bus) -> None:
    """On the test server too: declaring twice changes nothing and reports nothing."""
    assert await bus.declare_all(nbus.js) == []
    assert await bus.apply_all(nbus.js) == []
