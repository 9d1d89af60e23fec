"""What the user types in an open chat: a message to post, a moderator command, or one for the client."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal, get_args

import msgspec

from schemas.chat import Floor, Policy

POLICIES: tuple[str, ...] = get_args(Policy)

# (usage, what it does): /help prints them in this order.
HELP: tuple[tuple[str, str], ...] = (
    ("TEXT", "post a message (start it with // to post a line that begins with /)"),
    ("/pause", "no new bot turn starts; the running one finishes"),
    ("/pause!", "pause and cancel the running turn"),
    ("/resume", "bots take turns again"),
    ("/stop", "cancel the running turn; no bot speaks until someone posts or names one"),
    ("/next NAME", "this bot speaks next"),
    ("/mute NAME", "skip this bot when turns are given"),
    ("/unmute NAME", "give this bot turns again"),
    (f"/policy {'|'.join(POLICIES)}", "how the next speaker is chosen"),
    ("/turns N", "at most N bot turns in a row without a human message"),
    ("/choose MODEL", "side by side: the last message's answer by this model is the best"),
    ("/hide", "toggle showing the text of turns (who speaks and how much stays)"),
    ("/who", "the bots in this chat and the floor"),
    ("/help", "this list"),
    ("/quit", "leave (so do Ctrl-D and Ctrl-C)"),
)


class CommandError(Exception):
    """What the user typed cannot be done; the message says why."""


@dataclass(frozen=True)
class Post:
    """Post this text as a message."""

    content: str


@dataclass(frozen=True)
class FloorAction:
    """A moderator action: the body of POST /v1/chats/{chat_id}/floor."""

    body: dict[str, Any]


@dataclass(frozen=True)
class Choose:
    """Choose the side-by-side answer of this model (alias or its number in the chat's order)."""

    model: str


@dataclass(frozen=True)
class Local:
    """A command the client answers itself."""

    name: Literal["hide", "who", "help", "quit"]


Action = Post | FloorAction | Choose | Local


def parse(line: str, floor: Floor) -> Action | None:
    """The action a typed line asks for (None for a blank line); `floor` is the chat's floor now."""
    if not line.strip():
        return None
    if line.startswith("//"):
        return Post(line[1:])
    if not line.startswith("/"):
        return Post(line)
    word, _, rest = line[1:].strip().partition(" ")
    arg = rest.strip()
    match word.lower():
        case "pause" | "pause!" as pause:
            _no_argument(word, arg)
            return FloorAction({"action": "pause", "cancel_running": pause == "pause!"})
        case "resume" | "stop":
            _no_argument(word, arg)
            return FloorAction({"action": word.lower()})
        case "next" | "mute" | "unmute":
            if not arg:
                raise CommandError(f"/{word} needs a bot's name: /{word} NAME (/who lists them)")
            return FloorAction({"action": word.lower(), "participant": arg})
        case "choose":
            if not arg:
                raise CommandError("/choose needs a model: /choose MODEL (or its number, 1 for the first)")
            return Choose(arg)
        case "policy":
            if arg not in POLICIES:
                raise CommandError(f"/policy takes one of {', '.join(POLICIES)}")
            return _set_floor(floor, policy=arg)
        case "turns":
            if not arg.isdigit():
                raise CommandError("/turns takes a number: the most bot turns in a row")
            return _set_floor(floor, max_bot_turns=int(arg))
        case "hide" | "who" | "help" | "quit" | "exit" as local:
            _no_argument(word, arg)
            return Local("quit" if local == "exit" else local)
    raise CommandError(f"unknown command /{word}; /help lists them")


def _no_argument(word: str, arg: str) -> None:
    if arg:
        raise CommandError(f"/{word} takes no argument")


def _set_floor(floor: Floor, **change: Any) -> FloorAction:
    """The whole floor with one field changed (a `set` replaces the floor), checked as the API would."""
    wanted = {**msgspec.to_builtins(floor), **change}
    try:
        checked = msgspec.convert(wanted, Floor)
    except msgspec.ValidationError as exc:
        raise CommandError(f"not a floor the chat can have: {exc}") from None
    return FloorAction({"action": "set", "floor": msgspec.to_builtins(checked)})
