"""`chatbus admin import`: chats from a chatbus export or a ChatGPT export, appended as events."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape

from bus import Bus
from services.cli.connect import run_admin
from services.cli.options import DEFAULT_NATS, NatsOption
from services.cli.output import console


def admin_import(
    file: Annotated[
        Path, typer.Argument(help="A `chatbus admin export chats` JSON, or ChatGPT's conversations.json.")
    ],
    user: Annotated[
        str | None,
        typer.Option(help="The importing user: owns the imported chats and is every user named in them."),
    ] = None,
    keep_ids: Annotated[
        bool,
        typer.Option(help="chatbus exports: keep the chat ids (a chat id the log has already is refused)."),
    ] = False,
    nats: NatsOption = DEFAULT_NATS,
) -> None:
    """Import chats as events, as --user's: a chatbus export (lossless) or a ChatGPT export.

    The file may hold only the events of the chats it creates, each owned by --user (with --keep-ids,
    the chats must be --user's already and their ids unused). Identity events, events of other
    chats and images --user did not upload are refused, naming the place in the file; nothing is
    appended unless the whole file passes. Imported replies come with their text; no worker
    generates them again. Branches are kept.
    """
    import msgspec

    from identity.accounts import user_role
    from logtools.import_chatgpt import import_chatgpt
    from logtools.importer import ImportError_, import_chatbus

    if user is None:
        console.print("[red]--user is required[/]: the chatbus user who will own the imported chats")
        raise typer.Exit(2)
    owner: str = user
    try:
        document = json.loads(file.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        console.print(f"[red]cannot read {file}: {exc}[/]")
        raise typer.Exit(2) from exc

    async def action(nbus: Bus) -> Any:
        if await user_role(nbus.js, owner) is None:
            raise ImportError_(f"no user {owner}: create it with `chatbus admin user add {owner}`")
        # Which export it is shows in the document itself: ChatGPT's is a list, chatbus's an object.
        if isinstance(document, list):
            return await import_chatgpt(nbus, document, owner)
        return await import_chatbus(nbus, document, keep_ids=keep_ids, user=owner)

    try:
        report = run_admin(nats, action)
    except ImportError_ as exc:
        console.print(f"[red]import refused[/]: {escape(str(exc))}")
        raise typer.Exit(2) from exc
    except (KeyError, TypeError, AttributeError, msgspec.ValidationError) as exc:
        console.print(
            f"[red]{file} is not a chatbus chats export nor a ChatGPT conversations.json[/] ({exc!r})"
        )
        raise typer.Exit(2) from exc
    console.print(f"imported {len(report.chats)} chat(s), {report.events} events")
    for chat_id in report.chats:
        sys.stdout.write(chat_id + "\n")
