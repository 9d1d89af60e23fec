"""`chatbus chat`: pick one of your chats, open one by id, or create one (with bots: a party chat)."""

from __future__ import annotations

import asyncio
from enum import StrEnum
from typing import Annotated, Any

import typer
from prompt_toolkit import PromptSession
from rich.console import Console
from rich.text import Text

from schemas.chat_state import name_key
from services.cli.chat_client.api import ApiFailure, ChatApi
from services.cli.chat_client.session import ChatSession
from services.cli.chat_client.view import printable
from services.cli.settings import DEFAULT_API_URL, variable_of


class PolicyChoice(StrEnum):
    """The turn policies `--policy` takes (schemas.chat.Policy; a test keeps them the same)."""

    manual = "manual"
    round_robin = "round_robin"
    mention = "mention"
    auto = "auto"


LISTED = 30  # chats the picker lists (the newest)


def chat(
    chat_id: Annotated[
        str | None, typer.Argument(help="The chat to open (default: list your chats and pick one).")
    ] = None,
    url: Annotated[
        str, typer.Option("--url", envvar=variable_of("api_url"), help="The chatbus API's address.")
    ] = DEFAULT_API_URL,
    key: Annotated[
        str,
        typer.Option(
            "--key",
            envvar=variable_of("api_key"),
            help="Your API key (`chatbus admin key issue NAME` prints one).",
            show_default=False,
        ),
    ] = "",
    new: Annotated[bool, typer.Option("--new", help="Create a chat and open it.")] = False,
    title: Annotated[str, typer.Option("--title", help="With --new: the chat's title.")] = "New chat",
    bots: Annotated[
        str, typer.Option("--bots", help="With --new: bots by name or id, comma-separated (a party chat).")
    ] = "",
    policy: Annotated[
        PolicyChoice | None, typer.Option("--policy", help="With --bots: how the next speaker is chosen.")
    ] = None,
    turns: Annotated[
        int | None,
        typer.Option("--turns", min=1, help="With --bots: the most bot turns in a row without a human."),
    ] = None,
    model: Annotated[
        str | None, typer.Option("--model", help="With --new: the model alias of a chat without bots.")
    ] = None,
    compare: Annotated[
        str, typer.Option("--compare", help="With --new: 2-4 model aliases that answer side by side.")
    ] = "",
) -> None:
    """Chat in the terminal: watch replies stream, post, and moderate bots (/help inside lists commands).

    Talks to the API over HTTP with an API key (never to NATS).
    """
    console = Console(highlight=False)
    if not key:
        console.print(f"[red]No API key: give --key or set {variable_of('api_key')}.[/]")
        raise typer.Exit(2)
    if chat_id and new:
        console.print("[red]Give a chat id or --new, not both.[/]")
        raise typer.Exit(2)
    if not new and (bots or policy or turns or model or compare):
        console.print("[red]--bots, --policy, --turns, --model and --compare go with --new.[/]")
        raise typer.Exit(2)
    floor: dict[str, Any] = {}
    if policy is not None:
        floor["policy"] = policy.value
    if turns is not None:
        floor["max_bot_turns"] = turns
    names = [name.strip() for name in bots.split(",") if name.strip()]
    if floor and not names:
        console.print("[red]--policy and --turns set the floor of a chat with --bots.[/]")
        raise typer.Exit(2)
    body: dict[str, Any] = {"title": title}
    if model:
        body["model"] = model
    if compare:
        body["compare"] = [alias.strip() for alias in compare.split(",") if alias.strip()]
    if floor:
        body["floor"] = floor
    try:
        code = asyncio.run(_main(console, url, key, chat_id, body if new else None, names))
    except KeyboardInterrupt:  # Ctrl-C between two prompts: leave as quietly as at the prompt
        code = 0
    raise typer.Exit(code)


async def _main(
    console: Console, url: str, key: str, chat_id: str | None, new: dict[str, Any] | None, bots: list[str]
) -> int:
    async with ChatApi(url, key) as api:
        try:
            me = await api.call("GET", "/v1/me")
            if new is not None:
                chat_id = await _create(console, api, new, bots)
            elif chat_id is None:
                chat_id = await _pick(console, api)
                if chat_id is None:
                    return 0
            await api.call("GET", f"/v1/chats/{chat_id}")
        except ApiFailure as exc:
            console.print(Text(f"error: {exc}", style="red"), soft_wrap=True)
            return 1
        console.print(Text(f"chat {chat_id}: /help lists the commands, Ctrl-D leaves", style="dim"))
        return await ChatSession(api, chat_id, str(me.get("user_id", "")), console).run()


async def _create(console: Console, api: ChatApi, body: dict[str, Any], bots: list[str]) -> str:
    """Create the chat (with the named bots, resolved to ids); its id."""
    if bots:
        body = {**body, "bots": await _bot_ids(api, bots)}
    created = await api.call("POST", "/v1/chats", body)
    chat_id = str(created["chat_id"])
    console.print(Text(f"created chat {chat_id}", style="dim"))
    return chat_id


async def _bot_ids(api: ChatApi, wanted: list[str]) -> list[str]:
    """The ids of the bots named (by name, case and spaces ignored, or by id) among those you may use."""
    answer = await api.call("GET", "/v1/bots?scope=usable")
    usable: list[dict[str, Any]] = answer.get("bots", [])
    ids = []
    for name in wanted:
        matches = [
            b for b in usable if b.get("bot_id") == name or name_key(b.get("name", "")) == name_key(name)
        ]
        mine = [b for b in matches if b.get("mine")]
        if len(mine) == 1 or len(matches) == 1:
            ids.append(str((mine or matches)[0]["bot_id"]))
        elif not matches:
            raise ApiFailure(
                0, "no_such_bot", f"no bot {name!r} that you may use (--bots takes names or ids)"
            )
        else:
            found = ", ".join(f"{b['bot_id']} ({b.get('owner_name', '?')})" for b in matches)
            raise ApiFailure(0, "ambiguous_bot", f"several bots are called {name!r}: {found}; give an id")
    return ids


async def _pick(console: Console, api: ChatApi) -> str | None:
    """List your newest chats and ask which to open (a number or an id); None to leave."""
    page = await api.call("GET", f"/v1/chats?limit={LISTED}")
    chats: list[dict[str, Any]] = page.get("items", [])
    if not chats:
        console.print("You have no chats yet: `chatbus chat --new` creates one.")
        return None
    for number, row in enumerate(chats, 1):
        line = Text(f"{number:>3}  ")
        line.append(printable(str(row.get("title", ""))), style="bold")
        line.append(f"  {row.get('model', '')}  {row.get('chat_id')}  {str(row.get('updated_at', ''))[:16]}")
        console.print(line, soft_wrap=True)
    session: PromptSession[str] = PromptSession()
    while True:
        try:
            answer = (await session.prompt_async("open which chat (number or id, Enter to leave)? ")).strip()
        except (EOFError, KeyboardInterrupt):
            return None
        if not answer:
            return None
        if answer.isdigit():
            if 1 <= int(answer) <= len(chats):
                return str(chats[int(answer) - 1]["chat_id"])
            console.print(f"[yellow]pick 1 to {len(chats)}, or give a chat id[/]")
            continue
        return answer
