"""The CLI's own settings: the environment variables it reads and what they resolve to.

The services' settings are theirs (ApiSettings, WorkerSettings, ImageStoreSettings); these are the ones
only the `chatbus` command reads. A command-line option that a variable may set (`--nats`, `--db`,
`--config`, `--nats-port`) takes the variable's name from here, and typer reads it: the option wins.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated

import msgspec

from bus import Credentials
from schemas.settings_env import env, env_name, env_vars, load

DEFAULT_NATS = "nats://127.0.0.1:4222"


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


def with_local_credentials(url: str) -> str:
    """The default URL, plus the credentials `chatbus up` keeps in the data dir (same machine, no typing)."""
    creds_file = data_dir() / "nats.creds"
    if url != DEFAULT_NATS or not creds_file.exists():
        return url
    creds = Credentials.load_or_create(creds_file)
    return f"nats://{creds.user}:{creds.password}@127.0.0.1:{CliSettings.from_env().nats_port}"
