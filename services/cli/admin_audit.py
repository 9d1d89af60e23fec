"""`chatbus admin audit chat`: a chat's history from the log, as a table or as JSON lines.

The table names each message's and reply's speaker, and under each requested reply lists what its
model was given (the seat view: system prompt, "Name: ..." user turns, its own turns as assistant)."""

from __future__ import annotations

import sys
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table
from rich.text import Text

from bus import Bus
from services.cli.connect import run_admin
from services.cli.options import DEFAULT_NATS, NatsOption
from services.cli.output import console

_SEEN_PREVIEW = 100  # characters of each seen turn the table shows (--json has them whole)


def audit_chat(
    chat_id: Annotated[str, typer.Argument(help="The chat's id (as in /v1/chats/{chat_id}).")],
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object per event, every field.")] = False,
    nats: NatsOption = DEFAULT_NATS,
) -> None:
    """Every event of a chat from the log: when, who, what, which model and parameters made each reply,
    who spoke each message and reply, what each reply's model saw, and the moderator's events."""
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
    for column in ("seq", "when (UTC)", "who", "speaker", "what", "model / params"):
        table.add_column(column, overflow="fold")
    for e in entries:
        params = ", ".join(f"{k}={v}" for k, v in e.params.items())
        table.add_row(
            str(e.seq),
            e.at.strftime("%Y-%m-%d %H:%M:%S"),
            Text(e.who),
            Text(e.speaker),
            _what(e),
            Text(" ".join(x for x in (e.model, params) if x)),
        )
    Console().print(table)


def _what(entry: Any) -> Text:
    """The event's line, then (for a requested reply) each turn its model was given, shortened."""
    text = Text(entry.what)  # plain text: chat content is never read as rich markup
    if entry.seen:
        text.append("\nsaw:", style="dim")
    for turn in entry.seen:
        content = " ".join(turn.content.split())
        content = content if len(content) <= _SEEN_PREVIEW else content[: _SEEN_PREVIEW - 1] + "…"
        images = f" +{len(turn.images)} image(s)" if turn.images else ""
        text.append(f"\n  {turn.role}: ", style="bold")
        text.append(content + images)
    return text
