"""Read what a reply request's model sees from the log, as chat-template messages, fitted to its window.

Which messages those are is the chat state's rule (schemas/seat.py, `context_for`); the
worker reads only the subjects that rule needs (`schemas.subjects.context_subjects`, in one direct read
of the chat: no consumer), and this module shapes their turns for the engine. A chat longer than the
model's window keeps getting replies: `fit_prompt` drops its oldest turns (never the system prompt, never
the newest turn), and the reply records which (`reply.completed.context_dropped`).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import bus
from schemas.chat import ChatEvent, ReplyRequested
from schemas.chat_state import ChatState, Turn
from schemas.seat import context_seen
from schemas.streams import CHAT
from schemas.subjects import context_subjects, one_chat
from services.llm_worker.engine import ChatMessage, Prompt

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Context:
    """What a request's model is given: chat-template messages, the message and reply ids each is made of
    (none for the system prompt; several where a bot's seat joins turns of one role), and whether the
    chat may be cut to fit (chats through the OpenAI-compatible door may not: their caller sends the
    whole conversation and is told when it is too long, as OpenAI does)."""

    messages: list[ChatMessage]
    ids: list[tuple[str, ...]]
    fittable: bool = True


async def read_context(js: bus.JetStream, chat_id: str, request_seq: int) -> list[bus.StoredMsg]:
    """The chat's events a prompt is built from, as the log holds them now: at least up to the request
    (`request_seq`, its sequence in CHAT), whichever replica answers."""
    scope, subjects = one_chat(chat_id), context_subjects(chat_id)
    return await bus.read_subjects(js, CHAT.name, scope, subjects, min_seq=request_seq)


def build_messages(request: ReplyRequested, stored: Iterable[bus.StoredMsg]) -> list[ChatMessage]:
    """Chat messages for a request: the system prompt, then exactly `request.context` in order."""
    return build_context(request, stored).messages


def build_context(request: ReplyRequested, stored: Iterable[bus.StoredMsg]) -> Context:
    """The context of a request: the system prompt, then exactly `request.context` in order.

    A message with images lists their hashes under "images" (the engine decides whether it sees them).
    """
    state = ChatState(request.chat_id)
    for msg in stored:
        event = bus.decode_one(msg.subject, msg.data, where=f"seq {msg.seq}")
        if event is None:  # unreadable or misfiled (logged): never part of a prompt
            continue
        if isinstance(event, ChatEvent):
            state.apply(msg.seq, event)
    seen = context_seen(state, request)
    messages = [_message(s.turn) for s in seen]
    return Context(messages, [s.ids for s in seen], fittable=state.origin != "openai")


@dataclass(frozen=True)
class Fitted:
    """A prompt that fits the model's window, and the ids of the turns left out to make it fit."""

    prompt: Prompt
    dropped: list[str]


def fit_prompt(
    context: Context, build: Callable[[list[ChatMessage]], Prompt], window: int, room: int
) -> Fitted:
    """The prompt of `context` (rendered by `build`) that leaves `room` tokens for the reply in a `window`
    of tokens (0: unknown, nothing is cut): the fewest oldest turns are dropped (a binary search, a few
    renderings), never the system prompt nor the newest turn, and a kept part never starts with an
    assistant turn. When even the newest turn alone does not fit, that prompt is returned (the engine
    refuses it: `context_length_exceeded`)."""
    prompt = build(context.messages)
    if window <= 0 or not context.fittable or len(prompt.input_ids) + room <= window:
        return Fitted(prompt, [])
    head = sum(1 for ids in context.ids if not ids)  # the system prompt stays
    last = len(context.messages) - 1  # and so does the newest turn

    def cut(drop: int) -> int:
        """Where the kept turns start when `drop` are dropped (a kept part starts with no assistant turn)."""
        start = head + drop
        while start < last and context.messages[start]["role"] == "assistant":
            start += 1
        return start

    def render(start: int) -> Prompt:
        return build(context.messages[:head] + context.messages[start:])

    found: tuple[int, Prompt] | None = None
    low, high = 1, last - head  # the fewest turns dropped that make it fit: in [low, high]
    while low <= high:
        middle = (low + high) // 2
        start = cut(middle)
        candidate = render(start)
        if len(candidate.input_ids) + room <= window:
            found, high = (start, candidate), middle - 1
        else:
            low = middle + 1
    if found is None:
        found = (last, render(last)) if last > head else (head, prompt)
    return Fitted(found[1], [node for ids in context.ids[head : found[0]] for node in ids])


def _message(turn: Turn) -> ChatMessage:
    message: ChatMessage = {"role": turn.role, "content": turn.content}
    if turn.images:
        message["images"] = list(turn.images)
    return message


def image_hashes(messages: list[ChatMessage]) -> list[str]:
    """The distinct images of the messages, in the order they appear."""
    return list(dict.fromkeys(sha for message in messages for sha in message.get("images", ())))
