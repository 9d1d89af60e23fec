"""The model config as `chatbus worker` and `chatbus up` read it: the file given, the data dir's, or none."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer
from rich.markup import escape

from services.cli.output import console
from services.cli.settings import data_dir


def models_config(path: Path | None, root: Path | None = None) -> tuple[Any, Path | None]:
    """The model config: the file given, else `<data dir>/models.toml` if it exists, else the default one."""
    from services.llm_worker.model_config import ModelConfigError, default_config, load_config

    if path is None:
        path = (root or data_dir()) / "models.toml"
        if not path.exists():
            return default_config(), None
    try:
        return load_config(path), path
    except ModelConfigError as exc:
        console.print(f"[red]{escape(str(exc))}[/]")
        raise typer.Exit(2) from exc
