"""`chatbus admin replay`: rebuild the read model from the log, whole or as it was, or check the live one."""

from __future__ import annotations

import tempfile
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape

import bus
from bus import Bus
from services.cli.connect import run_admin
from services.cli.options import DEFAULT_NATS, NatsOption, iso_time
from services.cli.output import console, progress_bar


def admin_replay(
    out: Annotated[
        Path | None, typer.Option(help="New DuckDB file to build (must not exist); with --check, optional.")
    ] = None,
    until_seq: Annotated[
        int | None, typer.Option(help="Stop at this CHAT sequence (IDENTITY: up to the same moment).")
    ] = None,
    until_time: Annotated[
        datetime | None,
        typer.Option(
            parser=iso_time,
            help="Stop at this time (ISO, UTC unless it says): the log as it was then.",
        ),
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
    from schemas.queries import Digest
    from services.projector import replay
    from services.projector.check import differences, file_digest
    from services.projector.replay_until import at_chat_seq, at_time, live_digest

    if out is not None and out.exists():
        console.print(f"[red]{out} exists[/]: replay builds a fresh file; choose another --out.")
        raise typer.Exit(2)
    if out is None and not check:
        console.print("[red]say where to build it with --out FILE[/] (or compare with the live one: --check)")
        raise typer.Exit(2)
    if check and (until_seq is not None or until_time is not None):
        console.print("[red]--check replays to where the live projector is[/]: drop --until-seq/--until-time")
        raise typer.Exit(2)
    target = out or Path(tempfile.mkdtemp(prefix="chatbus-check-")) / "rebuilt.duckdb"
    with progress_bar("replay") as on_progress:

        async def action(nbus: Bus) -> Any:
            live: Digest | None = None
            until: dict[str, int] | None = None
            if check:
                live = await live_digest(nbus)
                until = dict(live.checkpoints)
            elif until_seq is not None:
                until = await at_chat_seq(nbus, until_seq)
            elif until_time is not None:
                until = await at_time(nbus, until_time)
            summary = await replay(nbus, target, on_progress=on_progress, until=until)
            return summary, live

        try:
            summary, live = run_admin(nats, action)
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
    skipped = summary.rejected
    console.print(
        f"  skipped: {skipped.total} ({skipped.misfiled} not of their subject,"
        f" {skipped.unreadable} unreadable)"
    )
    for what in skipped.examples:
        console.print(f"    {escape(what)}")
    if live is None:
        return
    found = differences(live, file_digest(target, with_chats=bool(live.chats)))
    if not found:
        console.print(f"[green]check: the live read model equals the rebuild[/] (at {live.checkpoints})")
        return
    console.print(f"[red]check: {len(found)} difference(s)[/] between the live read model and the log:")
    for line in found[:50]:
        console.print(f"  {line}")
    raise typer.Exit(1)
