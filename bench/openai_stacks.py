"""The processes bench_openai.py runs: the model converted once, chatbus's stack, `transformers serve`
in its own venv; every child is remembered and stopped at the end."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from importlib.metadata import version
from pathlib import Path
from typing import Any

import bus
from bench.openai_measure import Threads, console
from services.cli import processes

ROOT = Path(__file__).resolve().parents[1]


MODEL_SOURCE = "smollm2-135m-instruct"


CHILDREN: list[processes.Child] = []  # everything we started: stopped (with its process group) at the end


def spawn(args: list[str], env: dict[str, str], log: Path, **kwargs: Any) -> processes.Child:
    """Start a child in its own session (Ctrl-C reaches only us; we stop it), logging to `log`."""
    child = processes.start(args, env=env, log=log, **kwargs)
    CHILDREN.append(child)
    return child


def base_env() -> dict[str, str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    env.pop("OMP_NUM_THREADS", None)  # each path sets its threads itself
    return env


def prepare_model(cache_dir: Path) -> tuple[Path, dict[str, Any]]:
    """The converted model directory (converted once into cache_dir) and the worker's engine defaults.

    In a child process: torch stays out of this (measuring) process.
    """
    code = (
        "import json, sys\n"
        "from services.llm_worker.sources import resolve_model\n"
        "from services.llm_worker.settings import WorkerSettings\n"
        "from services.llm_worker.engine_choice import CPU_KV_BLOCKS\n"
        "w = WorkerSettings(model='')\n"
        f"path = resolve_model({MODEL_SOURCE!r}, {str(cache_dir)!r})\n"
        "print(json.dumps({'path': str(path), 'kv_blocks': w.kv_blocks or CPU_KV_BLOCKS,"
        " 'kv_page_size': w.kv_page_size,"
        " 'max_batch_tokens': w.max_batch_tokens, 'threads': w.threads, 'capacity': w.capacity,"
        " 'small_step_threads': w.small_step_threads}))\n"
    )
    cache_dir.mkdir(parents=True, exist_ok=True)
    with console.status(f"converting {MODEL_SOURCE} into {cache_dir} (once, ~20 s) ..."):
        out = subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, env=base_env()
        )
    if out.returncode != 0:
        raise RuntimeError(f"cannot prepare {MODEL_SOURCE}:\n{out.stderr[-3000:]}")
    info = json.loads(out.stdout.strip().splitlines()[-1])
    return Path(info.pop("path")), info


def serve_requirements() -> list[str]:
    """What the serve venv installs: this venv's torch and transformers (with its serving extra), and kin."""
    torch_version = version("torch").split("+")[0]  # "2.13.0+cpu": the pinned 2.13.0 is the local CPU build
    pins = [f"torch=={torch_version}", f"transformers[serving]=={version('transformers')}"]
    pins += [f"{name}=={version(name)}" for name in ("tokenizers", "safetensors", "accelerate")]
    return pins


def ensure_serve_venv(venv: Path) -> Path:
    """Create (once) a venv holding `transformers serve` and its serving extras; return its executable."""
    exe = venv / "bin" / "transformers"
    marker = venv / "chatbus-bench-requirements.txt"
    wanted = "\n".join(serve_requirements()) + "\n"
    if exe.exists() and marker.exists() and marker.read_text() == wanted:
        return exe
    console.print(f"creating {venv} with {', '.join(serve_requirements())} (once, ~1 min) ...")
    if not (venv / "bin" / "python").exists():
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    log = venv / "chatbus-bench-install.log"
    with open(log, "wb") as out:
        pip = [str(venv / "bin" / "python"), "-m", "pip", "install", *serve_requirements()]
        if subprocess.run(pip, stdout=out, stderr=subprocess.STDOUT).returncode != 0:
            raise RuntimeError(f"installing transformers serve failed; see {log}")
    marker.write_text(wanted)
    return exe


@dataclass
class Chatbus:
    server: bus.EmbeddedServer
    nbus: bus.Bus
    base: str
    key: str
    services: list[subprocess.Popen[bytes]]  # projector, api
    workers: dict[Any, subprocess.Popen[bytes]]  # a key (the thread counts, the setting) -> its worker


def alias_for(threads: Threads) -> str:
    return f"smollm2-t{threads.big}" + (f"s{threads.small}" if threads.small else "")


async def start_chatbus(
    tmp: Path, model_dir: Path, cache_dir: Path, threads: list[Threads], capacity: int
) -> Chatbus:
    """A stack with one worker of `model_dir` per thread count (alias_for names it)."""
    workers = {
        t: WorkerSpec(
            alias_for(t),
            ["--model", str(model_dir), "--capacity", str(capacity)],
            {"CHATBUS_WORKER_THREADS": str(t.big), "CHATBUS_WORKER_SMALL_STEP_THREADS": str(t.small)},
        )
        for t in threads
    }
    return await start_stack(tmp, cache_dir, "bench_openai", workers)


@dataclass(frozen=True)
class WorkerSpec:
    """One worker of a bench stack: its alias, its `chatbus worker` options, its extra environment."""

    alias: str
    args: list[str]
    env: dict[str, str]


async def start_stack(
    tmp: Path, cache_dir: Path, name: str, specs: dict[Any, WorkerSpec], timeout: float = 300
) -> Chatbus:
    """The stack as `chatbus up` runs it (an embedded nats-server, the projector, the API) with a worker
    per spec; returns once the API answers and /v1/models lists every alias (`timeout` for the workers:
    a first start may convert a model)."""
    from identity.accounts import add_user, issue_key

    server = bus.EmbeddedServer(
        bus.ServerConfig(store_dir=tmp / "js", credentials=bus.Credentials.generate())
    )
    server.start()
    assert server.process is not None
    CHILDREN.append(server.process)
    url = server.url_for()
    nbus = await bus.connect(url, name=name)
    await bus.declare_all(nbus.js)
    await add_user(nbus.js, "bench", role="admin")
    _key_id, key = await issue_key(nbus.js, "bench", label=name)
    port = bus.free_port()
    env = {
        **base_env(),
        "CHATBUS_NATS_URL": url,
        "CHATBUS_API_HOST": "127.0.0.1",
        "CHATBUS_API_PORT": str(port),
        "CHATBUS_DATA_DIR": str(tmp),
        "CHATBUS_MODEL_CACHE": str(cache_dir),
        "CHATBUS_LOG_LEVEL": "WARNING",
    }
    cli = processes.chatbus()
    services = [
        spawn([*cli, "projector", "--db", str(tmp / "readmodel.duckdb")], env, tmp / "projector.log"),
        spawn([*cli, "api"], env, tmp / "api.log"),
    ]
    workers = {
        key_: spawn(
            [*cli, "worker", "--alias", spec.alias, *spec.args],
            {**env, **spec.env},
            tmp / f"worker-{spec.alias}.log",
        )
        for key_, spec in specs.items()
    }
    base = f"http://127.0.0.1:{port}"

    def all_served(body: Any) -> bool:
        return {spec.alias for spec in specs.values()} <= {m["id"] for m in body.get("data", [])}

    try:
        await processes.wait_http(f"{base}/readyz", timeout=180, watch=services)
        await processes.wait_http(
            f"{base}/v1/models",
            headers={"Authorization": f"Bearer {key}"},
            timeout=timeout,
            ready=all_served,
            watch=[*services, *workers.values()],
        )
    except processes.ChildExited as exc:
        raise RuntimeError(f"{exc}; see its log in {tmp}") from exc
    return Chatbus(server, nbus, base, key, services, workers)


def start_serve(
    exe: Path, model_dir: Path, sizing: dict[str, Any], threads: Threads, log: Path
) -> tuple[Any, str]:
    """`transformers serve --continuous-batching` on loopback, sized like the worker, `threads` threads."""
    port = bus.free_port()
    args = [
        str(exe),
        "serve",
        str(model_dir),  # force_model: a local directory is its own name; requests must name it so
        "--continuous-batching",
        "--cb-block-size",  # becomes ContinuousBatchingConfig.page_size (block_size is its deprecated name)
        str(sizing["kv_page_size"]),
        "--cb-num-blocks",
        str(sizing["kv_blocks"]),
        "--cb-max-batch-tokens",
        str(sizing["max_batch_tokens"]),
        "--attn-implementation",
        "sdpa",
        "--device",
        "cpu",
        "--dtype",
        "float32",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
    ]
    # transformers serve has no threads option: torch takes its intra-op threads from OMP_NUM_THREADS.
    env = {**base_env(), "OMP_NUM_THREADS": str(threads.big)}
    return spawn(args, env, log), f"http://127.0.0.1:{port}"


async def close_stack(stack: Chatbus | None) -> None:
    """Stop every child the bench started: the stack's services and workers first, its nats-server last
    (so they leave cleanly), then whatever is left (a server that failed before its stack was built)."""
    if stack is not None:
        with contextlib.suppress(Exception):
            await stack.nbus.close()
    processes.stop([c for c in CHILDREN if c is not (stack.server.process if stack else None)])
    if stack is not None:
        stack.server.stop()
    processes.stop(CHILDREN, timeout=5)


async def finish(stack: Chatbus | None, tmp: Path, keep: bool, closing: Iterable[Any] = ()) -> None:
    """A bench's end: close what it drove (`closing`: paths, children with `close()`), stop every child
    (close_stack), then keep the temporary directory (`--keep`: say where) or delete it."""
    for item in closing:
        with contextlib.suppress(Exception):
            await item.close()
    await close_stack(stack)
    if keep:
        console.print(f"logs and data kept in {tmp}")
    else:
        shutil.rmtree(tmp, ignore_errors=True)


def run_main(run: Callable[[], Awaitable[None]]) -> None:
    """A bench's main: `run()` until it ends, Ctrl-C or SIGTERM; what it started is stopped either way."""

    async def guarded() -> None:
        task = asyncio.current_task()
        assert task is not None
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, task.cancel)
        await run()

    try:
        asyncio.run(guarded())
    except (KeyboardInterrupt, asyncio.CancelledError):
        console.print("[yellow]interrupted; everything it started is stopped[/]")
        sys.exit(130)
    finally:
        processes.stop(CHILDREN, timeout=5)
