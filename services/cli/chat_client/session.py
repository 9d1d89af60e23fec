"""An open chat in the terminal: the transcript above, the live replies and the prompt below, all at once.

The feed runs in its own task while the prompt waits for a line: finished turns and notes are printed
above the prompt (prompt_toolkit's `run_in_terminal`), open replies are drawn in the prompt's own area
and redrawn as their tokens come. Whatever the API refuses is shown as its message, never a traceback.
"""

from __future__ import annotations

import asyncio
import contextlib

from prompt_toolkit import PromptSession
from prompt_toolkit.application import run_in_terminal
from prompt_toolkit.formatted_text import FormattedText
from rich.console import Console
from rich.text import Text

from services.cli.chat_client.api import ApiFailure, ChatApi
from services.cli.chat_client.commands import HELP, Choose, CommandError, FloorAction, Local, Post, parse
from services.cli.chat_client.completion import ChatCompleter
from services.cli.chat_client.view import NOTE, ChatView, LiveReply

LIVE_LINES = 6  # the most lines of one streaming reply drawn above the prompt (its tail)


class ChatSession:
    """One open chat: follows its feed, prints its turns, and does what the user types."""

    def __init__(self, api: ChatApi, chat_id: str, me: str, console: Console) -> None:
        self.api = api
        self.chat_id = chat_id
        self.view = ChatView(chat_id, me)
        self.console = console
        speaking = self.view.state.participants.values()
        completer = ChatCompleter(lambda: [p.name for p in speaking if not p.left])
        self.prompt: PromptSession[str] = PromptSession(completer=completer, complete_while_typing=False)
        self.pending: list[Text] = []
        self.printed = asyncio.Event()
        self.failure: ApiFailure | None = None

    async def run(self) -> int:
        """Until /quit, Ctrl-D or Ctrl-C (0), or until the API ends the feed (1)."""
        tasks = [asyncio.create_task(self._follow()), asyncio.create_task(self._print_pending())]
        try:
            while self.failure is None:
                try:
                    line = await self.prompt.prompt_async(self._live_area, bottom_toolbar=self._toolbar)
                except (EOFError, KeyboardInterrupt):
                    break
                if not await self._do(line):
                    break
        finally:
            for task in tasks:
                task.cancel()
            for task in tasks:
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        self._write(self.pending)
        if self.failure is not None:
            self.console.print(Text(f"error: {self.failure}", style="red"), soft_wrap=True)
            return 1
        return 0

    async def _follow(self) -> None:
        try:
            async for frame in self.api.feed(self.chat_id):
                lines = self.view.take(frame)
                if lines:
                    self.pending.extend(lines)
                    self.printed.set()
                self.prompt.app.invalidate()
        except ApiFailure as exc:
            self.failure = exc
            if self.prompt.app.is_running:
                self.prompt.app.exit(exception=EOFError())

    async def _print_pending(self) -> None:
        """Print what the feed added, a batch at a time (each print redraws the prompt below it)."""
        while True:
            await self.printed.wait()
            self.printed.clear()
            await self.show([])

    async def show(self, lines: list[Text]) -> None:
        """Print the feed's pending lines, then these, above the prompt."""
        batch, self.pending = [*self.pending, *lines], []
        if not batch:
            return
        if self.prompt.app.is_running:
            await run_in_terminal(lambda: self._write(batch))
        else:
            self._write(batch)

    def _write(self, lines: list[Text]) -> None:
        for line in lines:
            self.console.print(line, soft_wrap=True, highlight=False)

    async def _do(self, line: str) -> bool:
        """Do what a typed line asks; False to leave the chat."""
        try:
            action = parse(line, self.view.state.floor.floor)
        except CommandError as exc:
            await self.show([Text(str(exc), style="yellow")])
            return True
        try:
            match action:
                case None:
                    pass
                case Post(content=content):
                    await self.api.call("POST", f"/v1/chats/{self.chat_id}/messages", {"content": content})
                case FloorAction(body=body):
                    await self.api.call("POST", f"/v1/chats/{self.chat_id}/floor", body)
                case Choose(model=model):
                    reply_id = self.view.side_by_side_answer(model)
                    await self.api.call("POST", f"/v1/chats/{self.chat_id}/replies/{reply_id}/choose")
                case Local(name="quit"):
                    return False
                case Local(name="hide"):
                    self.view.hidden = not self.view.hidden
                    shown = "hidden: turns show who spoke and how much" if self.view.hidden else "shown"
                    await self.show([Text(f"text {shown} (/hide toggles)", style=NOTE)])
                case Local(name="who"):
                    await self.show(self.view.who())
                case Local(name="help"):
                    width = max(len(usage) for usage, _ in HELP)
                    await self.show([Text(f"  {usage:<{width}}  {what}") for usage, what in HELP])
        except ApiFailure as exc:
            await self.show([Text(f"error: {exc}", style="red")])
        except CommandError as exc:
            await self.show([Text(str(exc), style="yellow")])
        return True

    def _live_area(self) -> FormattedText:
        """The open replies (each its speaker and the tail of its text), then the prompt itself."""
        width = max(20, self.prompt.app.output.get_size().columns - 2)
        parts: list[tuple[str, str]] = []
        for live in self.view.live():
            parts.extend(self._live_reply(live, width))
        parts.append(("bold", "> "))
        return FormattedText(parts)

    def _live_reply(self, live: LiveReply, width: int) -> list[tuple[str, str]]:
        if not live.started:
            return [("bold", live.speaker), ("", " is about to speak\n")]
        counted = f" ({live.tokens} tokens)" if live.tokens else ""
        label = [("bold", live.speaker), ("", f" is speaking{counted}\n")]
        if self.view.hidden or not live.text:
            return label
        rows = [
            row[i : i + width] for row in live.text.split("\n") for i in range(0, max(len(row), 1), width)
        ]
        return [*label, ("italic", "".join(f"  {row}\n" for row in rows[-LIVE_LINES:]))]

    def _toolbar(self) -> str:
        return f" {self.view.status()} | /help"
