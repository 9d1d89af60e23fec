"""A chat's audit trail read from the log: every event of it as when / who / what (API and CLI share it).

The trail folds the chat's state as it goes, so each line can say what the state said then: who spoke a
message or reply (schemas/seat.py's speaker_name), what a requested reply's model was given (its seat
view, context_seen), and the moderator's events (participants, the floor, side-by-side choices) by name.

Read for a given reader, an arena battle that reader must not see yet (schemas/blind.py: their own battle
before its vote) is folded from its blinded events, so no line names a drawn model or a worker.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import msgspec

import bus
import schemas
from bus import JetStream
from schemas.audit import AuditEntry, SeenTurn
from schemas.blind import blind_event, blind_for
from schemas.chat import (
    ArenaContinued,
    ArenaTagged,
    ArenaVoted,
    BranchSelected,
    ChatCreated,
    ChatDeleted,
    ChatErased,
    ChatEvent,
    ChatRenamed,
    ChatRestored,
    ChoiceMade,
    FeedbackGiven,
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
    ReplyRequested,
    ReplyStarted,
    SpeakerNamed,
)
from schemas.chat_state import ChatState
from schemas.seat import context_seen, speaker_name
from schemas.streams import CHAT
from schemas.subjects import one_chat

_PREVIEW = 80


async def read_audit(js: JetStream, chat_id: str, reader_id: str | None = None) -> list[AuditEntry]:
    """The audit lines of every event the log holds for the chat, in order (none: no such chat); as
    `reader_id` may read them when given (blind to an arena battle's voter before the vote)."""
    msgs = await bus.read_direct(js, CHAT.name, one_chat(chat_id))
    return audit_entries(((m.seq, m.data) for m in msgs), reader_id)


def _preview(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= _PREVIEW else text[: _PREVIEW - 1] + "…"


def _describe(event: ChatEvent, state: ChatState) -> tuple[str, str, str, dict[str, Any]]:
    """(who, what, model, params) of an event, the state folded up to it included."""
    match event:
        case ChatCreated():
            side = f" (side by side: {', '.join(event.compare)})" if event.compare else ""
            return event.owner_id, f"created {event.title!r}{side}", event.model, {}
        case ChatRenamed():
            return event.by, f"renamed to {event.title!r}", "", {}
        case ChatDeleted():
            return event.by, "deleted", "", {}
        case ChatRestored():
            return event.by, "restored", "", {}
        case ChatErased():
            return event.by, "erased", "", {}
        case MessagePosted():
            where = f" (edit of {event.edit_of})" if event.edit_of else ""
            images = f" +{len(event.images)} image(s)" if event.images else ""
            return (
                event.author_id,
                f"message {event.message_id}{where}: {_preview(event.content)}{images}",
                "",
                {},
            )
        case ReplyRequested():
            params = msgspec.structs.asdict(event.params)
            what = f"reply {event.reply_id} requested for {event.message_id} (context {len(event.context)})"
            if event.speaker:
                what += f" from {_name(state, event.speaker)}'s seat"
            return event.requested_by, what, event.model, params
        case ReplyStarted():
            return event.worker_id, f"reply {event.reply_id} attempt {event.attempt} started", event.model, {}
        case ReplyCompleted():
            what = (
                f"reply {event.reply_id} {event.finish_reason}: {event.completion_tokens} tokens "
                f"({event.prompt_tokens} prompt): {_preview(event.text)}"
            )
            if event.context_dropped:  # the seen turns the worker left out to fit the model's window
                what += f" ({len(event.context_dropped)} context turn(s) dropped to fit)"
            return event.worker_id, what, event.model, {}
        case ReplyFailed():
            return event.worker_id, f"reply {event.reply_id} failed: {_preview(event.error)}", "", {}
        case ReplyCancelled():
            return event.by, f"reply {event.reply_id} cancel asked", "", {}
        case BranchSelected():
            return event.by, f"branch to {event.node_id} selected", "", {}
        case FeedbackGiven():
            rating = event.rating or "withdrawn"
            note = f": {_preview(event.comment)}" if event.comment else ""
            return event.user_id, f"rated {event.reply_id} {rating}{note}", "", {}
        case ChoiceMade():
            over = ", ".join(event.rejected) or "no other reply"
            return event.by, f"chose {event.reply_id} for {event.message_id} over {over}", "", {}
    return _describe_moderation(event, state)


def _describe_moderation(event: ChatEvent, state: ChatState) -> tuple[str, str, str, dict[str, Any]]:
    """(who, what, model, params) of the participant and floor events."""
    match event:
        case ParticipantJoined():
            bot = event.bot
            seen = f"last {bot.history} turns" if bot.history else "every turn"
            what = f"{bot.name} joined as {event.participant_id} (sees {seen}, delay {bot.delay_s:g} s)"
            return event.by, what, bot.model, msgspec.structs.asdict(bot.params)
        case ParticipantLeft():
            return event.by, f"{_name(state, event.participant_id)} left", "", {}
        case ParticipantMuted():
            muted = "muted" if event.muted else "unmuted"
            return event.by, f"{_name(state, event.participant_id)} {muted}", "", {}
        case FloorSet():
            f = event.floor
            what = (
                f"floor set: {f.policy}, {f.rounds} round(s), at most {f.max_bot_turns} bot turns in a row,"
                f" delay {f.delay_s:g} s"
            )
            return event.by, what, "", {}
        case FloorPaused():
            cancel = ", cancelling the running reply" if event.cancel_running else ""
            return event.by, f"paused{cancel}", "", {}
        case FloorResumed():
            return event.by, "resumed", "", {}
        case FloorStopped():
            return event.by, "stopped", "", {}
        case SpeakerNamed():
            return event.by, f"named {_name(state, event.participant_id)} to speak next", "", {}
    return _describe_arena(event)


def _describe_arena(event: ChatEvent) -> tuple[str, str, str, dict[str, Any]]:
    """(who, what, model, params) of an arena battle's vote, continuation and category."""
    match event:
        case ArenaVoted():
            what = f"voted {event.vote} (A: {event.model_a}, B: {event.model_b})"
            return event.voter_id, what, "", {}
        case ArenaContinued():
            return event.by, f"continued with side {event.side}", event.model, {}
        case ArenaTagged():
            return event.by, f"category set to {event.category!r}", "", {}
    return "", type(event).__name__, "", {}


def _name(state: ChatState, participant_id: str) -> str:
    participant = state.participants.get(participant_id)
    return participant.name if participant is not None else participant_id


def _speaker(event: ChatEvent, state: ChatState) -> str:
    """Who said the message or reply the event is about ("" for other events)."""
    match event:
        case MessagePosted():
            return speaker_name(state, event.message_id)
        case ReplyRequested() | ReplyStarted() | ReplyCompleted() | ReplyFailed() | ReplyCancelled():
            return speaker_name(state, event.reply_id)
        case FeedbackGiven() | ChoiceMade():
            return speaker_name(state, event.reply_id)
    return ""


def _seen(event: ChatEvent, state: ChatState) -> list[SeenTurn]:
    """What a requested reply's model is given: its seat view of the chat as it stands at the request."""
    if not isinstance(event, ReplyRequested):
        return []
    return [
        SeenTurn(role=s.turn.role, content=s.turn.content, images=list(s.turn.images), ids=list(s.ids))
        for s in context_seen(state, event)
    ]


def audit_entries(stored: Iterable[tuple[int, bytes]], reader_id: str | None = None) -> list[AuditEntry]:
    """The audit lines of a chat's stored messages (seq, data), in order; unreadable ones skipped. Given
    a reader, as they may read them (schemas/blind.py)."""
    events = list(_chat_events(stored))
    if reader_id is not None:
        created = next((e for _, e in events if isinstance(e, ChatCreated)), None)
        revealed = any(isinstance(e, ArenaVoted) for _, e in events)
        blind = blind_for(created, revealed, reader_id)
        if blind is not None:
            events = [(seq, blind_event(event, blind)) for seq, event in events]
    entries = []
    state: ChatState | None = None
    for seq, event in events:
        if state is None:
            state = ChatState(event.chat_id)
        state.apply(seq, event)
        entries.append(audit_entry(seq, event, state))
    return entries


def _chat_events(stored: Iterable[tuple[int, bytes]]) -> Iterable[tuple[int, ChatEvent]]:
    for seq, data in stored:
        try:
            event = schemas.decode_event(data)
        except msgspec.DecodeError:
            continue
        if isinstance(event, ChatEvent):
            yield seq, event


def audit_entry(seq: int, event: ChatEvent, state: ChatState) -> AuditEntry:
    """The audit line of one event, given the chat's state with every event up to it applied."""
    who, what, model, params = _describe(event, state)
    fields = msgspec.to_builtins(event)
    return AuditEntry(
        seq=seq,
        at=event.at,
        type=str(fields.get("type", "")),
        who=who,
        what=what,
        model=model,
        params=params,
        event=fields,
        speaker=_speaker(event, state),
        seen=_seen(event, state),
    )
