"""Each engine end to end, with its default CPU setting on the built-in SmolLM2-135M-Instruct: a chat through
the REST API and a completion through the official `openai` client, both answering "Paris".

transformers runs the GGUF file converted once (int8 dynamic quantisation, the CPU default without
llama.cpp); llama.cpp runs the file itself (its bfloat16 copy) and needs `make llama` (skipped, saying so,
where llama-cpp-python is not installed: `make test-all` builds it)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import openai
import pytest
from aiohttp.test_utils import TestServer

from bus import Bus
from identity.accounts import add_user, issue_key
from schemas.chat import ReplyCompleted
from services.api import ApiSettings, create_app
from services.llm_worker import WorkerSettings
from services.llm_worker.main import llama_available, run_worker
from services.llm_worker.model_config import DEFAULT_SOURCE
from services.projector import run_projector
from tests.stack import stop_services, wait_event, wait_models, wait_projector

QUESTION = "What is the capital of France?"
GREEDY = {"temperature": 0.0, "max_new_tokens": 24}
# What each engine's CPU default resolves to on the built-in model, as /v1/models shows it.
RUNS = {"transformers": "transformers float32 int8", "llama.cpp": "llama.cpp gguf bfloat16"}
ENGINES = [
    "transformers",
    pytest.param(
        "llama.cpp",
        marks=pytest.mark.skipif(not llama_available(), reason="llama-cpp-python is not installed"),
    ),
]


@pytest.fixture
async def served(
    request: pytest.FixtureRequest, nbus: Bus, tmp_path: Path, smollm2_dir: Path
) -> AsyncIterator[tuple[str, str, str, str]]:
    """The API on a real port, the projector and a worker of the built-in model with `request.param`'s
    engine (its default CPU setting); yields the base URL, ann's key, the alias and the engine."""
    engine = request.param
    alias = f"smollm2-{engine.replace('.', '')}"
    await add_user(nbus.js, "ann")
    key = (await issue_key(nbus.js, "ann"))[1]
    # The model cache the smollm2_dir fixture converted into: the worker finds the conversion made.
    settings = WorkerSettings(
        model=DEFAULT_SOURCE, alias=alias, capacity=4, engine=engine, model_cache=str(smollm2_dir.parent)
    )
    stop = asyncio.Event()
    tasks = [
        asyncio.create_task(run_projector(nbus, tmp_path / "read.duckdb", stop)),
        asyncio.create_task(run_worker(settings, nbus, stop)),
    ]
    server = TestServer(create_app(ApiSettings(default_model=alias), nbus))
    try:
        await wait_projector(nbus)
        await wait_models(nbus, alias, timeout=300)
        await server.start_server()
        yield str(server.make_url("")).rstrip("/"), key, alias, engine
    finally:
        await stop_services(server, stop, tasks)


@pytest.mark.parametrize("served", ENGINES, indirect=True)
async def test_a_chat_and_an_openai_completion_answer_paris(
    nbus: Bus, served: tuple[str, str, str, str]
) -> None:
    base, key, alias, engine = served
    headers = {"Authorization": f"Bearer {key}"}
    async with aiohttp.ClientSession(base, headers=headers) as http:
        async with http.get("/v1/models") as resp:
            (model,) = [m for m in (await resp.json())["data"] if m["id"] == alias]
            assert model["engines"] == [RUNS[engine]], model
        async with http.post("/v1/chats", json={"title": "capitals", "model": alias}) as resp:
            assert resp.status == 201, await resp.text()
            chat_id = (await resp.json())["chat_id"]
        body = {"content": QUESTION, "params": GREEDY}
        async with http.post(f"/v1/chats/{chat_id}/messages", json=body) as resp:
            assert resp.status == 202, await resp.text()
            reply_id = (await resp.json())["reply_id"]
    end = await wait_event(nbus, f"chat.{chat_id}.reply.{reply_id}.completed", timeout=120)
    assert isinstance(end, ReplyCompleted) and end.model == alias
    assert "Paris" in end.text, end.text

    client = openai.AsyncOpenAI(base_url=f"{base}/v1", api_key=key, max_retries=0)
    stream = await client.chat.completions.create(
        model=alias,
        messages=[{"role": "user", "content": QUESTION}],
        temperature=0,
        max_tokens=24,
        stream=True,
        stream_options={"include_usage": True},
    )
    parts, usage = [], None
    async for chunk in stream:
        if chunk.choices and chunk.choices[0].delta.content:
            parts.append(chunk.choices[0].delta.content)
        usage = chunk.usage or usage
    assert "Paris" in "".join(parts), parts
    assert usage is not None and 0 < usage.completion_tokens <= 24
    await client.close()
