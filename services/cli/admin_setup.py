"""`chatbus admin init` and `admin make-demo-model`: what a fresh installation needs once."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

import bus
from bus import Bus
from services.cli.connect import run_admin
from services.cli.options import DEFAULT_NATS, NatsOption
from services.cli.output import console
from services.cli.settings import model_cache_dir


def admin_init(
    nats: NatsOption = DEFAULT_NATS,
    replicas: Annotated[
        int | None,
        typer.Option(
            min=1,
            help="Replicas of every stream and bucket: 1 on one server, 3 on a cluster "
            "(default: each keeps its own; new ones get 1).",
        ),
    ] = None,
) -> None:
    """Create every stream, KV bucket and object store, and bring existing ones to this version's
    settings (subjects, limits, TTLs, history, replicas), listing each change.

    Safe to run again: nothing changes when all is as declared. Services only create what is missing
    and never change what exists, so this is the one command that changes a stream's settings.
    """

    async def action(nbus: Bus) -> list[bus.Change]:
        return await bus.apply_all(nbus.js, replicas=replicas)

    changes: list[bus.Change] = run_admin(nats, action, declare=False)
    if not changes:
        console.print("streams and buckets already as declared: nothing changed")
        return
    table = Table("stream or bucket", "setting", "was", "now")
    for change in changes:
        table.add_row(change.what, change.setting, change.old, change.new)
    console.print(table)
    console.print(f"{len(changes)} change(s) applied")


def admin_make_demo_model(
    out: Annotated[
        Path | None,
        typer.Option(
            help="Directory for both models (default CHATBUS_MODEL_CACHE, where workers look for them, else "
            "<data dir>/models): demo-text/, demo-vision/."
        ),
    ] = None,
    force: Annotated[bool, typer.Option(help="Rebuild even if they exist.")] = False,
) -> None:
    """Build the offline demo models: a text LM and a vision-language model (Llava).

    Random weights with a real tokenizer and chat template, so every code path (continuous batching,
    streaming, images) runs without a model hub. Their replies are noise: they are not assistants.
    """
    from services.llm_worker.settings import WorkerSettings  # torch comes with it: only for this command

    root = out or model_cache_dir(WorkerSettings.from_env().model_cache)
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
