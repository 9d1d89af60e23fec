"""The `worker` users of deploy/nats/accounts.conf, for real: they can do all a worker does, nothing more.
(tests/test_deploy_nats.py starts every config of deploy/nats/.)"""

from __future__ import annotations

import contextlib
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from bus import free_port, nats_server_binary
from schemas.permissions import conf_user, worker_permissions, worker_user
from tests.deploy_nats import PASSWORDS

DEPLOY = Path(__file__).parent.parent / "deploy"
# ---------------------------------------------------------------- the worker user's permissions, for real


@contextlib.contextmanager
def _server(tmp_path: Path, users: str) -> Iterator[str]:
    """A nats-server with JetStream and the `authorization` block `users`; its host:port."""
    import socket
    import time

    (tmp_path / "users.conf").write_text(users)
    port = free_port()
    (tmp_path / "server.conf").write_text(
        f'listen: "127.0.0.1:{port}"\nmax_payload: 16MB\n'
        f'jetstream {{ store_dir: "{tmp_path / "js"}" }}\ninclude "users.conf"\n'
    )
    proc = subprocess.Popen(
        [nats_server_binary(), "-c", str(tmp_path / "server.conf")],
        env={**os.environ, **PASSWORDS},
        stdout=subprocess.DEVNULL,
        stderr=open(tmp_path / "nats.log", "wb"),  # noqa: SIM115
    )
    try:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                time.sleep(0.05)
        yield f"127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait(timeout=10)


ALIAS_USER, ALIAS_PASSWORD = worker_user("demo-vision"), "alias-test-pw"


@pytest.fixture
def accounts_server(tmp_path: Path) -> Iterator[str]:
    """A nats-server with JetStream whose users are deploy/nats/accounts.conf's, plus the user of the
    `demo-vision` alias that `chatbus admin worker-user demo-vision` prints, added where it says."""
    accounts = (DEPLOY / "nats" / "accounts.conf").read_text()
    alias_user = conf_user(ALIAS_USER, ALIAS_PASSWORD, worker_permissions("demo-vision"))
    head, tail = accounts.rsplit("  ]\n}", 1)
    with _server(tmp_path, f"{head}{alias_user}\n  ]\n}}{tail}") as address:
        yield address


def _password(user: str) -> str:
    if user == "worker":
        return PASSWORDS["CHATBUS_NATS_WORKER_PASSWORD"]
    return PASSWORDS["CHATBUS_NATS_SERVICES_PASSWORD"] if user == "services" else ALIAS_PASSWORD


async def _refused(address: str, user: str, password: str, subjects: list[str]) -> list[str]:
    """Those of `subjects` the server refuses `user` to publish on (a plain NATS client, no chatbus code)."""
    import asyncio

    import nats

    from schemas.subjects import WORKER_INBOX_PREFIX

    errors: list[str] = []

    async def on_error(exc: Exception) -> None:
        errors.append(str(exc).lower())

    nc = await nats.connect(
        f"nats://{user}:{password}@{address}",
        inbox_prefix=WORKER_INBOX_PREFIX,
        error_cb=on_error,
        allow_reconnect=False,
    )
    refused = []
    try:
        for subject in subjects:
            errors.clear()
            await nc.publish(subject, b"{}")
            await nc.flush()
            await asyncio.sleep(0.2)  # the violation comes back asynchronously
            if any("permissions violation" in e and subject.lower() in e for e in errors):
                refused.append(subject)
    finally:
        await nc.close()
    return refused


@pytest.mark.parametrize(("user", "alias"), [("worker", "vision"), ("worker-demo-vision", "demo-vision")])
async def test_a_worker_with_only_the_worker_users_rights_serves_an_image_reply(
    accounts_server: str, demo_vlm_dir: Path, user: str, alias: str
) -> None:
    """The `worker` user of accounts.conf, and the user of one alias, can do all a vision worker does,
    and cannot post messages."""
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
        f"nats://services:{_password('services')}@{accounts_server}", name="services"
    )
    worker_bus = await bus.connect(
        f"nats://{user}:{_password(user)}@{accounts_server}", name="worker", inbox_prefix=WORKER_INBOX_PREFIX
    )
    try:
        await bus.declare_all(services.js)
        png = io.BytesIO()
        Image.new("RGB", (16, 16), (9, 9, 9)).save(png, "PNG")
        image, _ = await store_image(services, png.getvalue(), "image/png", "ann")
        now = schemas.now()
        events: list[schemas.Event] = [
            ChatCreated(event_id="e1", chat_id="c1", at=now, owner_id="ann", title="t", model=alias),
            MessagePosted(
                event_id="e2", chat_id="c1", at=now, message_id="m1", author_id="ann", content="?",
                images=[image.sha256],
            ),
            ReplyRequested(
                event_id="e3", chat_id="c1", at=now, reply_id="r1", message_id="m1", model=alias,
                params=SamplingParams(max_new_tokens=4), context=["m1"], requested_by="ann",
            ),
        ]  # fmt: skip
        for event in events:
            await bus.append_event(services.js, event)

        engine = await asyncio.to_thread(VisionEngine.from_pretrained, str(demo_vlm_dir), EngineConfig())
        settings = WorkerSettings(model="vlm", alias=alias, capacity=2, ack_wait=10.0)
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


async def test_the_server_refuses_a_worker_what_its_user_may_not_do(accounts_server: str) -> None:
    """No worker deletes a consumer; the user of one alias neither beats presence for another alias nor
    pulls or acks its requests (the `worker` user still may: NATS config files cannot tie those to
    the connection)."""
    from schemas import subjects as s
    from schemas.streams import CHAT, WORKERS_KV, worker_consumer

    theirs = worker_consumer("smollm2-135m").durable
    other_alias = [
        s.kv_key(WORKERS_KV.bucket, s.presence_key("smollm2-135m", "w1")),
        s.js_api("CONSUMER.MSG.NEXT", CHAT.name, theirs),
        f"{s.js_acks(CHAT.name, theirs)[:-1]}1.7.7.1700000000.0",
    ]
    deletes = [
        s.js_api("CONSUMER.DELETE", CHAT.name, d) for d in (theirs, worker_consumer("demo-vision").durable)
    ]
    own = [s.kv_key(WORKERS_KV.bucket, s.presence_key("demo-vision", "w1"))]
    tried = deletes + other_alias + own
    assert await _refused(accounts_server, "worker", _password("worker"), tried) == deletes
    assert await _refused(accounts_server, ALIAS_USER, ALIAS_PASSWORD, tried) == deletes + other_alias


def test_a_generated_alias_user_keeps_to_its_alias_on_a_real_server(tmp_path: Path) -> None:
    """`chatbus admin worker-user ALIAS` prints a user a real nats-server loads and enforces."""
    import asyncio
    import sys

    from schemas import subjects as s
    from schemas.streams import CHAT, WORKERS_KV, worker_consumer

    cmd = [sys.executable, "-m", "services.cli", "admin", "worker-user", "smollm2-135m", "--password", "pw1"]
    printed = subprocess.run(cmd, cwd=DEPLOY.parent, capture_output=True, text=True, timeout=60)
    assert printed.returncode == 0, printed.stderr
    users = f"authorization {{ users: [ {{ user: services, password: pw0 }}\n{printed.stdout} ] }}\n"
    tried = [
        s.kv_key(WORKERS_KV.bucket, s.presence_key("smollm2-135m", "w1")),
        s.kv_key(WORKERS_KV.bucket, s.presence_key("demo", "w1")),
        s.js_api("CONSUMER.DELETE", CHAT.name, worker_consumer("smollm2-135m").durable),
        s.js_api("CONSUMER.MSG.NEXT", CHAT.name, worker_consumer("demo").durable),
    ]
    with _server(tmp_path, users) as address:
        refused = asyncio.run(_refused(address, "worker-smollm2-135m", "pw1", tried))
    assert refused == tried[1:]
