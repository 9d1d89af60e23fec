"""The `worker` user of deploy/nats/accounts.conf, for real: it can do all a worker does, nothing more.
(tests/test_deploy_nats.py starts every config of deploy/nats/.)"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from bus import free_port, nats_server_binary
from tests.deploy_nats import PASSWORDS

DEPLOY = Path(__file__).parent.parent / "deploy"


# ---------------------------------------------------------------- the worker user's permissions, for real


@pytest.fixture
def accounts_server(tmp_path: Path):  # type: ignore[no-untyped-def]
    """A nats-server with JetStream whose users are exactly deploy/nats/accounts.conf's."""
    import shutil
    import socket
    import time

    shutil.copy(DEPLOY / "nats" / "accounts.conf", tmp_path / "accounts.conf")
    port = free_port()
    (tmp_path / "server.conf").write_text(
        f'listen: "127.0.0.1:{port}"\nmax_payload: 16MB\n'
        f'jetstream {{ store_dir: "{tmp_path / "js"}" }}\ninclude "accounts.conf"\n'
    )
    proc = subprocess.Popen(
        [nats_server_binary(), "-c", str(tmp_path / "server.conf")],
        env={**os.environ, **PASSWORDS},
        stdout=subprocess.DEVNULL,
        stderr=open(tmp_path / "nats.log", "wb"),  # noqa: SIM115
    )
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            break
        except OSError:
            time.sleep(0.05)
    yield f"127.0.0.1:{port}"
    proc.terminate()
    proc.wait(timeout=10)


async def test_a_worker_with_only_the_worker_users_rights_serves_an_image_reply(
    accounts_server: str, demo_vlm_dir: Path
) -> None:
    """The `worker` user of accounts.conf can do all a vision worker does, and cannot post messages."""
    import asyncio
    import contextlib
    import io

    from PIL import Image

    import bus
    import schemas
    from schemas.chat import ChatCreated, MessagePosted, ReplyCompleted, ReplyRequested
    from schemas.sampling import SamplingParams
    from schemas.subjects import WORKER_INBOX_PREFIX
    from services.image_store.store import store_image
    from services.llm_worker import WorkerSettings
    from services.llm_worker.engine import EngineConfig
    from services.llm_worker.vision import VisionEngine
    from services.llm_worker.worker import Worker
    from tests.stack import wait_event

    services = await bus.connect(
        f"nats://services:{PASSWORDS['CHATBUS_NATS_SERVICES_PASSWORD']}@{accounts_server}", name="services"
    )
    worker_bus = await bus.connect(
        f"nats://worker:{PASSWORDS['CHATBUS_NATS_WORKER_PASSWORD']}@{accounts_server}",
        name="worker",
        inbox_prefix=WORKER_INBOX_PREFIX,
    )
    try:
        await bus.declare_all(services.js)
        png = io.BytesIO()
        Image.new("RGB", (16, 16), (9, 9, 9)).save(png, "PNG")
        image, _ = await store_image(services, png.getvalue(), "image/png", "ann")
        now = schemas.now()
        events: list[schemas.Event] = [
            ChatCreated(event_id="e1", chat_id="c1", at=now, owner_id="ann", title="t", model="vision"),
            MessagePosted(
                event_id="e2", chat_id="c1", at=now, message_id="m1", author_id="ann", content="?",
                images=[image.sha256],
            ),
            ReplyRequested(
                event_id="e3", chat_id="c1", at=now, reply_id="r1", message_id="m1", model="vision",
                params=SamplingParams(max_new_tokens=4), context=["m1"], requested_by="ann",
            ),
        ]  # fmt: skip
        for event in events:
            await bus.append_event(services.js, event)

        engine = await asyncio.to_thread(VisionEngine.from_pretrained, str(demo_vlm_dir), EngineConfig())
        settings = WorkerSettings(model="vlm", alias="vision", capacity=2, ack_wait=10.0)
        worker = Worker(settings, worker_bus, engine, engine.tokenizer)
        stop = asyncio.Event()
        task = asyncio.create_task(worker.run(stop))
        try:
            done = await wait_event(services, "chat.c1.reply.r1.completed", timeout=60)
        finally:
            stop.set()
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.wait_for(task, 20)
        assert isinstance(done, ReplyCompleted) and done.images_seen == [image.sha256]

        forged = MessagePosted(
            event_id="e9", chat_id="c1", at=now, message_id="m9", author_id="x", content="x"
        )
        with pytest.raises(Exception):  # noqa: B017 - nats-py reports a denied publish as a timeout or error
            await bus.append_event(worker_bus.js, forged)
        assert await bus.last_msg(services.js, "CHAT", "chat.c1.message.posted") is not None
        posted = await bus.read_all(services.js, "CHAT", ["chat.c1.message.posted"])
        assert [schemas.decode_event(m.data).message_id for m in posted] == ["m1"]  # type: ignore[union-attr]
    finally:
        await worker_bus.close()
        await services.close()
