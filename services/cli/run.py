"""`chatbus projector`, `api`, `worker` and `image-store`: run one service until SIGINT or SIGTERM."""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Annotated

import msgspec
import typer
from rich.markup import escape

import bus
from bus import Bus
from schemas.subjects import DEFAULT_INBOX_PREFIX, WORKER_INBOX_PREFIX
from services.cli.connect import connect
from services.cli.models import models_config
from services.cli.options import DEFAULT_NATS, ConfigOption, NatsOption
from services.cli.output import console
from services.cli.settings import CliSettings, data_dir, model_cache_dir, setup_logging, variable_of

ENGINE_DIED_EXIT = 3  # `chatbus worker`: the engine died (not a config error, 2): start the process again


async def _until_signal(run: Callable[[asyncio.Event], Awaitable[None]]) -> None:
    """Run a service until SIGINT/SIGTERM sets its stop event."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await run(stop)


def _report_drift(drift: list[bus.Change]) -> None:
    """Say where the declared streams differ from this version's catalogue (left as they are)."""
    for change in drift:
        logging.getLogger("chatbus").warning(
            "%s (differs from this version's catalogue; `chatbus admin init` applies it)", change
        )


def serve(
    url: str, name: str, run: Callable[[Bus, asyncio.Event], Awaitable[None]], *, worker: bool = False
) -> None:
    """Connect, declare the streams, and run one service until SIGINT/SIGTERM.

    A worker connects with its own inbox prefix, and may lack the rights to declare streams (the
    `worker` user of deploy/nats/accounts.conf): then it trusts that `chatbus admin init` did.
    """

    async def main(stop: asyncio.Event) -> None:
        nbus = await connect(url, name, WORKER_INBOX_PREFIX if worker else DEFAULT_INBOX_PREFIX)
        try:
            _report_drift(await bus.declare_all(nbus.js))
        except bus.BusError as exc:
            if not worker:
                raise
            logging.getLogger("chatbus").warning("cannot declare the streams (%s); assuming they exist", exc)
        try:
            await run(nbus, stop)
        finally:
            await nbus.close()

    asyncio.run(_until_signal(main))


def projector(
    nats: NatsOption = DEFAULT_NATS,
    db: Annotated[
        Path | None, typer.Option(envvar=variable_of("db_path"), help="DuckDB file it owns.")
    ] = None,
) -> None:
    """Run the projector: fold the log into DuckDB and answer read queries over NATS."""
    from services.projector import run_projector

    setup_logging()
    db_path = db or data_dir() / "readmodel.duckdb"
    linger = CliSettings.from_env().projector_linger_ms / 1000

    serve(nats, "projector", lambda nbus, stop: run_projector(nbus, db_path, stop, linger=linger))


def api(nats: NatsOption = DEFAULT_NATS) -> None:
    """Run the stateless HTTP API (REST, WebSocket, SSE); configure it with CHATBUS_API_* variables."""
    from services.api import ApiSettings, run_api

    setup_logging()
    settings = ApiSettings.from_env()

    serve(nats, "api", lambda nbus, stop: run_api(settings, nbus, stop))


def worker(
    model: Annotated[
        str | None,
        typer.Option(help="A model directory, a .gguf file or a built-in name (instead of the config's)."),
    ] = None,
    alias: Annotated[str | None, typer.Option(help="Name clients use for this model (token-safe).")] = None,
    config: ConfigOption = None,
    nats: NatsOption = DEFAULT_NATS,
    capacity: Annotated[int | None, typer.Option(help="Replies generated at once.")] = None,
    ack_wait: Annotated[
        float | None, typer.Option(help="Seconds before a silent worker's reply is redelivered.")
    ] = None,
    worker_id: Annotated[str | None, typer.Option(help="Stable id of this worker (default: random).")] = None,
    engine: Annotated[
        str | None, typer.Option(help="auto, transformers or llama.cpp (instead of the config's engine).")
    ] = None,
    dtype: Annotated[
        str | None, typer.Option(help="auto, float32, bfloat16 or float16 (transformers).")
    ] = None,
    quantization: Annotated[
        str | None, typer.Option(help="auto, none or int8 (transformers on a CPU).")
    ] = None,
) -> None:
    """Run an LLM worker: serve one model alias with the engine its settings pick (transformers, llama.cpp).

    The alias's entry in the model config gives its source, default sampling and sizing; --model
    serves any directory or .gguf file (converted once into the model cache) under --alias.
    """
    from schemas.ids import is_valid_id
    from schemas.settings_env import read_env
    from services.llm_worker import WorkerSettings, run_worker
    from services.llm_worker.lanes import EngineDied
    from services.llm_worker.main import prepare_model
    from services.llm_worker.model_config import DEFAULT_ALIAS, ModelConfigError, entry_for
    from services.llm_worker.source_errors import ModelSourceError

    setup_logging()
    models, path = models_config(config)
    set_by_env = read_env(WorkerSettings)  # which alias and model the environment names
    name = alias or set_by_env.get("alias") or DEFAULT_ALIAS
    entry = models.models.get(name)
    if entry is None and not (model or "model" in set_by_env):
        try:
            entry_for(models, name, path or "the default model config")
        except ModelConfigError as exc:
            console.print(f"[red]{escape(str(exc))}[/]: add it there, or give --model")
            raise typer.Exit(2) from exc
    settings = WorkerSettings.from_env(
        entry,
        model=model,
        alias=name,
        capacity=capacity,
        ack_wait=ack_wait,
        worker_id=worker_id,
        engine=engine,
        dtype=dtype,
        quantization=quantization,
    )
    if not is_valid_id(settings.alias):
        console.print(f"[red]Alias {settings.alias!r} is not token-safe[/]: use letters, digits, _ and -.")
        raise typer.Exit(2)
    cache = str(model_cache_dir(settings.model_cache))
    try:
        with console.status(f"preparing {settings.model} (a GGUF file is converted once) ..."):
            settings = prepare_model(msgspec.structs.replace(settings, model_cache=cache))
    except (ModelSourceError, ModelConfigError) as exc:
        console.print(f"[red]{escape(str(exc))}[/]")
        raise typer.Exit(2) from exc

    try:
        serve(nats, f"worker-{settings.alias}", lambda b, stop: run_worker(settings, b, stop), worker=True)
    except EngineDied as exc:  # its replies went back to the queue; a fresh process gets a fresh engine
        console.print(f"[red]{escape(str(exc))}[/]: exiting (3) for the supervisor to start a fresh worker")
        raise typer.Exit(ENGINE_DIED_EXIT) from None


def image_store(nats: NatsOption = DEFAULT_NATS) -> None:
    """Run the image store: normalise uploads, fetch image URLs safely, store images once by sha256."""
    from services.image_store import ImageStoreSettings, run_image_store

    setup_logging()
    settings = ImageStoreSettings.from_env()

    serve(nats, "image-store", lambda nbus, stop: run_image_store(settings, nbus, stop))
