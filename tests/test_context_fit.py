"""Unbounded work per reply (issue 13 item 5): a chat longer than the model's window keeps getting
replies (its oldest turns dropped and recorded), and `max_new_tokens` is capped per model."""

from __future__ import annotations

import asyncio
import contextlib
import json
import shutil
from collections.abc import AsyncIterator
from pathlib import Path

import msgspec
import pytest

import bus
import schemas
from bus import Bus
from schemas.chat import ChatCreated, MessagePosted, ReplyCompleted, ReplyRequested
from schemas.chat_state import context_ids, fold
from schemas.ids import new_id
from schemas.presence import WorkerPresence
from schemas.sampling import SamplingParams
from schemas.streams import WORKERS_KV
from schemas.subjects import presence_key
from services.llm_worker import WorkerSettings
from services.llm_worker.continuous_batching import ContinuousBatchingEngine
from services.llm_worker.engine import EngineConfig
from services.llm_worker.model_config import ModelConfigError, load_config
from services.llm_worker.worker import Worker
from tests.apihelp import Api, chat_events, is_error

WINDOW = 256  # max_position_embeddings of the small demo model below
CAP = 24


@pytest.fixture(scope="module")
def small_window_model(demo_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The demo model with a window of WINDOW tokens."""
    out = tmp_path_factory.mktemp("models") / "demo-small-window"
    shutil.copytree(demo_model_dir, out)
    config = json.loads((out / "config.json").read_text())
    config["max_position_embeddings"] = WINDOW
    (out / "config.json").write_text(json.dumps(config))
    return out


@pytest.fixture
async def worker(nbus: Bus, small_window_model: Path) -> AsyncIterator[Worker]:
    engine = await asyncio.to_thread(
        ContinuousBatchingEngine.from_pretrained, str(small_window_model), EngineConfig()
    )
    assert engine.max_context == WINDOW
    settings = WorkerSettings(
        model=str(small_window_model), alias="demo", max_new_tokens_cap=CAP, ack_wait=5.0
    )
    w = Worker(settings, nbus, engine, engine.tokenizer)
    stop = asyncio.Event()
    task = asyncio.create_task(w.run(stop))
    yield w
    stop.set()
    with contextlib.suppress(asyncio.CancelledError):
        await asyncio.wait_for(task, 20)


def turn(chat_id: str, i: int) -> tuple[MessagePosted, ReplyRequested, ReplyCompleted]:
    """A user message (~25 tokens) and its completed reply (~25 tokens)."""
    now = schemas.now()
    message = MessagePosted(
        event_id=new_id("e"),
        chat_id=chat_id,
        at=now,
        message_id=new_id("m"),
        author_id="ann",
        content=f"turn {i}: " + "the quick brown fox jumps over the lazy dog " * 2,
    )
    reply_id = new_id("r")
    requested = ReplyRequested(
        event_id=new_id("e"),
        chat_id=chat_id,
        at=now,
        reply_id=reply_id,
        message_id=message.message_id,
        model="demo",
        params=SamplingParams(),
        context=[],
        requested_by="ann",
        imported=True,  # answered below: no worker takes it
    )
    completed = ReplyCompleted(
        event_id=new_id("e"),
        chat_id=chat_id,
        at=now,
        reply_id=reply_id,
        attempt=1,
        worker_id="w0",
        model="demo",
        text=f"answer {i}: " + "a lazy dog sleeps under the brown tree " * 2,
        prompt_tokens=1,
        completion_tokens=1,
        finish_reason="stop",
    )
    return message, requested, completed


async def ask(nbus: Bus, chat_id: str, max_new_tokens: int) -> tuple[ReplyRequested, list[str]]:
    """Post one more message and request a reply that sees the whole active path: the request and the
    ids of its context."""
    message, _, _ = turn(chat_id, 99)
    await bus.append_event(nbus.js, message)
    events = [(i, e) for i, e in enumerate(await chat_events(nbus, chat_id), 1)]
    state = fold(chat_id, events)  # type: ignore[arg-type]
    context = context_ids(state, message.message_id)
    request = ReplyRequested(
        event_id=new_id("e"),
        chat_id=chat_id,
        at=schemas.now(),
        reply_id=new_id("r"),
        message_id=message.message_id,
        model="demo",
        params=SamplingParams(max_new_tokens=max_new_tokens, ignore_eos=True),
        context=context,
        requested_by="ann",
    )
    await bus.append_event(nbus.js, request)
    return request, context


async def reply_end(nbus: Bus, chat_id: str, reply_id: str) -> schemas.Event:
    """The reply's end event (completed or failed), once there."""
    for _ in range(600):
        last = await bus.last_msg(nbus.js, "CHAT", f"chat.{chat_id}.reply.{reply_id}.>")
        if last is not None and last.subject.rsplit(".", 1)[-1] in ("completed", "failed"):
            return schemas.decode_event(last.data)
        await asyncio.sleep(0.1)
    raise TimeoutError(f"reply {reply_id} never ended")


async def test_a_chat_longer_than_the_window_is_still_answered_and_says_what_it_left_out(
    nbus: Bus, worker: Worker
) -> None:
    chat_id = new_id("c")
    created = ChatCreated(
        event_id=new_id("e"),
        chat_id=chat_id,
        at=schemas.now(),
        owner_id="ann",
        title="long",
        model="demo",
        system_prompt="You are terse.",
    )
    await bus.append_event(nbus.js, created)
    for i in range(12):  # ~600 tokens: more than twice the window
        await bus.append_events(nbus.js, list(turn(chat_id, i)))
    for _ in range(2):  # and the next reply in that chat (after this one) too
        request, context = await ask(nbus, chat_id, max_new_tokens=100)
        end = await reply_end(nbus, chat_id, request.reply_id)
        assert isinstance(end, ReplyCompleted), end
        dropped = end.context_dropped
        assert dropped and dropped == context[: len(dropped)]  # the oldest turns, in order
        assert len(dropped) < len(context) - 1 and context[-1] not in dropped  # the newest stays
        assert context[len(dropped)].startswith("m")  # what is kept starts with a user message
        assert end.prompt_tokens + end.completion_tokens <= WINDOW
        assert end.completion_tokens == CAP  # 100 asked, clamped to the model's cap
    presence = await bus.KV(nbus.js, WORKERS_KV.bucket).get(presence_key("demo", worker.settings.worker_id))
    assert presence is not None
    announced = msgspec.json.decode(presence.value, type=WorkerPresence)
    assert announced.max_new_tokens == CAP and announced.defaults.max_new_tokens <= CAP


async def test_an_old_reader_skips_context_dropped() -> None:
    class OldCompleted(msgspec.Struct, kw_only=True):  # a reader from before the field
        reply_id: str
        text: str

    _, _, completed = turn("c1", 1)
    event = msgspec.structs.replace(completed, context_dropped=["m1", "r1"])
    old = msgspec.json.decode(schemas.encode(event), type=OldCompleted)
    assert old.reply_id == completed.reply_id


# ---------------------------------------------------------------- the cap, at the API


async def serve_capped(nbus: Bus, cap: int) -> None:
    now = schemas.now()
    presence = WorkerPresence(
        worker_id="w1",
        alias="demo",
        model="/models/demo",
        host="gpu1",
        active=0,
        capacity=4,
        started_at=now,
        heartbeat_at=now,
        defaults=SamplingParams(max_new_tokens=min(256, cap)),
        max_new_tokens=cap,
    )
    await bus.KV(nbus.js, WORKERS_KV.bucket).put(presence_key("demo", "w1"), schemas.encode(presence))


async def test_max_new_tokens_over_the_models_cap_is_a_400_and_appends_nothing(api: Api) -> None:
    await serve_capped(api.nbus, 64)
    chat = await api.new_chat("ann", model="demo")
    before = await chat_events(api.nbus, chat["chat_id"])
    path = f"/v1/chats/{chat['chat_id']}/messages"
    status, body = await api.call(
        "POST", path, "ann", json={"content": "hi", "params": {"max_new_tokens": 65}}
    )
    assert (
        status == 400 and is_error(body) and "max_new_tokens" in body["message"] and "64" in body["message"]
    )
    assert await chat_events(api.nbus, chat["chat_id"]) == before
    status, body = await api.call(
        "POST", path, "ann", json={"content": "hi", "params": {"max_new_tokens": 64}}
    )
    assert status == 202, body


@pytest.mark.parametrize("field", ["max_tokens", "max_completion_tokens"])
async def test_openai_max_tokens_over_the_cap_is_an_openai_400(api: Api, field: str) -> None:
    await serve_capped(api.nbus, 64)
    chats_before = (await api.nbus.js.stream_info("CHAT")).state.last_seq
    body = {"model": "demo", "messages": [{"role": "user", "content": "hi"}], field: 65}
    status, answer = await api.call("POST", "/v1/chat/completions", "ann", json=body)
    assert status == 400, answer
    error = answer["error"]
    assert error["type"] == "invalid_request_error" and error["param"] == field and "64" in error["message"]
    assert (await api.nbus.js.stream_info("CHAT")).state.last_seq == chats_before  # nothing appended


def test_the_cap_is_a_per_model_setting(tmp_path: Path) -> None:
    path = tmp_path / "models.toml"
    path.write_text('[models.m]\nsource = "/models/m"\nmax_new_tokens_cap = 512\n')
    entry = load_config(path).models["m"]
    assert WorkerSettings.from_env(entry, alias="m").max_new_tokens_cap == 512
    assert WorkerSettings.from_env(None).max_new_tokens_cap == 4096  # the default: the schema's limit
    path.write_text('[models.m]\nsource = "/models/m"\nmax_new_tokens_cap = 100\n[models.m.sampling]\n')
    with pytest.raises(ModelConfigError, match="max_new_tokens_cap"):
        load_config(path)  # the default max_tokens (256) would be refused by its own cap
    path.write_text('[models.m]\nsource = "/models/m"\nmax_new_tokens_cap = 0\n')
    with pytest.raises(ModelConfigError, match="models.m.max_new_tokens_cap"):
        load_config(path)
