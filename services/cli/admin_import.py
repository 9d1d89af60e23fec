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
        str | None, typer.Option(help="Owner of the imported chats (required for ChatGPT exports).")
    ] = None,
    keep_ids: Annotated[
        bool, typer.Option(help="chatbus exports: keep chat/message ids (chats that exist are skipped).")
    ] = False,
    nats: NatsOption = DEFAULT_NATS,
) -> None:
    """Import chats as events: a chatbus export (lossless, with or without its ids) or a ChatGPT export.

    Imported replies come with their text; no worker generates them again. Branches are kept.
    """
    import msgspec

    from identity.accounts import user_role
    from logtools.importer import ImportError_, import_chatbus, import_chatgpt

    try:
        document = json.loads(file.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        console.print(f"[red]cannot read {file}: {exc}[/]")
        raise typer.Exit(2) from exc
    # Which export it is shows in the document itself: ChatGPT's is a list, chatbus's an object.
    if isinstance(document, list) and user is None:
        console.print("[red]a ChatGPT export needs --user[/]: the chatbus user who will own the chats")
        raise typer.Exit(2)
    if keep_ids and user is not None:
        console.print("[red]--keep-ids keeps everything as it was[/]: drop --user, or drop --keep-ids")
        raise typer.Exit(2)

    async def action(nbus: Bus) -> Any:
        if user is not None and await user_role(nbus.js, user) is None:
            raise ImportError_(f"no user {user}: create it with `chatbus admin user add {user}`")
        if isinstance(document, list):
            return await import_chatgpt(nbus, document, user or "")
        return await import_chatbus(nbus, document, keep_ids=keep_ids, user=user)

    try:
        report = run_admin(nats, action)
    except ImportError_ as exc:
        console.print(f"[red]{escape(str(exc))}[/]")
        raise typer.Exit(2) from exc
    except (KeyError, TypeError, AttributeError, msgspec.ValidationError) as exc:
        console.print(
            f"[red]{file} is not a chatbus chats export nor a ChatGPT conversations.json[/] ({exc!r})"
        )
        raise typer.Exit(2) from exc
    console.print(
        f"imported {len(report.chats)} chat(s), {report.events} events; {len(report.skipped)} existed already"
    )
    for chat_id in report.chats:
        sys.stdout.write(chat_id + "\n")
