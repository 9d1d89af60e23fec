"""Multimodal chats end to end: upload over HTTP, post with the image, a vision worker sees it.

The API, image store and projector run as in tests/test_images_api.py; workers run in-process
with real engines. The processor is wrapped (not replaced) so the test can see what it received.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import msgspec
from PIL import Image

import bus
from bus import Bus
from schemas.chat import ReplyCompleted
from schemas.streams import WORKERS_KV
from services.llm_worker import WorkerSettings
from services.llm_worker.continuous_batching import ContinuousBatchingEngine
from services.llm_worker.demo_vlm import IMAGE_TOKEN, IMAGE_TOKENS_PER_IMAGE
from services.llm_worker.engine import Engine, EngineConfig
from services.llm_worker.vision import VisionEngine, is_vision_model
from services.llm_worker.worker import Worker
from tests.apihelp import Api, upload
from tests.stack import wait_event


class RecordingProcessor:
    """The real processor, with every call's arguments kept for the test to inspect."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.calls: list[dict[str, Any]] = []

    def __call__(self, **kwargs: Any) -> Any:
        self.calls.append(kwargs)
        return self.inner(**kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


@contextlib.asynccontextmanager
async def running(nbus: Bus, engine: Engine, tokenizer: Any, alias: str) -> AsyncIterator[Worker]:
    settings = WorkerSettings(model="in-process", alias=alias, capacity=4, ack_wait=10.0)
    worker = Worker(settings, nbus, engine, tokenizer)
    stop = asyncio.Event()
    task = asyncio.create_task(worker.run(stop))
    try:
        for _ in range(200):  # until the worker's presence is visible (the API checks it on post)
            if await bus.KV(nbus.js, WORKERS_KV.bucket).keys(f"{alias}.*"):
                break
            await asyncio.sleep(0.05)
        yield worker
    finally:
        stop.set()
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.wait_for(task, 20)


def _picture() -> Image.Image:
    """Four flat colour quadrants: pixels the test can recognise after any resize."""
    image = Image.new("RGB", (64, 48), (255, 0, 0))
    image.paste((0, 255, 0), (32, 0, 64, 24))
    image.paste((0, 0, 255), (0, 24, 32, 48))
    image.paste((255, 255, 0), (32, 24, 64, 48))
    return image


def _png(image: Image.Image) -> bytes:
    out = io.BytesIO()
    image.save(out, "PNG")
    return out.getvalue()


async def _post_and_watch(http: Api, chat_id: str, body: dict[str, Any]) -> tuple[dict[str, Any], list[Any]]:
    """Post over HTTP and follow the chat's WebSocket until the reply ends; the frames seen."""
    frames: list[Any] = []
    async with http.client.ws_connect(f"/v1/chats/{chat_id}/ws", headers=http.auth("ann")) as ws:
        status, posted = await http.call("POST", f"/v1/chats/{chat_id}/messages", json=body)
        assert status == 202, posted
        async with asyncio.timeout(60):
            async for msg in ws:
                frame = msg.json()
                frames.append(frame)
                if frame["kind"] == "event" and frame["event"]["type"] in (
                    "chat.reply.completed",
                    "chat.reply.failed",
                ):
                    break
    return posted, frames


async def test_a_vision_model_receives_the_uploaded_image(api: Api, demo_vlm_dir: Path) -> None:
    assert is_vision_model(str(demo_vlm_dir))
    engine = await asyncio.to_thread(VisionEngine.from_pretrained, str(demo_vlm_dir), EngineConfig())
    recorder = RecordingProcessor(engine.processor)
    engine.processor = recorder
    source = _picture()
    status, info = await upload(api, _png(source))
    assert status == 201
    chat_id = (await api.new_chat(model="vision"))["chat_id"]
    async with running(api.nbus, engine, engine.tokenizer, "vision"):
        status, models = await api.call("GET", "/v1/models")
        assert [(m["id"], m["images"]) for m in models["data"]] == [("vision", True)]
        posted, frames = await _post_and_watch(
            api,
            chat_id,
            {
                "content": "What is in this picture?",
                "images": [info["sha256"]],
                "params": {"max_new_tokens": 12},
            },
        )
    done = await wait_event(api.nbus, f"chat.{chat_id}.reply.{posted['reply_id']}.completed")
    assert isinstance(done, ReplyCompleted) and done.model == "vision"
    assert done.images_seen == [info["sha256"]] and done.images_ignored == []
    assert [f for f in frames if f["kind"] == "tokens"], "the reply was not streamed"

    (call,) = recorder.calls
    (received,) = call["images"]
    assert received.size == source.size and received.mode == "RGB"
    assert received.tobytes() == source.tobytes()  # the uploaded pixels, unchanged
    assert call["text"].count(IMAGE_TOKEN) == 1 and "What is in this picture?" in call["text"]
    assert done.prompt_tokens > IMAGE_TOKENS_PER_IMAGE  # the image's tokens were in the prompt


async def test_a_vision_model_sees_the_newest_images_up_to_its_limit(api: Api, demo_vlm_dir: Path) -> None:
    engine = await asyncio.to_thread(VisionEngine.from_pretrained, str(demo_vlm_dir), EngineConfig())
    recorder = RecordingProcessor(engine.processor)
    engine.processor = recorder
    shas = []
    for colour in ((10, 20, 30), (40, 50, 60), (70, 80, 90)):
        status, info = await upload(api, _png(Image.new("RGB", (20, 20), colour)))
        shas.append(info["sha256"])
    chat_id = (await api.new_chat(model="vision"))["chat_id"]
    async with running(api.nbus, engine, engine.tokenizer, "vision") as worker:
        worker.settings = msgspec.structs.replace(worker.settings, max_images=2)
        posted, _ = await _post_and_watch(
            api, chat_id, {"content": "compare", "images": shas, "params": {"max_new_tokens": 4}}
        )
    done = await wait_event(api.nbus, f"chat.{chat_id}.reply.{posted['reply_id']}.completed")
    assert done.images_seen == shas[1:] and done.images_ignored == shas[:1]
    colours = [img.getpixel((0, 0)) for img in recorder.calls[-1]["images"]]
    assert colours == [(40, 50, 60), (70, 80, 90)]


async def test_a_text_model_replies_to_an_image_message_and_says_it_ignored_it(
    api: Api,
    demo_model_dir: Path,
) -> None:
    engine = await asyncio.to_thread(
        ContinuousBatchingEngine.from_pretrained, str(demo_model_dir), EngineConfig()
    )
    status, info = await upload(api, _png(_picture()))
    chat_id = (await api.new_chat(model="demo"))["chat_id"]
    async with running(api.nbus, engine, engine.tokenizer, "demo"):
        posted, frames = await _post_and_watch(
            api,
            chat_id,
            {"content": "Describe it", "images": [info["sha256"]], "params": {"max_new_tokens": 8}},
        )
    done = await wait_event(api.nbus, f"chat.{chat_id}.reply.{posted['reply_id']}.completed")
    assert isinstance(done, ReplyCompleted) and done.finish_reason in ("stop", "length")
    assert done.images_seen == [] and done.images_ignored == [info["sha256"]]
    for _ in range(100):  # the read model shows it too, once the projector has the completion
        status, listed = await api.call("GET", f"/v1/chats/{chat_id}/messages")
        if listed["replies"] and listed["replies"][0]["status"] == "completed":
            break
        await asyncio.sleep(0.05)
    assert listed["replies"][0]["images_ignored"] == [info["sha256"]]
