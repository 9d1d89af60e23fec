"""Tab completion at the chat prompt: the commands, then a bot's name after /next, /mute and /unmute."""

from __future__ import annotations

from collections.abc import Callable, Iterable

from prompt_toolkit.completion import CompleteEvent, Completer, Completion
from prompt_toolkit.document import Document

from services.cli.chat_client.commands import HELP, POLICIES

COMMANDS = tuple(dict.fromkeys(usage.split()[0] for usage, _ in HELP if usage.startswith("/")))
NAMED = ("/next", "/mute", "/unmute")


class ChatCompleter(Completer):
    """Completes what the user types from the commands, the policies and the chat's bots (`names()`)."""

    def __init__(self, names: Callable[[], list[str]]) -> None:
        self.names = names

    def get_completions(self, document: Document, complete_event: CompleteEvent) -> Iterable[Completion]:
        text = document.text_before_cursor
        if not text.startswith("/") or text.startswith("//"):
            return
        word, space, rest = text.partition(" ")
        if not space:
            choices: Iterable[str] = COMMANDS
        elif word in NAMED:
            choices = self.names()
        elif word == "/policy":
            choices = POLICIES
        else:
            return
        typed = rest if space else word
        for choice in choices:
            if choice.casefold().startswith(typed.casefold()) and choice != typed:
                yield Completion(choice, start_position=-len(typed))
