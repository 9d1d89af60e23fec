"""`chatbus admin bot add | list | show | export | import | delete`: bots (personas) from the command line.

The commands append the same events as the API (stream BOTS) and read bots from the log, as an
administrator sees them: every bot, whoever owns it. A bot made here belongs to `--owner`, by default
`admin` (the account `chatbus up` creates).
"""

from __future__ import annotations

import enum
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import msgspec
import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

import schemas
from bus import Bus
from schemas.api_bots import (
    BotFile,
    BotFileError,
    file_of,
    login_names,
    parse_bot_file,
    shared_names,
    sharing_problem,
    spec_of,
)
from schemas.bot import BotSpec, Visibility
from services.cli.connect import run_admin
from services.cli.options import DEFAULT_NATS, NatsOption
from services.cli.output import console

if TYPE_CHECKING:
    from logtools.bots import Bot

DEFAULT_OWNER = "admin"
ADMIN = "admin-cli"  # who the events say changed a bot


class VisibilityChoice(enum.StrEnum):
    """Who may use a bot (the values of schemas.bot.Visibility)."""

    private = "private"
    shared = "shared"
    public = "public"


OwnerOpt = Annotated[
    str,
    typer.Option(
        "--owner", help=f"The user who owns the bot(s) (default {DEFAULT_OWNER}, made by `chatbus up`)."
    ),
]
BotIdArg = Annotated[str, typer.Argument(help="The bot's id (`chatbus admin bot list` shows them).")]


def _fail(message: str, code: int = 1) -> typer.Exit:
    console.print(f"[red]{escape(message)}[/]", soft_wrap=True)
    return typer.Exit(code)


class NoUser(Exception):
    """A user name (owner, or one shared with) without an account."""


async def _check_users(nbus: Bus, names: list[str]) -> None:
    """Raise NoUser for the first of these user names without an account."""
    from identity.accounts import is_valid_user_id, user_role

    for name in names:
        if not is_valid_user_id(name) or await user_role(nbus.js, name) is None:
            raise NoUser(name)


def _no_user(exc: NoUser) -> typer.Exit:
    name = exc.args[0]
    return _fail(
        f"no user {name}: create it with `chatbus admin user add {name}`, or name another"
        " (--owner, or the users the bot is shared with); nothing was created"
    )


def bot_add(
    name: Annotated[str, typer.Option(help="What the bot is called in chats (others @mention it by it).")],
    model: Annotated[
        str, typer.Option(help="The model alias that answers for it (any alias; a worker serves it).")
    ],
    prompt_file: Annotated[
        Path | None,
        typer.Option(help="A text file with its system prompt (its personality).", dir_okay=False),
    ] = None,
    temperature: Annotated[
        float | None, typer.Option(help="Sampling temperature, 0 (greedy) to 5 (default 0.7).")
    ] = None,
    max_tokens: Annotated[int | None, typer.Option(help="Most tokens in one turn (default 256).")] = None,
    delay: Annotated[float, typer.Option(help="Seconds it waits before it speaks.")] = 0.0,
    history: Annotated[int, typer.Option(help="Earlier turns it sees (0: all that fit).")] = 0,
    description: Annotated[str, typer.Option(help="One line for the bot store.")] = "",
    visibility: Annotated[
        VisibilityChoice, typer.Option(help="private (its owner), shared (--share-with), public (the store).")
    ] = VisibilityChoice.private,
    public: Annotated[bool, typer.Option("--public", help="The same as --visibility public.")] = False,
    share_with: Annotated[
        list[str] | None,
        typer.Option("--share-with", help="A user who may use it (repeat; with --visibility shared)."),
    ] = None,
    owner: OwnerOpt = DEFAULT_OWNER,
    nats: NatsOption = DEFAULT_NATS,
) -> None:
    """Create a bot: a model alias with a personality, sampling, history length and delay; prints its id."""
    from logtools.bots import create_bots, created_event

    try:
        prompt = prompt_file.read_text(encoding="utf-8").strip() if prompt_file is not None else ""
    except OSError as exc:
        raise _fail(f"cannot read --prompt-file {prompt_file}: {exc.strerror}", 2) from exc
    chosen: Visibility = "public" if public else visibility.value  # type: ignore[assignment]
    shared = login_names(share_with or [])
    problem = sharing_problem(chosen, shared)
    if problem is not None:
        raise _fail(f"{problem}: with --share-with, pass --visibility shared", 2)
    raw = {
        "name": name,
        "model": model,
        "system_prompt": prompt,
        "params": {
            key: value
            for key, value in (("temperature", temperature), ("max_new_tokens", max_tokens))
            if value is not None
        },
        "history": history,
        "delay_s": delay,
        "description": description,
    }
    try:
        spec = msgspec.convert(raw, BotSpec)
    except msgspec.ValidationError as exc:
        raise _fail(f"{exc} (see `chatbus admin bot add --help`)", 2) from exc

    async def action(nbus: Bus) -> str:
        await _check_users(nbus, [owner, *shared])
        (bot,) = await create_bots(nbus.js, [created_event(owner, spec, chosen, shared)])
        return bot.bot_id

    try:
        bot_id: str = run_admin(nats, action)
    except NoUser as exc:
        raise _no_user(exc) from exc
    typer.echo(bot_id)
    console.print(
        f"bot {escape(spec.name)} created for {owner} ({chosen}); see it with `chatbus admin bot list`"
    )


async def _all_bots(nbus: Bus) -> list[Bot]:
    from logtools.bots import read_bots

    bots = [bot for bot in (await read_bots(nbus.js)).values() if not bot.deleted]
    return sorted(bots, key=lambda b: (b.spec.name.casefold(), b.created_at))


def bot_list(
    owner: Annotated[str | None, typer.Option(help="Only this user's bots.")] = None,
    nats: NatsOption = DEFAULT_NATS,
) -> None:
    """List every bot as a table: name, model, owner, visibility, history, delay, description, id."""
    bots: list[Bot] = run_admin(nats, _all_bots)
    bots = [bot for bot in bots if owner is None or bot.owner_id == owner]
    if not bots:
        console.print("no bots yet: add one with `chatbus admin bot add --name NAME --model ALIAS`")
        return
    table = Table("name", "model", "owner", "visibility", "history", "delay s", "description")
    table.add_column("bot id", no_wrap=True, min_width=22)
    for bot in bots:
        seen = "all" if bot.spec.history == 0 else str(bot.spec.history)
        visibility = bot.visibility + (
            f" ({', '.join(bot.shared_with)})" if bot.visibility == "shared" else ""
        )
        table.add_row(
            escape(bot.spec.name),
            bot.spec.model,
            bot.owner_id,
            visibility,
            seen,
            f"{bot.spec.delay_s:g}",
            escape(bot.spec.description),
            bot.bot_id,
        )
    Console().print(table)


async def _one(nbus: Bus, bot_id: str) -> Bot | None:
    from logtools.bots import read_bot

    bot = await read_bot(nbus.js, bot_id)
    return None if bot is None or bot.deleted else bot


def _no_bot(bot_id: str) -> typer.Exit:
    return _fail(
        f"no bot {bot_id} (deleted, or never made): `chatbus admin bot list` shows the bots there are"
    )


def bot_show(bot_id: BotIdArg, nats: NatsOption = DEFAULT_NATS) -> None:
    """Print one bot as JSON, as the API shows it to an administrator."""
    from logtools.bots import bot_body

    bot: Bot | None = run_admin(nats, lambda nbus: _one(nbus, bot_id))
    if bot is None:
        raise _no_bot(bot_id)
    typer.echo(msgspec.json.format(schemas.encode(bot_body(bot, ADMIN, admin=True)), indent=2).decode())


def bot_export(
    bot_id: Annotated[str | None, typer.Argument(help="The bot to export (or --all).")] = None,
    every: Annotated[bool, typer.Option("--all", help="Export every bot, as a list.")] = False,
    out: Annotated[
        Path | None, typer.Option(help="File to write (default: standard output).", dir_okay=False)
    ] = None,
    nats: NatsOption = DEFAULT_NATS,
) -> None:
    """Export one bot (an object) or --all (a list) as JSON that `admin bot import` and the API import."""
    if (bot_id is None) == (not every):
        raise _fail("name one BOT_ID or pass --all", 2)
    if every:
        bots: list[Bot] = run_admin(nats, _all_bots)
        files: BotFile | list[BotFile] = [file_of(bot.spec, bot.visibility) for bot in bots]
    else:
        assert bot_id is not None
        found: Bot | None = run_admin(nats, lambda nbus: _one(nbus, bot_id))
        if found is None:
            raise _no_bot(bot_id)
        files = file_of(found.spec, found.visibility)
    text = msgspec.json.format(schemas.encode(files), indent=2).decode() + "\n"
    if out is None:
        sys.stdout.write(text)
        return
    out.write_text(text, encoding="utf-8")
    count = len(files) if isinstance(files, list) else 1
    console.print(f"{count} bot(s) written to {out}; import them with `chatbus admin bot import {out}`")


def bot_import(
    file: Annotated[
        Path, typer.Argument(help="A bot export: one bot or a list (`admin bot export`).", dir_okay=False)
    ],
    owner: OwnerOpt = DEFAULT_OWNER,
    nats: NatsOption = DEFAULT_NATS,
) -> None:
    """Import exported bots as the owner's (visibility as the file says, else private): all or none."""
    from logtools.bots import create_bots, created_event

    try:
        items = parse_bot_file(file.read_bytes())
    except OSError as exc:
        raise _fail(f"cannot read {file}: {exc.strerror}", 2) from exc
    except BotFileError as exc:
        raise _fail(f"{file}: {exc}; nothing was imported", 2) from exc
    for index, item in enumerate(items):
        problem = sharing_problem(item.visibility, shared_names(item))
        if problem is not None:
            raise _fail(f"{file}: bot {index} ({item.name}): {problem}; nothing was imported", 2)

    async def action(nbus: Bus) -> list[str]:
        shared = [login_names(shared_names(item)) for item in items]
        await _check_users(nbus, [owner, *(name for names in shared for name in names)])
        events = [
            created_event(owner, spec_of(item), item.visibility, names)
            for item, names in zip(items, shared, strict=True)
        ]
        return [bot.bot_id for bot in await create_bots(nbus.js, events)]

    try:
        result: list[str] = run_admin(nats, action)
    except NoUser as exc:
        raise _no_user(exc) from exc
    for bot_id in result:
        typer.echo(bot_id)
    console.print(
        f"{len(result)} bot(s) imported for {owner}; see them with `chatbus admin bot list --owner {owner}`"
    )


def bot_delete(bot_id: BotIdArg, nats: NatsOption = DEFAULT_NATS) -> None:
    """Delete a bot: gone from every list and the store; chats it joined keep their copy of it."""
    import bus
    from logtools.bots import append_bot_change, deleted_event

    async def action(nbus: Bus) -> bool:
        bot = await _one(nbus, bot_id)
        if bot is None:
            return False
        await append_bot_change(nbus.js, bot, deleted_event(bot, ADMIN))
        return True

    try:
        deleted: bool = run_admin(nats, action)
    except bus.ConcurrencyConflict as exc:
        raise _fail(f"bot {bot_id} changed while it was being deleted: run the command again") from exc
    if not deleted:
        raise _no_bot(bot_id)
    console.print(f"bot {bot_id} deleted")
