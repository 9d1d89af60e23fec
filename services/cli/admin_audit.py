"""`chatbus admin audit chat`: a chat's history from the log, as a table or as JSON lines."""

from __future__ import annotations

import sys
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from bus import Bus
from services.cli.connect import run_admin
from services.cli.options import DEFAULT_NATS, NatsOption
from services.cli.output import console


def audit_chat(
    chat_id: Annotated[str, typer.Argument(help="The chat's id (as in /v1/chats/{chat_id}).")],
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object per event, every field.")] = False,
    nats: NatsOption = DEFAULT_NATS,
) -> None:
    """Every event of a chat from the log: when, who, what, and which model and parameters made each reply."""
    import msgspec

    from logtools.audit import read_audit
    from schemas.ids import is_valid_id

    if not is_valid_id(chat_id):
        console.print(f"[red]{chat_id!r} is not a chat id[/]: 1-64 characters of letters, digits, _ and -")
        raise typer.Exit(2)

    async def action(nbus: Bus) -> list[Any]:
        return await read_audit(nbus.js, chat_id)

    entries = run_admin(nats, action)
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
