"""Test harness: one real nats-server per session (random port, JetStream in a temp dir).

Each test gets its own NATS account, hence its own streams, consumers and KV buckets,
on the shared server. Tests that kill the server start their own (see `own_server`).
"""

from __future__ import annotations

import asyncio
import itertools
import os
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer

import bus
from bus import Bus, Credentials, EmbeddedServer, ServerConfig

ACCOUNTS_AT_ONCE = 40  # accounts the server gets at start, and again each time they run out
_next_account = itertools.count()
ARTIFACTS = Path(os.environ.get("CHATBUS_TEST_ARTIFACTS", Path(__file__).parent.parent / "test-artifacts"))


@pytest.fixture(scope="session")
def nats_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedServer]:
    """The session's nats-server, with one account per test."""
    root = tmp_path_factory.mktemp("nats")
    server = EmbeddedServer(
        ServerConfig(
            store_dir=root / "jetstream",
            credentials=Credentials.generate(),
            accounts=[f"t{i}" for i in range(ACCOUNTS_AT_ONCE)],
        )
    )
    server.start()
    yield server
    server.stop()


@pytest.fixture
def nats_url(nats_server: EmbeddedServer) -> str:
    """A URL (with credentials) into a fresh account of the session server: isolated streams.

    Accounts are made as tests need them: when the server's run out, it reloads with more."""
    number = next(_next_account)
    if number >= len(nats_server.config.accounts):
        nats_server.add_accounts([f"t{number + i}" for i in range(ACCOUNTS_AT_ONCE)])
    return nats_server.url_for(f"t{number}")


@pytest.fixture
async def nbus(nats_url: str) -> AsyncIterator[Bus]:
    """A connected Bus in a fresh account with every stream and KV bucket declared."""
    b = await bus.connect(nats_url, name="test")
    await bus.declare_all(b.js)
    yield b
    await b.close()


@pytest.fixture(scope="session")
def artifacts_dir() -> Path:
    """Where tests leave screenshots and logs for people to look at."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    return ARTIFACTS


@pytest.fixture(scope="session")
def demo_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The offline demo text model (random weights, real tokenizer and chat template), built once."""
    from services.llm_worker.demo_model import make_demo_model

    out = tmp_path_factory.mktemp("models") / "demo-text"
    make_demo_model(out)
    return out


@pytest.fixture
def demo_engine(demo_model_dir: Path) -> Iterator[Any]:
    """A started continuous-batching engine on the demo model, this test's alone (stopped after it)."""
    from services.llm_worker.continuous_batching import ContinuousBatchingEngine
    from services.llm_worker.engine import EngineConfig

    engine = ContinuousBatchingEngine.from_pretrained(str(demo_model_dir), EngineConfig())
    engine.start()
    yield engine
    engine.stop()


@pytest.fixture(scope="session")
def demo_vlm_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The offline demo vision-language model (Llava: tiny CLIP tower + tiny Llama), built once."""
    from services.llm_worker.demo_vlm import make_demo_vlm

    out = tmp_path_factory.mktemp("models") / "demo-vision"
    make_demo_vlm(out)
    return out


@pytest.fixture
async def api(nbus: Bus, tmp_path: Path) -> AsyncIterator[Any]:
    """Users ann, bob and root (admin) with keys; the projector and the image store in-process; the app
    on aiohttp's test server."""
    from identity.accounts import add_user, issue_key
    from services.api import create_app
    from services.image_store import run_image_store
    from services.projector import run_projector
    from tests.apihelp import IMAGE_STORE_SETTINGS, SETTINGS, TEST_NAMES, Api, wait_for_projector
    from tests.hosts import resolver

    keys = {}
    for user, role in (("ann", "user"), ("bob", "user"), ("root", "admin")):
        await add_user(nbus.js, user, role=role)
        keys[user] = (await issue_key(nbus.js, user))[1]
    stop = asyncio.Event()
    projector = asyncio.create_task(run_projector(nbus, tmp_path / "read.duckdb", stop))
    await wait_for_projector(nbus, projector)
    store = asyncio.create_task(
        run_image_store(IMAGE_STORE_SETTINGS, nbus, stop, resolve=resolver(TEST_NAMES))
    )
    app = create_app(SETTINGS, nbus)
    async with TestClient(TestServer(app)) as client:
        yield Api(client=client, app=app, nbus=nbus, keys=keys)
    stop.set()
    await asyncio.gather(projector, store)


@pytest.fixture
async def stack(nbus: Bus, tmp_path: Path, demo_model_dir: Path) -> AsyncIterator[dict[str, str]]:
    """Projector, worker, image store and API in this process against the test's NATS account; keys of ann
    and bob, and the API's URL as `base`."""
    from identity.accounts import add_user, issue_key
    from services.api import ApiSettings
    from tests.stack import in_process_stack

    keys = {}
    for user in ("ann", "bob"):
        await add_user(nbus.js, user)
        keys[user] = (await issue_key(nbus.js, user))[1]
    settings = ApiSettings(default_model="demo")
    async with in_process_stack(nbus, tmp_path / "read.duckdb", demo_model_dir, settings) as (base, _):
        keys["base"] = base
        yield keys


@pytest.fixture
async def canary() -> AsyncIterator[Any]:
    """A loopback HTTP server that counts the connections it gets (see tests/hosts.py)."""
    from tests.hosts import Canary, serve_canary

    box: list[Canary] = []
    server = await asyncio.start_server(lambda r, w: serve_canary(box[0], r, w), "127.0.0.1", 0)
    box.append(Canary(port=server.sockets[0].getsockname()[1]))
    yield box[0]
    server.close()
    await server.wait_closed()


@pytest.fixture(scope="session")
def smollm2_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The built-in SmolLM2-135M-Instruct GGUF converted into a transformers model directory, once (~20 s)."""
    from services.llm_worker.sources import resolve_model

    return resolve_model("smollm2-135m-instruct", tmp_path_factory.mktemp("models"))


@pytest.fixture(scope="session")
def llama_engine() -> Iterator[Any]:
    """The llama.cpp engine on the built-in SmolLM2-135M-Instruct GGUF (Q4_1), started (8 slots, 1 thread);
    skipped, saying why, when llama-cpp-python is not installed."""
    pytest.importorskip("llama_cpp", reason="llama-cpp-python is not installed: `make llama` builds it")
    from services.llm_worker.llama_engine import LlamaConfig, LlamaCppEngine
    from services.llm_worker.sources import builtin_gguf

    config = LlamaConfig(slots=8, slot_context=1024, threads=1)
    engine = LlamaCppEngine.from_gguf(builtin_gguf("smollm2-135m-instruct"), config)
    engine.start()
    yield engine
    engine.stop()


@pytest.fixture
def own_server(tmp_path: Path) -> Iterator[EmbeddedServer]:
    """A private nats-server (JetStream in tmp_path) for a test that stops or kills it."""
    config = ServerConfig(
        store_dir=tmp_path / "own-js", credentials=Credentials.generate(), port=bus.free_port()
    )
    server = EmbeddedServer(config, log_path=tmp_path / "own-nats.log")
    server.start()
    yield server
    server.stop()


# ---------------------------------------------------------------- the browser tests' Chromium


@pytest.fixture(scope="session")
async def chromium_once() -> AsyncIterator[Any]:
    """Debian's Chromium under Playwright, launched once for all the browser tests (a launch is ~2 s)."""
    from tests.browserhelp import chromium

    async with chromium() as launched:
        yield launched


@pytest.fixture
async def browser(chromium_once: Any) -> AsyncIterator[Any]:
    """The session's Chromium for one test: whatever pages and contexts the test opened are closed after it,
    so no page of an earlier test lingers (or keeps reconnecting to a stopped stack) into the next."""
    yield chromium_once
    for context in chromium_once.contexts:
        await context.close()
