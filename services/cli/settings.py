"""The CLI's own settings: the environment variables it reads and what they resolve to.

The services' settings are theirs (ApiSettings, WorkerSettings, ImageStoreSettings); these are the ones
only the `chatbus` command reads. A command-line option that a variable may set (`--nats`, `--db`,
`--config`, `--nats-port`) takes the variable's name from here, and typer reads it: the option wins.
"""

from __future__ import annotations

import logging
import os
import ssl
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated
from urllib.parse import quote

import msgspec

from bus import Credentials
from schemas.settings_env import env, env_name, env_vars, load

DEFAULT_NATS = "nats://127.0.0.1:4222"
DEFAULT_API_URL = "http://127.0.0.1:8080"


class CliSettings(msgspec.Struct, frozen=True, kw_only=True):
    """What the `chatbus` command itself is told; see ENV_VARS."""

    nats_url: Annotated[
        str,
        env(
            "CHATBUS_NATS_URL",
            "NATS server URL(s), comma-separated, credentials allowed in the URL "
            "(default nats://127.0.0.1:4222; `chatbus up` sets it for its children).",
        ),
    ] = DEFAULT_NATS
    nats_ca: Annotated[
        str,
        env(
            "CHATBUS_NATS_CA",
            "CA certificate (PEM) that the NATS server's TLS certificate is checked against, for servers "
            "that require TLS (a cluster beyond loopback; default: the system's CAs for tls:// URLs).",
        ),
    ] = ""
    nats_cert: Annotated[
        str,
        env(
            "CHATBUS_NATS_CERT",
            "Client certificate (PEM) to present to NATS, when its server verifies clients.",
        ),
    ] = ""
    nats_key: Annotated[str, env("CHATBUS_NATS_KEY", "Private key (PEM) of CHATBUS_NATS_CERT.")] = ""
    data_dir: Annotated[
        str,
        env(
            "CHATBUS_DATA_DIR",
            "Where `chatbus up` keeps JetStream data, the read model and credentials (default `.data`).",
        ),
    ] = ".data"
    db_path: Annotated[
        str, env("CHATBUS_DB_PATH", "The projector's DuckDB file (default `<data dir>/readmodel.duckdb`).")
    ] = ""
    projector_linger_ms: Annotated[
        float,
        env(
            "CHATBUS_PROJECTOR_LINGER_MS",
            "Milliseconds the projector lets a small batch of new events wait for more before it applies "
            "them in one transaction (default 200: a new chat's first events are folded after the reply's "
            "prefill, not during it; 0: each piece as it arrives). A read with `min_seq` never waits for it.",
            ge=0,
            le=5000,
        ),
    ] = 200.0
    nats_port: Annotated[
        int,
        env(
            "CHATBUS_NATS_PORT",
            "Port of the embedded nats-server that `chatbus up` starts (default 4222).",
            ge=0,
            le=65535,
        ),
    ] = 4222
    log_level: Annotated[
        str,
        env(
            "CHATBUS_LOG_LEVEL",
            "Python log level of every service (default INFO).",
            pattern=r"^(?i:critical|fatal|error|warning|warn|info|debug|notset)$",
        ),
    ] = "INFO"
    models_config: Annotated[
        str,
        env(
            "CHATBUS_MODELS_CONFIG",
            "The model config (TOML, one `[models.<alias>]` table each) that `chatbus up` and "
            "`chatbus worker` read (default: `<data dir>/models.toml` if it exists, else "
            "SmolLM2-135M-Instruct and the demo vision model).",
        ),
    ] = ""
    api_url: Annotated[
        str,
        env(
            "CHATBUS_URL",
            "The API that `chatbus chat` (the terminal client) talks to (default http://127.0.0.1:8080).",
        ),
    ] = DEFAULT_API_URL
    api_key: Annotated[
        str, env("CHATBUS_API_KEY", "The API key `chatbus chat` sends (its --key; none by default).")
    ] = ""

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> CliSettings:
        """Settings from CHATBUS_* environment variables, defaults for the rest."""
        return load(cls, environ)


ENV_VARS = env_vars(CliSettings)


def variable_of(field: str) -> str:
    """The environment variable of a CliSettings field: what typer reads for the option it backs."""
    return env_name(CliSettings, field)


def setup_logging() -> None:
    """Log at CHATBUS_LOG_LEVEL (default INFO), one line per record."""
    logging.basicConfig(
        level=CliSettings.from_env().log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )


def data_dir(value: Path | None = None) -> Path:
    """The data directory: `value`, else CHATBUS_DATA_DIR, else `.data` (absolute)."""
    return (value or Path(CliSettings.from_env().data_dir)).resolve()


def model_cache_dir(value: str = "") -> Path:
    """Where GGUF files are converted to and demo models built: `value` (CHATBUS_MODEL_CACHE), else
    `<data dir>/models`."""
    return Path(value).resolve() if value else data_dir() / "models"


LOCAL_CONTEXT = "nats-context.json"  # in the data dir: where `chatbus up`'s NATS listens, and who may log in


def write_local_context(root: Path, port: int, creds: Credentials) -> Path:
    """Write `chatbus up`'s NATS URL and credentials as a nats CLI context (ADR-21 JSON, mode 0600).

    Admin commands on this machine read it to find the server on any port; `nats --context` reads it
    too once copied to ~/.config/nats/context/.
    """
    path = root / LOCAL_CONTEXT
    document = {
        "description": "chatbus up's embedded nats-server",
        "url": f"nats://127.0.0.1:{port}",
        "user": creds.user,
        "password": creds.password,
    }
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(msgspec.json.format(msgspec.json.encode(document)) + b"\n")
    return path


def nats_tls() -> ssl.SSLContext | None:
    """The TLS context CHATBUS_NATS_CA / _CERT / _KEY describe (None when none is set)."""
    cli = CliSettings.from_env()
    if not (cli.nats_ca or cli.nats_cert):
        return None
    context = ssl.create_default_context(cafile=cli.nats_ca or None)
    if cli.nats_cert:
        context.load_cert_chain(cli.nats_cert, cli.nats_key or None)
    return context


def with_local_credentials(url: str) -> str:
    """The default URL becomes the URL and credentials `chatbus up` wrote in the data dir (same machine,
    whichever port it listens on); any other URL is left as given."""
    if url != DEFAULT_NATS:
        return url
    context = data_dir() / LOCAL_CONTEXT
    if context.exists():
        try:
            local = msgspec.json.decode(context.read_bytes(), type=_LocalContext)
        except msgspec.DecodeError:
            return url
        login = f"{quote(local.user, safe='')}:{quote(local.password, safe='')}"
        return local.url.replace("nats://", f"nats://{login}@", 1)
    creds_file = data_dir() / "nats.creds"  # a data dir written before the context file existed
    if not creds_file.exists():
        return url
    creds = Credentials.load_or_create(creds_file)
    return f"nats://{creds.user}:{creds.password}@127.0.0.1:{CliSettings.from_env().nats_port}"


class _LocalContext(msgspec.Struct, frozen=True):
    url: str
    user: str
    password: str
