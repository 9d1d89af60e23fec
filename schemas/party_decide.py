"""What the moderator and the owner may do to a chat with bots or a side-by-side chat: decisions that take
its state and return the events to append (see schemas/chat_decide.py for the contract).

Every decision here is fenced on the whole chat (`chat_fence`: its last event as the state saw it), so a
moderator's action never acts on a chat that changed meanwhile: a pause that cancels "the running
reply" cancels the one that is running when it lands, not one that finished, and never misses one that
the conductor started a moment before. The caller reads again and decides again when the fence fails.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from schemas import now
from schemas.bot import BotSpec
from schemas.chat import (
    ChatEventUnion,
    ChoiceMade,
    Floor,
    FloorPaused,
    FloorResumed,
    FloorSet,
    FloorStopped,
    ParticipantJoined,
    ParticipantLeft,
    ParticipantMuted,
    ReplyCancelled,
    SpeakerNamed,
)
from schemas.chat_decide import Conflict, Decision, Fence, Invalid, NotFound, not_in_battle
from schemas.chat_state import ChatState, Participant, name_key
from schemas.ids import new_id
from schemas.subjects import one_chat

# The moderator's actions (POST /v1/chats/{chat_id}/floor), and those that name a participant.
ACTIONS = ("pause", "resume", "stop", "next", "mute", "unmute", "set")
NAMING = frozenset({"next", "mute", "unmute"})
MAX_PARTICIPANTS = 16


@dataclass(frozen=True)
class Joining:
    """A bot joining the chat: the store's bot id ("" for one defined in the chat) and its spec now."""

    bot_id: str
    bot: BotSpec


def chat_fence(state: ChatState) -> Fence:
    """Append only while the chat's last event is the one `state` saw."""
    return Fence(one_chat(state.chat_id), state.last_seq)


def _alive(state: ChatState) -> None:
    if not state.alive:
        raise NotFound(f"no chat {state.chat_id}")


def join(state: ChatState, joining: Sequence[Joining], by: str, floor: Floor | None = None) -> Decision:
    """Bots join the chat, each as a copy of its spec; the first ones to join a chat also set its floor
    (`floor`, else the default round robin). Names are unique among the chat's present participants."""
    _alive(state)
    not_in_battle(state, "participants")
    if state.compare:
        raise Conflict("a side-by-side chat has no bots: its models answer every message")
    if not joining:
        raise Invalid("name at least one bot")
    present = [p for p in state.participants.values() if not p.left]
    if len(present) + len(joining) > MAX_PARTICIPANTS:
        raise Invalid(f"a chat holds at most {MAX_PARTICIPANTS} bots")
    taken = {name_key(p.name) for p in present}
    names = [name_key(one.bot.name) for one in joining]
    if len(set(names)) != len(names):
        raise Invalid("two of the bots have the same name: names are unique in a chat")
    events: list[ChatEventUnion] = []
    for one, key in zip(joining, names, strict=True):
        if key in taken:
            raise Conflict(f"the chat has a participant named {one.bot.name!r} already")
        events.append(
            ParticipantJoined(
                event_id=new_id("e"),
                chat_id=state.chat_id,
                at=now(),
                participant_id=new_id("p"),
                bot_id=one.bot_id,
                bot=one.bot,
                by=by,
            )
        )
    if not state.has_bots or floor is not None:
        events.append(_floor_set(state, floor or Floor(), by))
    return Decision(events=tuple(events), fence=chat_fence(state))


def participant(state: ChatState, ref: str) -> Participant:
    """The participant `ref` names: its id, or its name (case and spaces ignored; a present participant
    before one of the same name who left); NotFound otherwise."""
    found = state.participants.get(ref)
    if found is None:
        key = name_key(ref)
        named = [p for p in state.participants.values() if name_key(p.name) == key]
        found = next((p for p in named if not p.left), named[-1] if named else None)
    if found is None:
        raise NotFound(f"no participant {ref!r} in chat {state.chat_id}")
    return found


def leave(state: ChatState, participant_id: str, by: str) -> Decision:
    """A participant leaves (its turns stay); a turn of it still running is cancelled."""
    _alive(state)
    not_in_battle(state, "participants")
    leaving = state.participants.get(participant_id)
    if leaving is None:
        raise NotFound(f"no participant {participant_id} in chat {state.chat_id}")
    if leaving.left:
        raise Conflict(f"{leaving.name} has left the chat already")
    left = ParticipantLeft(
        event_id=new_id("e"), chat_id=state.chat_id, at=now(), participant_id=participant_id, by=by
    )
    return Decision(events=(left, *_cancels(state, by, participant_id)), fence=chat_fence(state))


@dataclass(frozen=True)
class FloorAction:
    """A moderator's action: one of ACTIONS, with the participant it names (next, mute, unmute), whether
    a pause cancels the running turn, and the new floor (set)."""

    action: str
    participant: str = ""
    cancel_running: bool = False
    floor: Floor | None = None


def moderate(state: ChatState, act: FloorAction, by: str) -> Decision:
    """Apply a moderator's action to a chat with bots (Conflict in a chat without)."""
    _alive(state)
    not_in_battle(state, "floor actions")
    if act.action not in ACTIONS:
        raise Invalid(f"action must be one of {', '.join(ACTIONS)}")
    if not state.has_bots:
        raise Conflict(f"chat {state.chat_id} has no bots: there is no floor to moderate")
    events: tuple[ChatEventUnion, ...]
    match act.action:
        case "pause":
            if state.floor.paused and not act.cancel_running:
                raise Conflict("the chat is paused already")
            paused = FloorPaused(
                event_id=new_id("e"),
                chat_id=state.chat_id,
                at=now(),
                by=by,
                cancel_running=act.cancel_running,
            )
            events = (paused, *(_cancels(state, by) if act.cancel_running else ()))
        case "resume":
            if not state.floor.paused:
                raise Conflict("the chat is not paused")
            events = (FloorResumed(event_id=new_id("e"), chat_id=state.chat_id, at=now(), by=by),)
        case "stop":
            stopped = FloorStopped(event_id=new_id("e"), chat_id=state.chat_id, at=now(), by=by)
            events = (stopped, *_cancels(state, by))
        case "set":
            if act.floor is None:
                raise Invalid("action set needs a floor: {policy, rounds, max_bot_turns, delay_s}")
            events = (_floor_set(state, act.floor, by),)
        case _:
            events = (_named(state, act, by),)
    return Decision(events=events, fence=chat_fence(state))


def _named(state: ChatState, act: FloorAction, by: str) -> ChatEventUnion:
    """next, mute or unmute: an event about the participant the action names."""
    if not act.participant:
        raise Invalid(f"action {act.action} needs a participant (its name or participant id)")
    named = participant(state, act.participant)
    if named.left:
        raise Conflict(f"{named.name} has left the chat")
    if act.action == "next":
        if named.muted:
            raise Conflict(f"{named.name} is muted: unmute it first")
        return SpeakerNamed(
            event_id=new_id("e"), chat_id=state.chat_id, at=now(), participant_id=named.participant_id, by=by
        )
    return ParticipantMuted(
        event_id=new_id("e"),
        chat_id=state.chat_id,
        at=now(),
        participant_id=named.participant_id,
        muted=act.action == "mute",
        by=by,
    )


def choose(state: ChatState, reply_id: str, by: str) -> Decision:
    """Pick the best of a message's side-by-side replies: it becomes the active branch, preferred over the
    message's other replies (a later choice for the message replaces this one)."""
    _alive(state)
    node = state.tree.nodes.get(reply_id)
    if node is None or node.kind != "reply":
        raise NotFound(f"no reply {reply_id} in chat {state.chat_id}")
    if state.arena:  # its vote is its choice, and `chat.arena.continued` its branch
        raise Conflict(
            "an arena battle is judged by its vote: POST .../arena/vote, then .../arena/continue",
            code="arena_battle",
        )
    if not state.compare:
        raise Conflict(f"chat {state.chat_id} is not a side-by-side chat")
    parent = state.tree.nodes.get(node.parent)
    siblings = [] if parent is None else parent.children
    rejected = [n for n in siblings if n != reply_id and state.tree.nodes[n].kind == "reply"]
    if not rejected:
        raise Conflict(f"reply {reply_id} has no other reply to be chosen over")
    if state.answer(reply_id) is None:
        raise Conflict(f"reply {reply_id} has no answer (yet) to choose")
    choice = ChoiceMade(
        event_id=new_id("e"),
        chat_id=state.chat_id,
        at=now(),
        message_id=node.parent,
        reply_id=reply_id,
        rejected=rejected,
        by=by,
    )
    return Decision(events=(choice,))


def _floor_set(state: ChatState, floor: Floor, by: str) -> FloorSet:
    return FloorSet(event_id=new_id("e"), chat_id=state.chat_id, at=now(), floor=floor, by=by)


def _cancels(state: ChatState, by: str, speaker: str | None = None) -> tuple[ReplyCancelled, ...]:
    """Stops for the chat's open replies (of one speaker, if named)."""
    return tuple(
        ReplyCancelled(event_id=new_id("e"), chat_id=state.chat_id, at=now(), reply_id=reply.reply_id, by=by)
        for reply in state.replies.values()
        if reply.open
        and (speaker is None or (reply.request is not None and reply.request.speaker == speaker))
    )
