"""Options several commands share: where NATS is, the model config, and times given as ISO text."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Annotated

import typer

import schemas
from services.cli.settings import DEFAULT_NATS, variable_of

__all__ = ["DEFAULT_NATS", "ConfigOption", "NatsOption", "iso_time"]

NatsOption = Annotated[
    str, typer.Option("--nats", envvar=variable_of("nats_url"), help="NATS URL (with credentials).")
]

ConfigOption = Annotated[
    Path | None,
    typer.Option(
        "--config",
        envvar=variable_of("models_config"),
        help="Model config (TOML): per alias the source, default sampling and engine sizing.",
    ),
]


def iso_time(value: str) -> datetime:
    """An ISO date or time as an aware datetime (UTC unless it says); typer's parser for such options."""
    try:
        return schemas.parse_time(value)
    except ValueError:
        raise typer.BadParameter(
            f"{value!r} is not an ISO date or time (e.g. 2026-11-01 or 2026-11-01T12:00)"
        ) from None
