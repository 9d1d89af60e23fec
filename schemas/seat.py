"""What a model is shown of a chat: the system prompt and the turns its request names, from its seat.

A one-model chat's reply sees the chat's system prompt, then the turns of `reply.requested.context`.
A reply with a `speaker` (a bot participant) sees the chat from that bot's seat: the bot's system
prompt (then the chat's), its own earlier turns as `assistant`, everyone else's as `user` turns
that start with the speaker's name ("Ana: ...", "Zen Sage: ..."), only the last `history` turns of
its context (0: all), and consecutive turns of one role joined into one (chat templates that
require alternating roles accept it). The worker, the audit and the export all ask this module.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from schemas.chat import ReplyRequested
from schemas.chat_state import ChatState, Participant, Turn


@dataclass(frozen=True)
class Seen:
    """One turn a model is given, and the message and reply ids it is made of (none for a system prompt)."""

    ids: tuple[str, ...]
    turn: Turn


def context_for(state: ChatState, request: ReplyRequested) -> list[Turn]:
    """What the model answering `request` sees: the system prompt, then the turns its context names
    (from the speaker's seat when the request names one)."""
    return [seen.turn for seen in context_seen(state, request)]


def context_seen(state: ChatState, request: ReplyRequested) -> list[Seen]:
    """`context_for`, with the message and reply ids each turn is made of."""
    participant = state.participants.get(request.speaker) if request.speaker else None
    if participant is None:
        system = [Seen((), Turn(role="system", content=state.system_prompt))] if state.system_prompt else []
        return system + [
            Seen((node,), turn) for node in request.context if (turn := state.turn(node)) is not None
        ]
    return seat_view(state, participant, request.context)


def speaker_of(state: ChatState, node_id: str) -> str:
    """The participant who spoke this reply ("" for a message, or a reply of the chat's own model)."""
    reply = state.replies.get(node_id)
    if reply is None:
        return ""
    if reply.answer is not None and reply.answer.speaker:
        return reply.answer.speaker
    return reply.request.speaker if reply.request is not None else ""


def speaker_name(state: ChatState, node_id: str) -> str:
    """Who said this message or reply: the author's name, the bot's name, or the model's alias."""
    message = state.messages.get(node_id)
    if message is not None:
        return message.author_name or ("System" if message.role == "system" else "User")
    participant = state.participants.get(speaker_of(state, node_id))
    if participant is not None:
        return participant.name
    reply = state.replies.get(node_id)
    if reply is None:
        return ""
    done = reply.answer or reply.request
    return done.model if done is not None else ""


def seat_view(state: ChatState, participant: Participant, context: Iterable[str]) -> list[Seen]:
    """The conversation from a bot's seat (the rule in the module docstring)."""
    prompts = [p for p in (participant.bot.system_prompt, state.system_prompt) if p]
    seen: list[Seen] = [Seen((), Turn(role="system", content="\n\n".join(prompts)))] if prompts else []
    turns = [(node, turn) for node in context if (turn := state.turn(node)) is not None]
    if participant.bot.history:
        turns = turns[-participant.bot.history :]
    for node, turn in turns:
        if speaker_of(state, node) == participant.participant_id:
            turn = Turn(role="assistant", content=turn.content)
        elif turn.role != "system":
            named = f"{speaker_name(state, node)}: {turn.content}"
            turn = Turn(role="user", content=named, images=turn.images)
        last = seen[-1] if seen else None
        if last is not None and last.ids and last.turn.role == turn.role:
            joined = Turn(
                role=turn.role,
                content=f"{last.turn.content}\n\n{turn.content}",
                images=last.turn.images + turn.images,
            )
            seen[-1] = Seen((*last.ids, node), joined)
        else:
            seen.append(Seen((node,), turn))
    return seen
