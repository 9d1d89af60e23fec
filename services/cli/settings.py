"""The CLI's own settings: the environment variables it reads and what they resolve to."""

from __future__ import annotations

import logging
import os
from pathlib import Path

from bus import Credentials

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

DEFAULT_NATS = "nats://127.0.0.1:4222"


def setup_logging() -> None:
    """Log at CHATBUS_LOG_LEVEL (default INFO), one line per record."""
    logging.basicConfig(
        level=os.environ.get("CHATBUS_LOG_LEVEL", "INFO").upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )


def data_dir(value: Path | None = None) -> Path:
    """The data directory: `value`, else CHATBUS_DATA_DIR, else `.data` (absolute)."""
    return (value or Path(os.environ.get("CHATBUS_DATA_DIR", ".data"))).resolve()


def with_local_credentials(url: str) -> str:
    """The default URL, plus the credentials `chatbus up` keeps in the data dir (same machine, no typing)."""
    creds_file = data_dir() / "nats.creds"
    if url != DEFAULT_NATS or not creds_file.exists():
        return url
    creds = Credentials.load_or_create(creds_file)
    port = os.environ.get("CHATBUS_NATS_PORT", "4222")
    return f"nats://{creds.user}:{creds.password}@127.0.0.1:{port}"
