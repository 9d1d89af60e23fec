"""Fixes of the batches review (issue 16), with the batches service running and no worker (a presence
entry says `demo` is served; its lines just wait): a cancel ends a batch whose lines never started; a
batches service restarted mid-expansion and then cancelled counts the lines made before; a cancel that
lands after the last line ended leaves the batch completed; a plan that cannot be read fails the batch;
a batch past its window is not expanded; the openai SDK does not retry our 409s and may send fields we
do not implement; imported chats never add lines to a batch."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import httpx2
import msgspec

import bus
import schemas
from bus import Bus
from identity.accounts import Principal
from logtools.export import ExportFilter, chats_json, read_log
from logtools.importer import import_chatbus
from schemas.api_batches import Batch
from schemas.batch import BatchCancelled, BatchCreated, BatchExpanded
from schemas.batch_decide import line_events, line_reply_id
from schemas.batch_lines import PlanLine, PlanTurn
from schemas.chat import ReplyCompleted, ReplyRequested
from schemas.ids import new_id
from schemas.sampling import SamplingParams
from services.api.batches import cancel_batch, own_batch, store_batch
from services.batches import run_batches
from tests.apihelp import Api, serve_model
from tests.batchhelp import jsonl
from tests.stack import wait_event


@contextlib.asynccontextmanager
async def batches_service(nbus: Bus) -> AsyncIterator[None]:
    stop = asyncio.Event()
    task = asyncio.create_task(run_batches(nbus, stop, window=16))
    try:
        yield
    finally:
        stop.set()
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.wait_for(task, 30)


def _plan(count: int) -> list[PlanLine]:
    turns = [PlanTurn(role="user", content="hi")]
    return [
        PlanLine(index=i, custom_id=f"c{i}", model="demo", params=SamplingParams(), turns=turns)
        for i in range(count)
    ]


async def _batch(api: Api, batch_id: str, until: frozenset[str]) -> Any:
    async with asyncio.timeout(30):
        while True:
            status, body = await api.call("GET", f"/v1/batches/{batch_id}")
            assert status == 200, body
            if body["status"] in until:
                return body
            await asyncio.sleep(0.1)


async def _submit(api: Api, lines: int) -> Any:
    headers = {"Content-Type": "application/jsonl"}
    status, made = await api.call("POST", "/v1/batches?model=demo", data=jsonl(lines), headers=headers)
    assert status == 200, made
    return made


async def test_a_cancel_ends_a_batch_whose_lines_never_started(api: Api) -> None:
    await serve_model(api.nbus)
    async with batches_service(api.nbus):
        made = await _submit(api, 3)
        await wait_event(api.nbus, f"batch.{made['id']}.expanded", 30, stream="BATCHES")
        status, body = await api.call("POST", f"/v1/batches/{made['id']}/cancel")
        assert status == 200 and body["status"] in ("cancelling", "cancelled"), body
        done = await _batch(api, made["id"], frozenset({"cancelled"}))
    assert done["chatbus_counts"]["cancelled"] == 3 and done["chatbus_counts"]["queued"] == 0, done
    assert done["request_counts"] == {"total": 3, "completed": 0, "failed": 3}
    async with api.client.get(f"/v1/batches/{made['id']}/errors", headers=api.auth("ann")) as resp:
        lines = [msgspec.json.decode(line) for line in (await resp.read()).splitlines()]
    assert [(line["custom_id"], line["error"]["code"]) for line in lines] == [
        (f"req-{i}", "batch_cancelled") for i in range(3)
    ]


async def test_a_cancel_after_a_restart_mid_expansion_counts_the_lines_made_before(api: Api) -> None:
    created = await store_batch(api.nbus.js, "ann", _plan(100), model="demo", window="1h", metadata=None)
    # An expander that stopped mid-way: lines 0..39 made whole, line 40's chat made but not its request.
    for line in _plan(41):
        events = line_events(created, line, schemas.now())
        await bus.append_events(api.nbus.js, list(events if line.index < 40 else events[:1]))
    cancel = BatchCancelled(event_id=new_id("e"), batch_id=created.batch_id, at=schemas.now(), by="ann")
    await bus.append_event(api.nbus.js, cancel)
    async with batches_service(api.nbus):
        expanded = await wait_event(api.nbus, f"batch.{created.batch_id}.expanded", 30, stream="BATCHES")
        assert isinstance(expanded, BatchExpanded) and expanded.lines == 41
        done = await _batch(api, created.batch_id, frozenset({"cancelled", "completed"}))
    assert done["status"] == "cancelled", done
    counts = done["chatbus_counts"]
    assert counts["cancelled"] == 41 and counts["queued"] == 0 and counts["processing"] == 0, done


async def test_a_cancel_after_the_last_line_ended_leaves_the_batch_completed(api: Api) -> None:
    created = await store_batch(api.nbus.js, "ann", _plan(2), model="demo", window="1h", metadata=None)
    async with batches_service(api.nbus):
        await wait_event(api.nbus, f"batch.{created.batch_id}.expanded", 30, stream="BATCHES")
    log = await own_batch(api.nbus.js, created.batch_id, _ann())
    _, before = await api.call("GET", f"/v1/batches/{created.batch_id}")
    assert before["status"] == "in_progress"
    for index in range(2):  # the worker ends both lines...
        reply_id = line_reply_id(created.batch_id, index)
        request = await bus.last_msg(api.nbus.js, "CHAT", f"chat.*.reply.{reply_id}.requested.>")
        assert request is not None
        chat_id = bus.decode_one(request.subject, request.data).chat_id  # type: ignore[attr-defined]
        done = ReplyCompleted(
            event_id=new_id("e"),
            chat_id=chat_id,
            at=schemas.now(),
            reply_id=reply_id,
            attempt=1,
            worker_id="w1",
            model="demo",
            text="ok",
            prompt_tokens=1,
            completion_tokens=1,
            finish_reason="stop",
        )
        await bus.append_event(api.nbus.js, done)
    # ... while a cancel checked the status before they ended: the cancel lands after.
    await cancel_batch(api.nbus.js, log, "ann", msgspec.convert(before, type=Batch))
    _, after = await api.call("GET", f"/v1/batches/{created.batch_id}")
    assert after["status"] == "completed" and after["completed_at"], after
    assert after["request_counts"] == {"total": 2, "completed": 2, "failed": 0}


def _ann() -> Principal:
    return Principal(user_id="ann", role="user", key_id="")


async def test_a_batch_whose_plan_cannot_be_read_fails_and_one_past_its_window_expires(api: Api) -> None:
    missing = await store_batch(api.nbus.js, "ann", _plan(3), model="demo", window="1h", metadata=None)
    await bus.delete_object(api.nbus.js, "batch_inputs", missing.batch_id)
    corrupt = await store_batch(api.nbus.js, "ann", _plan(3), model="demo", window="1h", metadata=None)
    await bus.put_object(api.nbus.js, "batch_inputs", corrupt.batch_id, b'{"index": "no"}\nnot json')
    late_id, past = new_id("q"), schemas.now() - timedelta(minutes=5)
    await bus.put_object(api.nbus.js, "batch_inputs", late_id, b"\n".join(_encode(_plan(4))))
    late = BatchCreated(
        event_id=new_id("e"),
        batch_id=late_id,
        at=past - timedelta(minutes=1),
        owner_id="ann",
        lines=4,
        model="demo",
        completion_window="1m",
        deadline_at=past,
        metadata={},
        input_object=late_id,
    )
    await bus.append_event(api.nbus.js, late)
    async with batches_service(api.nbus):
        for batch in (missing, corrupt):
            failed = await _batch(api, batch.batch_id, frozenset({"failed", "completed"}))
            assert failed["status"] == "failed" and failed["failed_at"], failed
            assert failed["errors"]["data"][0]["code"] == "batch_failed", failed
            assert failed["request_counts"] == {"total": 3, "completed": 0, "failed": 3}
        expired = await _batch(api, late_id, frozenset({"expired", "completed"}))
    assert expired["status"] == "expired" and expired["chatbus_counts"]["expired"] == 4, expired
    made = await bus.read_all(api.nbus.js, "CHAT", [f"chat.*.reply.{line_reply_id(late_id, 0)}.>"])
    assert made == []  # no job made past the window


def _encode(plan: list[PlanLine]) -> list[bytes]:
    return [msgspec.json.encode(line) for line in plan]


async def test_the_openai_sdk_takes_our_errors_and_does_not_retry_our_409s(api: Api) -> None:
    import openai

    await serve_model(api.nbus)
    sent: list[str] = []

    async def count(request: httpx2.Request) -> None:
        sent.append(f"{request.method} {request.url.path}")

    http = httpx2.AsyncClient(event_hooks={"request": [count]})
    client = openai.AsyncOpenAI(
        base_url=str(api.client.make_url("/v1")), api_key=api.keys["ann"], http_client=http, max_retries=2
    )
    async with batches_service(api.nbus):
        data = jsonl(2, model="demo")
        uploaded = await client.files.create(file=("in.jsonl", data), purpose="batch")
        batch = await client.batches.create(
            input_file_id=uploaded.id,
            endpoint="/v1/chat/completions",
            completion_window="24h",
            output_expires_after={"anchor": "created_at", "seconds": 3600},
        )
        assert batch.status == "in_progress"
        unserved = await client.files.create(file=("in.jsonl", jsonl(2, model="nosuch")), purpose="batch")
        sent.clear()
        try:
            await client.batches.create(
                input_file_id=unserved.id, endpoint="/v1/chat/completions", completion_window="24h"
            )
            raise AssertionError("a batch of a model nobody serves was taken")
        except openai.ConflictError as exc:
            assert exc.code == "model_unavailable"
        assert sent == ["POST /v1/batches"]  # once: not retried
        await client.batches.cancel(batch.id)
        await _batch(api, batch.id, frozenset({"cancelled"}))
        sent.clear()
        try:
            await client.batches.cancel(batch.id)
            raise AssertionError("an ended batch was cancelled again")
        except openai.ConflictError as exc:
            assert exc.code == "batch_finished"
        assert sent == [f"POST /v1/batches/{batch.id}/cancel"]
        try:
            await client.batches.retrieve(f"{batch.id}/x/y")
            raise AssertionError("no such route")
        except openai.NotFoundError as exc:
            assert isinstance(exc.body, dict) and exc.body.get("message"), exc.body
    await client.close()


async def test_imported_chats_never_add_lines_to_a_batch(api: Api) -> None:
    await serve_model(api.nbus)
    async with batches_service(api.nbus):
        made = await _submit(api, 2)
        await wait_event(api.nbus, f"batch.{made['id']}.expanded", 30, stream="BATCHES")
    document: dict[str, Any] = json.loads(
        json.dumps(chats_json(await read_log(api.nbus), ExportFilter(user="ann", consent_only=False)))
    )
    assert len(document["chats"]) == 2
    report = await import_chatbus(api.nbus, document, keep_ids=False, user="ann")  # into the same instance
    assert len(report.chats) == 2
    for chat_id in report.chats:
        for msg in await bus.read_all(api.nbus.js, "CHAT", [f"chat.{chat_id}.>"]):
            event = bus.decode_one(msg.subject, msg.data)
            if isinstance(event, ReplyRequested):
                assert event.imported and event.job is None
    _, body = await api.call("GET", f"/v1/batches/{made['id']}")
    assert body["request_counts"]["total"] == 2 and sum(body["chatbus_counts"].values()) == 2, body
