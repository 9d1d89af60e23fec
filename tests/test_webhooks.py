"""Webhooks: a finished job is POSTed to its callback, signed, retried, every delivery recorded; callbacks
into the network are refused without a connection; a dispatcher killed mid-delivery resumes from the log."""

from __future__ import annotations

import asyncio
import contextlib
import re
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgspec
import pytest
from aiohttp import web

import bus
import schemas
from bus import Bus
from identity.webhook_secrets import new_webhook_secret
from netguard import literal_address_refused
from schemas.chat import (
    ChatCreated,
    MessagePosted,
    ReplyCompleted,
    ReplyRequested,
    ReplyStarted,
    WebhookAttempted,
)
from schemas.ids import new_id
from schemas.job import JobSpec
from schemas.streams import WEBHOOK_CONSUMERS
from schemas.webhook import ID_HEADER, TIMESTAMP_HEADER, verify_webhook
from services.webhooks import WebhookSettings, run_webhooks
from tests.hosts import Canary, resolver
from tests.stack import Client

HOOK_HOST = "hooks.test"  # a private host allowed by name, as CHATBUS_WEBHOOK_PRIVATE_HOSTS would
NAMES = {HOOK_HOST: "127.0.0.1", "evil.example.test": "127.0.0.1"}
SETTINGS = WebhookSettings(tries=4, backoff=0.3, timeout=5.0, private_hosts=frozenset({HOOK_HOST}))


@dataclass
class Receiver:
    """A test server on loopback: answers its requests with `answers` in turn ("hold": until released,
    then 503), keeping what it got."""

    answers: list[str]
    got: list[tuple[dict[str, str], bytes]] = field(default_factory=list)
    arrived: asyncio.Event = field(default_factory=asyncio.Event)
    release: asyncio.Event = field(default_factory=asyncio.Event)
    port: int = 0
    location: str = ""  # where a 3xx answer points

    async def handle(self, request: web.Request) -> web.Response:
        self.got.append((dict(request.headers), await request.read()))
        self.arrived.set()
        answer = self.answers[min(len(self.got), len(self.answers)) - 1]
        if answer == "hold":
            await self.release.wait()
            return web.Response(status=503)
        headers = {"Location": self.location} if self.location else {}
        return web.Response(status=int(answer), text="ok", headers=headers)

    @property
    def url(self) -> str:
        return f"http://{HOOK_HOST}:{self.port}/hook"

    async def wait_for(self, count: int, timeout: float = 30.0) -> None:
        async with asyncio.timeout(timeout):
            while len(self.got) < count:
                self.arrived.clear()
                await self.arrived.wait()


@contextlib.asynccontextmanager
async def receiver(answers: list[str]) -> AsyncIterator[Receiver]:
    got = Receiver(answers)
    app = web.Application()
    app.router.add_post("/hook", got.handle)
    runner = web.AppRunner(app, handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    got.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        yield got
    finally:
        got.release.set()
        await runner.cleanup()


@contextlib.asynccontextmanager
async def dispatcher(
    nbus: Bus, consumers: tuple[Any, ...] = WEBHOOK_CONSUMERS
) -> AsyncIterator[asyncio.Task[None]]:
    stop = asyncio.Event()
    task = asyncio.create_task(
        run_webhooks(nbus, stop, SETTINGS, consumers=consumers, resolve=resolver(NAMES))
    )
    try:
        yield task
    finally:
        stop.set()
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.wait_for(task, 10)


async def submit_job(nbus: Bus, callback_url: str, owner: str = "ann", model: str = "demo") -> ReplyRequested:
    """Append what `POST /v1/jobs` appends: a jobs chat, the input, the reply request with its JobSpec."""
    now, chat_id, reply_id = schemas.now(), new_id("c"), new_id("r")
    created = ChatCreated(
        event_id=new_id("e"), chat_id=chat_id, at=now, owner_id=owner, title="job", model=model, origin="jobs"
    )
    message = MessagePosted(
        event_id=new_id("e"), chat_id=chat_id, at=now, message_id=new_id("m"), author_id=owner, content="Hi"
    )
    job = JobSpec(job_id=f"{chat_id}-{reply_id}", callback_url=callback_url)
    request = ReplyRequested(
        event_id=new_id("e"),
        chat_id=chat_id,
        at=now,
        reply_id=reply_id,
        message_id=message.message_id,
        model=model,
        context=[message.message_id],
        requested_by=owner,
        job=job,
    )
    await bus.append_events(nbus.js, [created, message, request])
    return request


async def finish(nbus: Bus, request: ReplyRequested, text: str = "Hello there") -> None:
    """Append what a worker appends for a one-attempt answer."""
    common = {"chat_id": request.chat_id, "reply_id": request.reply_id, "attempt": 1, "worker_id": "w1"}
    started = ReplyStarted(event_id=new_id("e"), at=schemas.now(), model=request.model, **common)
    completed = ReplyCompleted(
        event_id=new_id("e"),
        at=schemas.now(),
        model=request.model,
        text=text,
        prompt_tokens=3,
        completion_tokens=2,
        finish_reason="stop",
        **common,
    )
    await bus.append_events(nbus.js, [started, completed])


async def deliveries(
    nbus: Bus, request: ReplyRequested, final: bool = True, timeout: float = 30.0
) -> list[Any]:
    """The recorded deliveries of the job, once the final one is there (or every one so far)."""
    subject = f"chat.{request.chat_id}.reply.{request.reply_id}.webhook"
    async with asyncio.timeout(timeout):
        while True:
            msgs = await bus.read_all(nbus.js, "CHAT", [subject])
            events = [schemas.decode_event(m.data) for m in msgs]
            if not final or any(isinstance(e, WebhookAttempted) and e.final for e in events):
                return events
            await asyncio.sleep(0.1)


async def test_a_finished_job_is_posted_signed_to_a_server_on_loopback(
    nbus: Bus, stack: dict[str, str]
) -> None:
    async with Client(stack["base"], stack["ann"]) as ann:
        status, made = await ann.call("POST", "/v1/me/webhook-secret")
    assert status == 201
    secret = made["secret"]
    async with receiver(["200"]) as hook, dispatcher(nbus):
        request = await submit_job(nbus, hook.url)  # the stack's demo worker answers it
        recorded = await deliveries(nbus, request, timeout=120)
        await hook.wait_for(1)
    assert [(e.delivery, e.status, e.final) for e in recorded] == [(1, 200, True)]
    (headers, body), job_id = hook.got[0], f"{request.chat_id}-{request.reply_id}"
    assert headers[ID_HEADER] == f"{job_id}.1"
    assert verify_webhook(secret, headers, body, time.time())
    assert documented_check()(secret, headers, body, time.time())  # docs/jobs.md's six lines agree
    job = msgspec.json.decode(body)
    completed = [e for e in await _reply_events(nbus, request) if isinstance(e, ReplyCompleted)]
    assert job["job_id"] == job_id and job["status"] == "done" and job["input"] == "Hi"
    assert (
        job["result"] == completed[0].text
        and job["usage"]["completion_tokens"] == completed[0].completion_tokens
    )
    assert job["callback_url"] == hook.url and job["attempts"][0]["outcome"] == "done"
    # The POSTed body is GET /v1/jobs/{id}'s; only `webhook` moved on: it was sent before its own record.
    async with Client(stack["base"], stack["ann"]) as ann:
        status, read = await ann.call("GET", f"/v1/jobs/{job_id}")
    assert status == 200
    assert job["webhook"] == {"deliveries": 0, "last_status": None, "delivered": False}
    assert read["webhook"] == {"deliveries": 1, "last_status": 200, "delivered": True}
    assert {**job, "webhook": None} == {**read, "webhook": None}
    # What a receiver must refuse: another body, another secret, a stale or a missing timestamp.
    assert not verify_webhook(secret, headers, body.replace(b'"done"', b'"error"'), time.time())
    assert not verify_webhook(secret + "x", headers, body, time.time())
    assert not verify_webhook(secret, headers, body, int(headers[TIMESTAMP_HEADER]) + 301)
    assert verify_webhook(secret, headers, body, int(headers[TIMESTAMP_HEADER]) + 299)
    assert not verify_webhook(
        secret, {k: v for k, v in headers.items() if k != TIMESTAMP_HEADER}, body, time.time()
    )


def documented_check() -> Any:
    """The verify_webhook of docs/jobs.md's snippet, as a reader would paste it."""
    text = (Path(__file__).parent.parent / "docs" / "jobs.md").read_text()
    code = re.search(r"```python\n(.*?)```", text.split("## Webhooks", 1)[1], re.S)
    assert code is not None
    namespace: dict[str, Any] = {}
    exec(code.group(1), namespace)  # noqa: S102 - our own documentation
    return namespace["verify_webhook"]


async def _reply_events(nbus: Bus, request: ReplyRequested) -> list[schemas.Event]:
    msgs = await bus.read_all(nbus.js, "CHAT", [f"chat.{request.chat_id}.reply.{request.reply_id}.>"])
    return [schemas.decode_event(m.data) for m in msgs]


async def test_a_failing_callback_is_retried_with_backoff_and_every_delivery_recorded(nbus: Bus) -> None:
    secret = await new_webhook_secret(nbus.js, "ann")
    async with receiver(["500", "500", "200"]) as hook, dispatcher(nbus):
        request = await submit_job(nbus, hook.url)
        await finish(nbus, request)
        recorded = await deliveries(nbus, request)
    assert [(e.delivery, e.status, e.final) for e in recorded] == [
        (1, 500, False),
        (2, 500, False),
        (3, 200, True),
    ]
    assert [h[ID_HEADER].rsplit(".", 1)[1] for h, _ in hook.got] == ["1", "2", "3"]
    assert all(verify_webhook(secret, h, b, time.time()) for h, b in hook.got)
    gaps = [(b.at - a.at).total_seconds() for a, b in zip(recorded, recorded[1:], strict=False)]
    assert gaps[0] >= SETTINGS.backoff * 0.9 and gaps[1] >= 2 * SETTINGS.backoff * 0.9  # 0.3 s, then 0.6 s
    # The last delivery's body says how the earlier ones went.
    assert msgspec.json.decode(hook.got[2][1])["webhook"] == {
        "deliveries": 2,
        "last_status": 500,
        "delivered": False,
    }


async def test_callbacks_into_the_network_are_refused_without_a_connection(nbus: Bus, canary: Canary) -> None:
    await new_webhook_secret(nbus.js, "ann")
    urls = [
        f"http://127.0.0.1:{canary.port}/hook",
        f"http://[::ffff:127.0.0.1]:{canary.port}/hook",
        f"http://10.11.12.13:{canary.port}/hook",
        f"http://evil.example.test:{canary.port}/hook",  # a name that resolves to loopback
    ]
    async with dispatcher(nbus):
        requests = [await submit_job(nbus, url) for url in urls]
        for request in requests:
            await finish(nbus, request)
        recorded = [await deliveries(nbus, request) for request in requests]
    for url, events in zip(urls, recorded, strict=True):
        assert [(e.delivery, e.status, e.final) for e in events] == [(1, 0, True)], url
        assert events[0].error.startswith("forbidden_address"), (url, events[0].error)
    assert canary.connections == 0


async def test_a_redirect_is_never_followed(nbus: Bus, canary: Canary) -> None:
    await new_webhook_secret(nbus.js, "ann")
    async with receiver(["307"]) as hook, dispatcher(nbus):
        hook.location = f"http://127.0.0.1:{canary.port}/hook"
        request = await submit_job(nbus, hook.url)
        await finish(nbus, request)
        recorded = await deliveries(nbus, request)
    assert [(e.status, e.final) for e in recorded] == [(307, False)] * (SETTINGS.tries - 1) + [(307, True)]
    assert recorded[0].error == "redirects are not followed"
    assert len(hook.got) == SETTINGS.tries and canary.connections == 0


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1/x",
        "http://10.0.0.5:5678/x",
        "http://[::1]/",
        "ftp://example.com/x",
        "http://u:p@example.com/",
    ],
)
def test_a_url_seen_to_be_refused_without_a_lookup_is_refused_at_submit(url: str) -> None:
    refused = literal_address_refused(url)
    assert refused is not None and refused.code in ("forbidden_address", "bad_url")


def test_a_name_or_a_public_address_waits_for_the_lookup() -> None:
    assert literal_address_refused("https://hooks.example.com/x") is None
    assert literal_address_refused("http://93.184.216.34/x") is None


async def test_a_dispatcher_killed_mid_delivery_resumes_without_a_second_success(
    nbus: Bus, nats_url: str
) -> None:
    """The first delivery fails (recorded), the dispatcher dies while the second is in flight; the next
    one resumes at delivery 2 (not 1), succeeds once, and nothing more is sent."""
    await new_webhook_secret(nbus.js, "ann")
    quick = tuple(msgspec.structs.replace(spec, ack_wait=2.0) for spec in WEBHOOK_CONSUMERS)
    async with receiver(["500", "hold", "200"]) as hook:
        doomed = await bus.connect(nats_url, name="doomed-webhooks")
        stop = asyncio.Event()
        task = asyncio.create_task(
            run_webhooks(doomed, stop, SETTINGS, consumers=quick, resolve=resolver(NAMES))
        )
        request = await submit_job(nbus, hook.url)
        await finish(nbus, request)
        await hook.wait_for(2)  # the second delivery is in flight
        task.cancel()  # killed: no record of delivery 2, its end never acknowledged
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await doomed.close()
        before = await deliveries(nbus, request, final=False)
        assert [(e.delivery, e.status, e.final) for e in before] == [(1, 500, False)]
        async with dispatcher(nbus, quick):
            recorded = await deliveries(nbus, request)
            await asyncio.sleep(2 * 2.0 + 0.5)  # past another ack wait: nothing comes again
    assert [(e.delivery, e.status, e.final) for e in recorded] == [(1, 500, False), (2, 200, True)]
    assert [h[ID_HEADER].rsplit(".", 1)[1] for h, _ in hook.got] == ["1", "2", "2"]  # the same id again
    assert len(await deliveries(nbus, request)) == 2


def test_the_job_body_folds_attempts_lost_retried_and_failed() -> None:
    """The body a webhook sends (and GET /v1/jobs/{id} shows): a worker that died (a later attempt began
    with no end of the first), an engine error retried, the last attempt's failure."""
    from datetime import timedelta

    from logtools.job_view import body_of, fold_job
    from schemas.chat import ReplyFailed, ReplyRetrying

    now = schemas.now()
    chat, reply, message = "c1", "r1", "m1"
    job = JobSpec(
        job_id="c1-r1",
        session_id="s",
        callback_url="https://hooks.example.com/",
        deadline_at=now + timedelta(hours=1),
    )
    ids = {"chat_id": chat, "reply_id": reply}
    events: list[schemas.Event] = [
        ChatCreated(
            event_id="e0", chat_id=chat, at=now, owner_id="ann", title="t", origin="jobs", session_id="s"
        ),
        MessagePosted(event_id="e1", chat_id=chat, at=now, message_id=message, author_id="ann", content="Hi"),
        ReplyRequested(
            event_id="e2", at=now, message_id=message, model="demo", requested_by="ann", job=job, **ids
        ),
        ReplyStarted(event_id="e3", at=now, attempt=1, worker_id="w1", model="demo", **ids),
        ReplyStarted(event_id="e4", at=now, attempt=2, worker_id="w2", model="demo", **ids),
        ReplyRetrying(
            event_id="e5",
            at=now,
            attempt=2,
            worker_id="w2",
            code="engine_error",
            error="x",
            retry_in_s=2,
            **ids,
        ),
    ]
    queued = body_of(fold_job(chat, reply, events), now)
    assert queued.status == "queued" and queued.session_id == "s" and queued.input == "Hi"
    assert [(a.attempt, a.outcome) for a in queued.attempts] == [(1, "lost"), (2, "retrying")]
    late = body_of(fold_job(chat, reply, events), now + timedelta(hours=2))
    assert late.status == "expired" and late.error is not None and late.error.code == "expired"
    events += [
        ReplyStarted(event_id="e6", at=now, attempt=3, worker_id="w1", model="demo", **ids),
        ReplyFailed(
            event_id="e7", at=now, attempt=3, worker_id="w1", error="boom", code="engine_error", **ids
        ),
    ]
    failed = body_of(fold_job(chat, reply, events), now + timedelta(hours=2))
    assert failed.status == "error" and failed.result is None
    assert failed.error is not None and failed.error.code == "engine_error"
    assert [a.outcome for a in failed.attempts] == ["lost", "retrying", "error"]
