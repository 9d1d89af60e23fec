"""Batches end to end against a real nats-server, DuckDB and the demo model: a batch's lines become jobs
answered once each, its output and errors files in line order, plain-text input, cancel."""

from __future__ import annotations

import asyncio
from collections import Counter
from pathlib import Path

import msgspec
import pytest

import bus
import schemas
from bus import Bus
from schemas.batch import BatchCreated
from schemas.batch_decide import line_chat_id
from schemas.chat import ChatCreated, ReplyRequested
from tests.batchhelp import batch_stack, download, jsonl, submit, users, wait_batch
from tests.stack import Client


async def test_a_200_line_batch_answers_every_line_once_in_line_order(
    nbus: Bus, tmp_path: Path, demo_model_dir: Path
) -> None:
    keys = await users(nbus)
    async with batch_stack(nbus, tmp_path, demo_model_dir) as base, Client(base, keys["ann"]) as ann:
        made = await submit(ann, jsonl(200), query="?metadata=%7B%22run%22%3A%22nightly%22%7D")
        assert made["object"] == "batch" and made["status"] == "in_progress"
        assert made["request_counts"] == {"total": 200, "completed": 0, "failed": 0}
        assert made["metadata"] == {"run": "nightly"} and made["model"] == "demo"
        done = await wait_batch(ann, made["id"])
        assert done["status"] == "completed", done
        assert done["request_counts"] == {"total": 200, "completed": 200, "failed": 0}
        assert done["completed_at"] >= done["created_at"]
        output = await download(ann, f"/v1/batches/{made['id']}/output")
        assert await download(ann, f"/v1/batches/{made['id']}/errors") == []
        # Another user's batch is not there for them.
        async with Client(base, keys["bob"]) as bob:
            assert (await bob.call("GET", f"/v1/batches/{made['id']}"))[0] == 404
            status, listed = await bob.call("GET", "/v1/batches")
            assert status == 200 and made["id"] not in [b["id"] for b in listed["data"]]
        status, listed = await ann.call("GET", "/v1/batches?limit=1")
        assert status == 200 and listed["data"][0]["id"] == made["id"] and listed["first_id"] == made["id"]
        job_id = output[7]["response"]["request_id"]
        status, job = await ann.call("GET", f"/v1/jobs/{job_id}")
        assert status == 200 and job["status"] == "done"
        status, page = await ann.call("GET", f"/v1/jobs?batch_id={made['id']}&limit=200")
        assert status == 200 and len(page["items"]) == 200
        assert {item["custom_id"] for item in page["items"]} == {f"req-{i}" for i in range(200)}
    assert [line["custom_id"] for line in output] == [f"req-{i}" for i in range(200)]
    first = output[0]
    assert first["error"] is None and first["id"].startswith("batch_req_")
    body = first["response"]["body"]
    assert first["response"]["status_code"] == 200 and body["object"] == "chat.completion"
    assert body["model"] == "demo" and body["choices"][0]["message"]["role"] == "assistant"
    assert body["usage"]["completion_tokens"] <= 2
    events = [bus.decode_one(m.subject, m.data) for m in await bus.read_all(nbus.js, "CHAT", ["chat.>"])]
    requests = [e for e in events if isinstance(e, ReplyRequested) and e.job and e.job.batch_id == made["id"]]
    assert len(requests) == 200 and len({r.job.custom_id for r in requests if r.job}) == 200
    chats = {e.chat_id: e for e in events if isinstance(e, ChatCreated)}
    assert {chats[r.chat_id].origin for r in requests} == {"batch"}


async def test_plain_text_lines_are_prompts_named_by_their_line_number(
    nbus: Bus, tmp_path: Path, demo_model_dir: Path
) -> None:
    keys = await users(nbus)
    async with batch_stack(nbus, tmp_path, demo_model_dir) as base, Client(base, keys["ann"]) as ann:
        made = await submit(ann, b"Hello\n\nWhat is 2+2?\nBye\n", "text/plain", "?completion_window=30m")
        assert made["request_counts"]["total"] == 3 and made["completion_window"] == "30m"
        assert made["expires_at"] - made["created_at"] in (1799, 1800, 1801)
        await wait_batch(ann, made["id"])
        output = await download(ann, f"/v1/files/{made['output_file_id']}/content")
    assert [line["custom_id"] for line in output] == ["line-1", "line-3", "line-4"]


async def test_a_cancelled_batch_ends_cancelled_and_its_errors_file_lists_the_lines_it_stopped(
    nbus: Bus, tmp_path: Path, demo_model_dir: Path
) -> None:
    keys = await users(nbus)
    async with batch_stack(nbus, tmp_path, demo_model_dir) as base, Client(base, keys["ann"]) as ann:
        made = await submit(ann, jsonl(60, max_tokens=200, ignore_eos=True))
        await wait_batch(ann, made["id"], until=frozenset({"in_progress"}))
        status, cancelling = await ann.call("POST", f"/v1/batches/{made['id']}/cancel")
        assert status == 200 and cancelling["status"] in ("cancelling", "cancelled")
        assert cancelling["cancelling_at"] is not None
        ended = await wait_batch(ann, made["id"])
        assert ended["status"] == "cancelled" and ended["cancelled_at"] is not None
        assert (await ann.call("POST", f"/v1/batches/{made['id']}/cancel"))[0] == 409
        output = await download(ann, f"/v1/batches/{made['id']}/output")
        errors = await download(ann, f"/v1/batches/{made['id']}/errors")
    counts = ended["chatbus_counts"]
    assert counts["cancelled"] >= 1 and counts["queued"] == counts["processing"] == 0
    assert len(errors) == counts["cancelled"] and len(output) == counts["done"]
    assert {line["error"]["code"] for line in errors} == {"batch_cancelled"}
    assert all(line["response"] is None for line in errors)
    named = Counter(line["custom_id"] for line in output + errors)
    assert set(named.values()) == {1}
    created = await bus.last_msg(nbus.js, "BATCHES", f"batch.{made['id']}.created")
    assert created is not None and isinstance(schemas.decode_event(created.data), BatchCreated)


async def test_the_openai_sdk_batch_flow(nbus: Bus, tmp_path: Path, demo_model_dir: Path) -> None:
    """files.create → batches.create → batches.retrieve until completed → files.content(output_file_id)."""
    import openai

    keys = await users(nbus)
    async with batch_stack(nbus, tmp_path, demo_model_dir) as base:
        client = openai.AsyncOpenAI(base_url=f"{base}/v1", api_key=keys["ann"], max_retries=0)
        uploaded = await client.files.create(file=("in.jsonl", jsonl(5)), purpose="batch")
        assert uploaded.purpose == "batch" and uploaded.bytes == len(jsonl(5))
        batch = await client.batches.create(
            input_file_id=uploaded.id,
            endpoint="/v1/chat/completions",
            completion_window="24h",
            metadata={"job": "sdk"},
        )
        assert batch.input_file_id == uploaded.id and batch.metadata == {"job": "sdk"}
        for _ in range(300):
            batch = await client.batches.retrieve(batch.id)
            if batch.status == "completed":
                break
            await asyncio.sleep(0.2)
        assert batch.status == "completed" and batch.request_counts is not None
        assert batch.request_counts.completed == 5 and batch.output_file_id
        content = await client.files.content(batch.output_file_id)
        lines = [msgspec.json.decode(line) for line in content.content.splitlines()]
        assert [line["custom_id"] for line in lines] == [f"req-{i}" for i in range(5)]
        assert (await client.files.content(uploaded.id)).content == jsonl(5)
        listed = await client.batches.list(limit=5)
        assert batch.id in [b.id for b in listed.data]
        with pytest.raises(openai.NotFoundError):
            await client.batches.retrieve("qnosuch")
        with pytest.raises(openai.ConflictError):
            await client.batches.cancel(batch.id)
        await client.close()


async def test_erasing_a_user_deletes_their_batches_files_and_line_chats(
    nbus: Bus, tmp_path: Path, demo_model_dir: Path
) -> None:
    from aiohttp import FormData

    from identity.accounts import add_user, issue_key
    from identity.erasure import erase_user
    from schemas.ids import new_id

    user = new_id("u")
    await add_user(nbus.js, user)
    key = (await issue_key(nbus.js, user))[1]
    async with batch_stack(nbus, tmp_path, demo_model_dir) as base, Client(base, key) as client:
        made = await submit(client, jsonl(3))
        form = FormData({"purpose": "batch"})
        form.add_field("file", jsonl(2), filename="in.jsonl")
        status, uploaded = await client.call("POST", "/v1/files", data=form)
        assert status == 200, uploaded
        await wait_batch(client, made["id"])
        erased = await erase_user(nbus, user, "root")
    assert set(erased.batches) == {made["id"], uploaded["id"]}
    assert (
        await bus.read_all(nbus.js, "BATCHES", [f"batch.{made['id']}.>", f"batchfile.{uploaded['id']}.>"])
        == []
    )
    assert await bus.get_object(nbus.js, "batch_inputs", made["id"]) is None
    assert await bus.get_object(nbus.js, "batch_files", uploaded["id"]) is None
    for i in range(3):
        left = await bus.read_all(nbus.js, "CHAT", [f"chat.{line_chat_id(made['id'], i)}.>"])
        assert [m.subject.rsplit(".", 1)[-1] for m in left] == ["erased"]
