"""What the terminal shows of a chat: its events folded into the chat's state, turns to print, live replies.

Every frame of the live feed goes through `ChatView.take`, which folds it (schemas/chat_state.py, the
same fold the API and the worker use, so speakers and the floor read the same everywhere) and returns
the lines to add to the transcript: a message when it is posted, a reply when it ends, and a note for
each moderator or participant event. Replies still open are the live part, drawn above the prompt
with their tokens as they come (`live`). With `hidden` set, turns show who spoke and how much, not
what: the moderator keeps the floor without the text.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import msgspec
from rich.text import Text

import schemas
from schemas.chat import (
    ChatCreated,
    ChatDeleted,
    ChatEvent,
    ChatRenamed,
    ChatRestored,
    ChoiceMade,
    Floor,
    FloorPaused,
    FloorResumed,
    FloorSet,
    FloorStopped,
    MessagePosted,
    ParticipantJoined,
    ParticipantLeft,
    ParticipantMuted,
    ReplyCancelled,
    ReplyCompleted,
    ReplyFailed,
    SpeakerNamed,
)
from schemas.chat_state import ChatState
from schemas.seat import speaker_name
from schemas.tokens import TokenDelta
from services.cli.chat_client.api import Frame
from services.cli.chat_client.commands import CommandError

NOTE = "dim"
NAME_STYLES = ("bold cyan", "bold magenta", "bold yellow", "bold green", "bold blue", "bold red")


@dataclass
class Stream:
    """The text a reply's current attempt has streamed so far."""

    attempt: int = 0
    text: str = ""
    tokens: int = 0


@dataclass(frozen=True)
class LiveReply:
    """An open reply as the live area draws it."""

    reply_id: str
    speaker: str
    style: str
    text: str
    tokens: int
    started: bool


class ChatView:
    """A chat as this terminal knows it: the folded state, the streams of open replies, the display mode."""

    def __init__(self, chat_id: str, me: str = "") -> None:
        self.state = ChatState(chat_id)
        self.me = me  # the user's id: their own messages are labelled "you" when they carry no name
        self.streams: dict[str, Stream] = {}
        self.hidden = False
        self.styles: dict[str, str] = {}

    def take(self, frame: Frame) -> list[Text]:
        """Fold one frame; the lines it adds to the transcript."""
        try:
            event = schemas.decode_event(bytes(frame.event))
        except (msgspec.DecodeError, msgspec.ValidationError):
            return []  # an event this version does not know: nothing to show
        if isinstance(event, TokenDelta):
            self._delta(event)
            return []
        if not isinstance(event, ChatEvent) or event.chat_id != self.state.chat_id:
            return []
        self.state.apply(frame.seq, event)
        return self._lines(event)

    def _delta(self, delta: TokenDelta) -> None:
        reply = self.state.replies.get(delta.reply_id)
        if reply is not None and not reply.open:
            self.streams.pop(delta.reply_id, None)
            return
        stream = self.streams.setdefault(delta.reply_id, Stream(attempt=delta.attempt))
        if delta.attempt > stream.attempt:  # a retry starts over
            stream.attempt, stream.text, stream.tokens = delta.attempt, "", 0
        if delta.attempt == stream.attempt:
            stream.text += delta.text
            stream.tokens += delta.n_tokens

    def _lines(self, event: ChatEvent) -> list[Text]:
        match event:
            case MessagePosted():
                if self.hidden:
                    return [self._turn(event.message_id, f"({len(event.content.split())} words)", note=True)]
                return [self._turn(event.message_id, event.content)]
            case ReplyCompleted() | ReplyFailed():
                return self._ended(event)
            case _:
                note = self.note(event)
                return [Text(printable(note), style=NOTE)] if note else []

    def _ended(self, event: ReplyCompleted | ReplyFailed) -> list[Text]:
        reply = self.state.replies.get(event.reply_id)
        if reply is None or reply.ending is not event:
            return []  # a late or repeated end: the reply was already shown
        self.streams.pop(event.reply_id, None)
        if isinstance(event, ReplyFailed):
            return [self._turn(event.reply_id, f"[failed: {event.error}]", note=True)]
        if event.finish_reason == "error":
            return [self._turn(event.reply_id, "[failed]", note=True)]
        suffix = " [cancelled]" if event.finish_reason == "cancelled" else ""
        if self.hidden:
            return [self._turn(event.reply_id, f"({event.completion_tokens} tokens){suffix}", note=True)]
        return [self._turn(event.reply_id, event.text + suffix)]

    def _turn(self, node_id: str, content: str, note: bool = False) -> Text:
        name = self.name_of(node_id)
        line = Text(f"{printable(name)}: ", style=self.style_of(name))
        line.append(printable(content), style=NOTE if note else "")
        return line

    def name_of(self, node_id: str) -> str:
        """Who said this message or reply, as the transcript labels it."""
        message = self.state.messages.get(node_id)
        if message is not None and not message.author_name:
            return "you" if message.author_id == self.me else message.author_id or "user"
        return speaker_name(self.state, node_id) or "?"

    def style_of(self, name: str) -> str:
        """A colour per speaker, in the order they first speak."""
        if name not in self.styles:
            self.styles[name] = "bold" if name == "you" else NAME_STYLES[len(self.styles) % len(NAME_STYLES)]
        return self.styles[name]

    def note(self, event: ChatEvent) -> str:
        """A one-line note of a moderator, participant or chat event ("" for events the transcript shows)."""
        participants = self.state.participants
        match event:
            case ChatCreated():
                return f"chat {event.title!r} created by {event.owner_id}"
            case ChatRenamed():
                return f"renamed to {event.title!r} by {event.by}"
            case ChatDeleted():
                return f"chat deleted by {event.by}"
            case ChatRestored():
                return f"chat restored by {event.by}"
            case ParticipantJoined():
                return f"+ {event.bot.name} joined ({event.bot.model})"
            case ParticipantLeft():
                who = participants.get(event.participant_id)
                return f"- {who.name if who else event.participant_id} left"
            case ParticipantMuted():
                who = participants.get(event.participant_id)
                name = who.name if who else event.participant_id
                return f"{name} {'muted' if event.muted else 'unmuted'} by {event.by}"
            case FloorSet():
                return f"floor: {describe_floor(event.floor)} (set by {event.by})"
            case FloorPaused():
                cancelled = ", running turn cancelled" if event.cancel_running else ""
                return f"|| paused by {event.by}{cancelled}"
            case FloorResumed():
                return f"> resumed by {event.by}"
            case FloorStopped():
                return f"[] stopped by {event.by}: no bot speaks until someone posts or names one"
            case SpeakerNamed():
                who = participants.get(event.participant_id)
                return f"-> {who.name if who else event.participant_id} speaks next (named by {event.by})"
            case ReplyCancelled():
                return f"{self.name_of(event.reply_id)}'s turn cancelled by {event.by}"
            case ChoiceMade():
                return f"chose {self.name_of(event.reply_id)}'s answer"
        return ""

    def live(self) -> list[LiveReply]:
        """The replies still open, oldest first, with what they streamed so far."""
        out = []
        for reply_id, reply in self.state.replies.items():
            if not reply.open or reply.request is None or reply.request.imported:
                continue
            stream = self.streams.get(reply_id, Stream())
            name = self.name_of(reply_id)
            started = reply.status == "started" or bool(stream.text)
            out.append(LiveReply(reply_id, name, self.style_of(name), stream.text, stream.tokens, started))
        return out

    def side_by_side_answer(self, model: str) -> str:
        """The reply of `model` (an alias, or its number in the chat's order) to the last message answered
        side by side; CommandError when there is none."""
        compare = self.state.compare
        if not compare:
            raise CommandError("/choose is for side-by-side chats (chatbus chat --new --compare A,B)")
        if model.isdigit() and 1 <= int(model) <= len(compare):
            model = compare[int(model) - 1]
        requests = [r.request for r in self.state.replies.values() if r.request is not None]
        if not requests:
            raise CommandError("no message has been answered side by side yet")
        last = requests[-1].message_id
        for request in requests:
            if request.message_id == last and request.model == model:
                return request.reply_id
        raise CommandError(f"no answer by {model!r} to the last message: choose one of {', '.join(compare)}")

    def status(self) -> str:
        """One line about the chat: title, floor and how many bots."""
        state = self.state
        parts = [state.title or state.chat_id]
        if state.has_bots:
            speaking = [p for p in state.participants.values() if not p.left]
            parts.append(f"{len(speaking)} bots")
            floor = state.floor
            parts.append(describe_floor(floor.floor))
            if floor.paused:
                parts.append("PAUSED")
        elif state.created is not None:
            parts.append(", ".join(state.compare) if state.compare else state.created.model)
        if self.hidden:
            parts.append("text hidden")
        return " | ".join(parts)

    def who(self) -> list[Text]:
        """The participants and the floor, for /who."""
        state = self.state
        if not state.has_bots:
            model = ", ".join(state.compare) or (state.created.model if state.created else "?")
            return [Text(f"no bots in this chat: it answers with {model}", style=NOTE)]
        lines = [
            Text(f"floor: {describe_floor(state.floor.floor)}{' (paused)' if state.floor.paused else ''}")
        ]
        for participant in state.participants.values():
            flags = [f for f, on in (("muted", participant.muted), ("left", participant.left)) if on]
            line = Text(f"  {printable(participant.name)}", style=self.style_of(participant.name))
            line.append(f"  {participant.bot.model}{'  (' + ', '.join(flags) + ')' if flags else ''}")
            lines.append(line)
        return lines


def printable(text: str) -> str:
    """Text as the terminal may print it: no control characters but line breaks and tabs, so that a model's
    or another user's text cannot move the cursor, retitle the window or hide what was printed."""
    return _CONTROL.sub(lambda match: f"^{chr(ord(match.group()) % 128 ^ 64)}", text)


_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")


def describe_floor(floor: Floor) -> str:
    """A floor in a few words: policy, rounds, the bot-turn limit and the delay."""
    rounds = f", {floor.rounds} rounds" if floor.rounds != 1 else ""
    delay = f", {floor.delay_s:g} s apart" if floor.delay_s else ""
    return f"{floor.policy}{rounds}, at most {floor.max_bot_turns} bot turns in a row{delay}"
