"""The OpenAI-compatible API, driven by the official `openai` SDK against a real stack (demo models)."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import io
import json
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import openai
import pytest
from PIL import Image

import bus
from bus import Bus
from identity.accounts import add_user, issue_key
from schemas.chat import ReplyCancelled, ReplyCompleted, ReplyRequested
from services.api import ApiSettings
from services.llm_worker import WorkerSettings
from services.llm_worker.worker import Worker
from tests.stack import chat_events, in_process_stack, wait_caught_up, wait_event, wait_models

ROOT = Path(__file__).parent.parent


@dataclass
class Stack:
    """A running stack: the API's base URL, ann's key and NATS URL, the demo worker."""

    base: str
    key: str
    nats_url: str
    nbus: Bus
    worker: Worker

    def client(self, key: str | None = None) -> openai.OpenAI:
        return openai.OpenAI(base_url=f"{self.base}/v1", api_key=key or self.key, max_retries=0)

    def aclient(self) -> openai.AsyncOpenAI:
        return openai.AsyncOpenAI(base_url=f"{self.base}/v1", api_key=self.key, max_retries=0)


@pytest.fixture
async def stack(nbus: Bus, nats_url: str, tmp_path: Path, demo_model_dir: Path) -> AsyncIterator[Stack]:
    """Projector, image store, a demo worker (alias `demo`) and the API on a real port, in this process."""
    await add_user(nbus.js, "ann")
    key = (await issue_key(nbus.js, "ann"))[1]
    settings = ApiSettings(max_body_bytes=4 * 1024 * 1024)
    async with in_process_stack(nbus, tmp_path / "read.duckdb", demo_model_dir, settings, capacity=4) as (
        base,
        worker,
    ):
        yield Stack(base, key, nats_url, nbus, worker)


HELLO = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Say something."}]


def _complete(stack: Stack, **kwargs: Any) -> Any:
    return stack.client().chat.completions.create(model="demo", messages=HELLO, **kwargs)


async def _reply_of(stack: Stack, chat_id: str) -> tuple[ReplyRequested, ReplyCompleted]:
    events = await chat_events(stack.nbus, chat_id)
    requested = next(e for e in events if isinstance(e, ReplyRequested))
    completed = next(e for e in events if isinstance(e, ReplyCompleted))
    return requested, completed


async def _deltas(stack: Stack, chat_id: str) -> list[Any]:
    import schemas

    msgs = await bus.read_all(stack.nbus.js, "TOKENS", [f"tokens.{chat_id}.*"])
    return [schemas.decode_event(m.data) for m in msgs]


async def test_a_completion_is_a_chat_in_the_log_with_usage_in_tokens(stack: Stack) -> None:
    raw = await asyncio.to_thread(
        lambda: stack.client().chat.completions.with_raw_response.create(
            model="demo", messages=HELLO, max_tokens=12, temperature=0
        )
    )
    completion = raw.parse()
    chat_id = raw.headers["x-chatbus-chat-id"]
    assert completion.object == "chat.completion" and completion.model == "demo"
    choice = completion.choices[0]
    assert choice.message.role == "assistant" and choice.message.content
    requested, completed = await _reply_of(stack, chat_id)
    assert choice.message.content == completed.text
    # Every generated token is counted: the deltas' tokens add up to the usage.
    generated = sum(d.n_tokens for d in await _deltas(stack, chat_id))
    assert completion.usage.completion_tokens == completed.completion_tokens == generated
    assert completion.usage.prompt_tokens == completed.prompt_tokens > 0
    assert (
        completion.usage.total_tokens == completion.usage.prompt_tokens + completion.usage.completion_tokens
    )
    if choice.finish_reason == "length":
        assert completion.usage.completion_tokens == 12
    # The request the worker served: the model's defaults, overridden by what the client named.
    assert requested.params.max_new_tokens == 12 and requested.params.temperature == 0.0
    events = await chat_events(stack.nbus, chat_id)
    created = events[0]
    assert created.origin == "openai" and created.system_prompt == "Be brief."  # type: ignore[union-attr]
    assert [e.content for e in events if e.__class__.__name__ == "MessagePosted"] == ["Say something."]


async def test_max_tokens_ends_with_length(stack: Stack) -> None:
    # ignore_eos is not OpenAI's, so ask for few tokens of a random model: it does not stop by itself.
    completion = await asyncio.to_thread(_complete, stack, max_completion_tokens=5, seed=3, temperature=1.0)
    assert completion.choices[0].finish_reason == "length"
    assert completion.usage.completion_tokens == 5


async def test_a_stream_sends_chunks_then_done_with_usage(stack: Stack) -> None:
    client = stack.aclient()
    stream = await client.chat.completions.create(
        model="demo", messages=HELLO, max_tokens=20, stream=True, stream_options={"include_usage": True}
    )
    chunks = [chunk async for chunk in stream]
    await client.close()
    assert chunks[0].choices[0].delta.role == "assistant"
    assert all(c.object == "chat.completion.chunk" and c.id == chunks[0].id for c in chunks)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    finishing = [c for c in chunks if c.choices and c.choices[0].finish_reason]
    assert len(finishing) == 1 and finishing[0].choices[0].finish_reason in ("stop", "length")
    assert chunks[-1].choices == [] and chunks[-1].usage is not None
    chat_id = chunks[0].id.removeprefix("chatcmpl-")  # the id names the reply, not the chat
    events = [e for e in await stack_events(stack) if getattr(e, "reply_id", None) == chat_id]
    completed = next(e for e in events if isinstance(e, ReplyCompleted))
    assert text == completed.text and chunks[-1].usage.completion_tokens == completed.completion_tokens


async def stack_events(stack: Stack) -> list[Any]:
    import schemas

    return [schemas.decode_event(m.data) for m in await bus.read_all(stack.nbus.js, "CHAT", ["chat.>"])]


async def test_a_stop_text_ends_the_reply_before_it(stack: Stack) -> None:
    first = await asyncio.to_thread(_complete, stack, max_tokens=40, temperature=0)
    text = first.choices[0].message.content
    assert len(text) > 12, text
    stop = text[len(text) // 2 : len(text) // 2 + 4]
    again = await asyncio.to_thread(_complete, stack, max_tokens=40, temperature=0, stop=[stop, "\x00never"])
    assert again.choices[0].finish_reason == "stop"
    assert again.choices[0].message.content == text[: text.index(stop)]
    assert stop not in again.choices[0].message.content


async def test_the_same_seed_gives_the_same_text(stack: Stack) -> None:
    runs = await asyncio.gather(
        *(
            asyncio.to_thread(_complete, stack, max_tokens=24, temperature=1.0, seed=seed)
            for seed in (11, 11, 12, 11)
        )
    )
    texts = [r.choices[0].message.content for r in runs]
    assert texts[0] == texts[1] == texts[3], texts
    assert texts[2] != texts[0]


async def test_a_client_that_leaves_mid_stream_cancels_the_reply(stack: Stack) -> None:
    client = stack.aclient()
    stream = await client.chat.completions.create(model="demo", messages=HELLO, max_tokens=2000, stream=True)
    chunks = 0
    async for _ in stream:
        chunks += 1
        if chunks == 3:
            break
    await stream.close()
    reply_id = stream.response.headers["x-chatbus-reply-id"]
    chat_id = stream.response.headers["x-chatbus-chat-id"]
    cancelled = await wait_event(stack.nbus, f"chat.{chat_id}.reply.{reply_id}.cancelled", timeout=10)
    assert isinstance(cancelled, ReplyCancelled)
    completed = await wait_event(stack.nbus, f"chat.{chat_id}.reply.{reply_id}.completed", timeout=10)
    assert completed.finish_reason == "cancelled" and completed.completion_tokens < 2000
    for _ in range(100):  # the slot is free again
        if stack.worker.engine.active() == 0 and not stack.worker.active:
            break
        await asyncio.sleep(0.05)
    assert stack.worker.engine.active() == 0 and not stack.worker.active
    await client.close()


async def test_errors_come_in_openai_shape(stack: Stack) -> None:
    def call(**kwargs: Any) -> Any:
        args = {"model": "demo", "messages": HELLO, "max_tokens": 4, **kwargs}
        return stack.client(kwargs.pop("key", None)).chat.completions.create(**args)

    cases: list[tuple[dict[str, Any], type[Exception], int, str | None, str | None]] = [
        ({"model": "gpt-17"}, openai.NotFoundError, 404, "model_not_found", "model"),
        ({"model": "no such/model"}, openai.NotFoundError, 404, "model_not_found", "model"),
        ({"n": 2}, openai.BadRequestError, 400, None, "n"),
        ({"temperature": 7}, openai.BadRequestError, 400, None, "temperature"),
        ({"max_tokens": 0}, openai.BadRequestError, 400, None, "max_tokens"),
        ({"messages": []}, openai.BadRequestError, 400, None, "messages"),
        (
            {"messages": [{"role": "tool", "content": "x"}]},
            openai.BadRequestError,
            400,
            None,
            "messages[0].role",
        ),
        ({"extra_body": {"tools": []}}, openai.BadRequestError, 400, None, "tools"),
        ({"presence_penalty": 0.5}, openai.BadRequestError, 400, None, "presence_penalty"),
        ({"stop": ["a", "b", "c", "d", "e"]}, openai.BadRequestError, 400, None, "stop"),
    ]
    for kwargs, kind, status, code, param in cases:
        with pytest.raises(kind) as caught:
            await asyncio.to_thread(call, **kwargs)
        error = caught.value
        assert error.status_code == status, (kwargs, error)  # type: ignore[attr-defined]
        body = error.body  # type: ignore[attr-defined]
        assert set(body) == {"message", "type", "param", "code"} and body["message"], body
        assert body["type"] == "invalid_request_error" and body["param"] == param, (kwargs, body)
        if code:
            assert body["code"] == code
    with pytest.raises(openai.AuthenticationError) as bad_key:
        await asyncio.to_thread(
            lambda: stack.client("cb_wrong").chat.completions.create(model="demo", messages=HELLO)
        )
    assert bad_key.value.body["code"] == "invalid_api_key"  # type: ignore[index]
    with pytest.raises(openai.AuthenticationError):
        await asyncio.to_thread(lambda: stack.client("cb_wrong").models.list())


async def test_models_list_in_openai_shape(stack: Stack) -> None:
    models = await asyncio.to_thread(lambda: stack.client().models.list())
    assert [(m.id, m.object, m.owned_by) for m in models.data] == [("demo", "model", "chatbus")]
    assert models.data[0].created > 0 and models.data[0].capacity == 4  # type: ignore[attr-defined]


async def test_api_chats_are_listed_only_when_asked_for(stack: Stack) -> None:
    raw = await asyncio.to_thread(
        lambda: stack.client().chat.completions.with_raw_response.create(
            model="demo", messages=HELLO, max_tokens=2
        )
    )
    chat_id = raw.headers["x-chatbus-chat-id"]
    await wait_caught_up(stack.nbus)
    http = stack.client()._client  # the SDK's own httpx client, with the key
    headers = {"Authorization": f"Bearer {stack.key}"}
    listed = lambda query: [  # noqa: E731
        c["chat_id"] for c in http.get(f"{stack.base}/v1/chats{query}", headers=headers).json()["items"]
    ]
    assert chat_id not in await asyncio.to_thread(listed, "")
    assert chat_id in await asyncio.to_thread(listed, "?origin=openai")
    assert chat_id in await asyncio.to_thread(listed, "?origin=all")
    bad = await asyncio.to_thread(http.get, f"{stack.base}/v1/chats?origin=nope", headers=headers)
    assert bad.status_code == 400
    messages = await asyncio.to_thread(http.get, f"{stack.base}/v1/chats/{chat_id}/messages", headers=headers)
    assert messages.status_code == 200 and messages.json()["messages"][0]["content"] == "Say something."


async def test_completions_show_in_the_audit_and_the_training_export(stack: Stack, tmp_path: Path) -> None:
    raw = await asyncio.to_thread(
        lambda: stack.client().chat.completions.with_raw_response.create(
            model="demo", messages=HELLO, max_tokens=6
        )
    )
    chat_id, text = raw.headers["x-chatbus-chat-id"], raw.parse().choices[0].message.content
    cli = [sys.executable, "-m", "services.cli", "admin"]
    audit = await asyncio.to_thread(
        subprocess.run,
        [*cli, "audit", "chat", chat_id, "--json", "--nats", stack.nats_url],
        cwd=ROOT, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert audit.returncode == 0, audit.stderr
    kinds = [json.loads(line)["type"] for line in audit.stdout.splitlines()]
    assert kinds[:3] == ["chat.created", "chat.message.posted", "chat.reply.requested"]
    assert "chat.reply.completed" in kinds
    out = tmp_path / "sft.jsonl"
    export = await asyncio.to_thread(
        subprocess.run,
        [*cli, "export", "sft", "--out", str(out), "--include-without-consent", "--nats", stack.nats_url],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert export.returncode == 0, export.stderr
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert {"role": "assistant", "content": text} in [m for row in rows for m in row["messages"]]


def _png_data_url() -> str:
    out = io.BytesIO()
    Image.new("RGB", (32, 24), (200, 30, 30)).save(out, format="PNG")
    return "data:image/png;base64," + base64.b64encode(out.getvalue()).decode()


async def test_an_image_part_reaches_a_vision_model(stack: Stack, demo_vlm_dir: Path) -> None:
    from services.llm_worker.vision import VisionEngine

    engine = await asyncio.to_thread(VisionEngine.from_pretrained, str(demo_vlm_dir))
    worker = Worker(
        WorkerSettings(model="vlm", alias="vision", capacity=2), stack.nbus, engine, engine.tokenizer
    )
    stop = asyncio.Event()
    task = asyncio.create_task(worker.run(stop))
    try:
        await wait_models(stack.nbus, "vision")
        content = [
            {"type": "text", "text": "What is this?"},
            {"type": "image_url", "image_url": {"url": _png_data_url()}},
        ]
        raw = await asyncio.to_thread(
            lambda: stack.client().chat.completions.with_raw_response.create(
                model="vision", messages=[{"role": "user", "content": content}], max_tokens=4
            )
        )
        _, completed = await _reply_of(stack, raw.headers["x-chatbus-chat-id"])
        assert len(completed.images_seen) == 1 and completed.images_ignored == []
        with pytest.raises(openai.BadRequestError) as bad:
            await asyncio.to_thread(
                lambda: stack.client().chat.completions.create(
                    model="vision",
                    messages=[
                        {"role": "user", "content": [{"type": "image_url", "image_url": {"url": "data:,x"}}]}
                    ],
                )
            )
        assert bad.value.body["param"] == "messages[0].content[0]"  # type: ignore[index]
    finally:
        stop.set()
        await asyncio.wait_for(task, 30)


async def test_a_prompt_longer_than_the_context_is_the_callers_fault(stack: Stack) -> None:
    long = [{"role": "user", "content": "word " * 6000}]
    with pytest.raises(openai.BadRequestError) as caught:
        await asyncio.to_thread(
            lambda: stack.client().chat.completions.create(model="demo", messages=long, max_tokens=4)
        )
    assert caught.value.body["code"] == "context_length_exceeded"  # type: ignore[index]
    stream = await stack.aclient().chat.completions.create(
        model="demo", messages=long, max_tokens=4, stream=True
    )
    with pytest.raises(openai.APIError) as streamed:
        async for _ in stream:
            pass
    assert "leaves no room" in streamed.value.message


async def test_a_completion_survives_the_api_going_away_mid_stream(
    nbus: Bus, nats_url: str, tmp_path: Path, demo_model_dir: Path
) -> None:
    """An API stopped mid-stream (SIGTERM, as an upgrade does) finishes its streams first; one killed
    (SIGKILL) drops its client, but the reply is not cancelled: the worker finishes it into the log."""
    from tests.stack import spawn, stop_process

    await add_user(nbus.js, "ann")
    key = (await issue_key(nbus.js, "ann"))[1]
    worker = spawn(
        ["worker", "--model", str(demo_model_dir), "--alias", "demo"], nats_url, tmp_path / "worker.log"
    )
    apis = []
    try:
        await wait_models(nbus, "demo")
        for sig in (signal.SIGTERM, signal.SIGKILL):
            port = bus.free_port()
            api = spawn(["api"], nats_url, tmp_path / f"api-{sig}.log", CHATBUS_API_PORT=str(port))
            apis.append(api)
            client = openai.AsyncOpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key=key, max_retries=0)
            for _ in range(200):
                with contextlib.suppress(openai.APIConnectionError):
                    await client.models.list()
                    break
                await asyncio.sleep(0.1)
            stream = await client.chat.completions.create(
                model="demo", messages=HELLO, max_tokens=300, stream=True, extra_body={"ignore_eos": True}
            )
            chat_id = stream.response.headers["x-chatbus-chat-id"]
            reply_id = stream.response.headers["x-chatbus-reply-id"]
            text, finished = "", None
            with contextlib.suppress(openai.APIError, openai.APIConnectionError):
                async for chunk in stream:
                    if not text:
                        api.send_signal(sig)
                    text += chunk.choices[0].delta.content or "" if chunk.choices else ""
                    finished = finished or (chunk.choices[0].finish_reason if chunk.choices else None)
            completed = await wait_event(nbus, f"chat.{chat_id}.reply.{reply_id}.completed", timeout=60)
            assert completed.finish_reason == "length" and completed.completion_tokens == 300
            assert await bus.last_msg(nbus.js, "CHAT", f"chat.{chat_id}.reply.{reply_id}.cancelled") is None
            if sig == signal.SIGTERM:
                assert text == completed.text and finished == "length"
            else:
                assert len(text) < len(completed.text)
            await client.close()
    finally:
        for api in apis:
            stop_process(api)
        stop_process(worker)
