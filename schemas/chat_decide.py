"""What may be done to a chat: decisions that take its state and return the events to append.

Each decision checks the state (raising `NotFound` for what is not in the chat) and returns a
`Decision`: its events, in order, and the fence the first one is appended under. The caller
appends the first event with `Nats-Expected-Last-Subject-Sequence` on `fence.subject` and the
rest after it; when the fence does not hold, the chat changed since the state was read, and the
caller reads it again and decides again. Nothing here touches the bus: new ids and the clock
are the only things a decision takes from outside its arguments.

The fencing rule: a message is appended only while the chat's last post is the one the state
saw (`post_fence`), so two concurrent posts never both follow the same leaf, and every reply's
context is a whole path.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TypeVar

from schemas import now
from schemas.chat import (
    BranchSelected,
    ChatErased,
    ChatEventUnion,
    MessagePosted,
    ReplyCancelled,
    ReplyRequested,
)
from schemas.chat_state import ChatState, context_ids
from schemas.ids import new_id
from schemas.sampling import SamplingParams
from schemas.subjects import chat_event

E = TypeVar("E", bound=ChatEventUnion)


class Refused(Exception):
    """A decision refused: the message says what is wrong, for the user; `code` names the case for
    clients ("" for the class's plain one: not_found, conflict, bad_request)."""

    def __init__(self, message: str, code: str = "") -> None:
        super().__init__(message)
        self.code = code


class NotFound(Refused):
    """The chat, or the message or reply named, is not there."""


class Conflict(Refused):
    """Not possible in the chat as it is (no bots to moderate, a participant who left, no sibling to
    choose over)."""


class Invalid(Refused):
    """The request itself is wrong whatever the chat holds (two bots of one name)."""


@dataclass(frozen=True)
class Fence:
    """Append only while the last message on `subject` has sequence `seq` (0: none yet)."""

    subject: str
    seq: int


@dataclass(frozen=True)
class Decision:
    """Events to append in order; the first under `fence` (None: unfenced)."""

    events: tuple[ChatEventUnion, ...]
    fence: Fence | None = None

    def one(self, kind: type[E]) -> E:
        """The decision's (first) event of a kind."""
        return next(e for e in self.events if isinstance(e, kind))


@dataclass(frozen=True)
class Draft:
    """A message to post: who wrote what, and whether it is an edit of an earlier message."""

    author_id: str
    content: str
    images: list[str]
    edit_of: str | None = None  # an edit of this message (a sibling of it), else the end of the active path
    author_name: str = ""  # how the chat's bots name the author ("Ana: ...")


@dataclass(frozen=True)
class Ask:
    """A reply to ask for: of which model, with which sampling, by whom."""

    model: str
    params: SamplingParams
    by: str
    speaker: str = ""  # a bot participant who speaks ("": the chat's own model)


def post_fence(state: ChatState) -> Fence:
    """A post holds only while the chat's last post is the one `state` saw."""
    return Fence(chat_event(state.chat_id, "message.posted"), state.last_post_seq)


def _alive(state: ChatState) -> None:
    if not state.alive:  # an erasure may land between the caller's access check and its read
        raise NotFound(f"no chat {state.chat_id}")


def not_in_battle(state: ChatState, what: str) -> None:
    """Refuse `what` (regenerate, edit, ...) in an arena battle before its vote (Conflict `arena_battle`):
    a battle's two sides answer the same conversation, and its vote judges exactly that."""
    if state.arena and state.vote is None:
        raise Conflict(
            f"an arena battle allows no {what} before the vote: vote first (POST .../arena/vote)",
            code="arena_battle",
        )


def battle_post(state: ChatState) -> None:
    """Refuse a post (`POST .../messages`) in a battle that has not gone on with one side: before the vote
    (Conflict `arena_battle`: a battle judges one prompt, its opening one, answered by both sides from the
    same conversation), and after the vote until the voter picks a side (Conflict `choose_side`)."""
    if not state.arena or state.continued is not None:
        return
    if state.vote is None:
        raise Conflict(
            "a battle judges one prompt: vote first (POST .../arena/vote), then continue with a side, or "
            "start a new battle (POST /v1/arena/battles)",
            code="arena_battle",
        )
    raise Conflict("continue with A or B first: POST .../arena/continue", code="choose_side")


def post_message(state: ChatState, draft: Draft, *asks: Ask) -> Decision:
    """Post a message (at the end of the active path, or as an edit: a sibling of the edited message)
    and ask for a reply to it from each ask (side by side: siblings that see the same path to it).

    In a chat with bots a post asks for nothing: the conductor gives the bots their turns."""
    _alive(state)
    if state.messages:  # a battle's opening prompt is the arena's (routes_arena.py); any other is refused
        battle_post(state)
    if state.has_bots:
        asks = ()
    if draft.edit_of is not None:
        not_in_battle(state, "edit")
        edited = state.tree.nodes.get(draft.edit_of)
        if edited is None or edited.kind != "message":
            raise NotFound(f"no message {draft.edit_of} in chat {state.chat_id}")
        parent = edited.parent or None
    else:
        parent = state.tree.leaf()
    message = MessagePosted(
        event_id=new_id("e"),
        chat_id=state.chat_id,
        at=now(),
        message_id=new_id("m"),
        author_id=draft.author_id,
        content=draft.content,
        images=draft.images,
        parent_id=parent,
        edit_of=draft.edit_of,
        author_name=draft.author_name,
    )
    context = [*context_ids(state, parent), message.message_id]
    replies = tuple(_request(state, message.message_id, context, ask) for ask in asks)
    return Decision(events=(message, *replies), fence=post_fence(state))


def regenerated_message(state: ChatState, reply_id: str) -> str:
    """The message a regeneration of `reply_id` answers again (checks the reply is in the chat)."""
    _alive(state)
    node = state.tree.nodes.get(reply_id)
    if node is None or node.kind != "reply":
        raise NotFound(f"no reply {reply_id} in chat {state.chat_id}")
    not_in_battle(state, "regenerate")
    return node.parent


def regenerate(state: ChatState, reply_id: str, ask: Ask) -> Decision:
    """Ask again: a sibling of the reply, answering the same message with the same path before it."""
    message_id = regenerated_message(state, reply_id)
    return Decision(events=(_request(state, message_id, context_ids(state, message_id), ask),))


def select_branch(state: ChatState, node_id: str, by: str) -> Decision:
    """Make the path to a message or reply the active branch."""
    if node_id not in state.tree.nodes:
        raise NotFound(f"no message or reply {node_id} in chat {state.chat_id}")
    not_in_battle(state, "branch selection")
    event = BranchSelected(event_id=new_id("e"), chat_id=state.chat_id, at=now(), node_id=node_id, by=by)
    return Decision(events=(event,))


@dataclass(frozen=True)
class Erasure:
    """What erasing a chat appends (stops for its open replies, then the tombstone) and releases."""

    cancels: tuple[ReplyCancelled, ...]
    tombstone: ChatErased
    images: list[str]  # every image the chat's messages attached: the image store decides which go


def erase(state: ChatState, by: str) -> Erasure:
    """Erase the chat: stop the replies still being generated, then leave a tombstone."""
    cancels = tuple(
        ReplyCancelled(event_id=new_id("e"), chat_id=state.chat_id, at=now(), reply_id=reply.reply_id, by=by)
        for reply in state.replies.values()
        if reply.open
    )
    tombstone = ChatErased(event_id=new_id("e"), chat_id=state.chat_id, at=now(), by=by)
    return Erasure(cancels=cancels, tombstone=tombstone, images=list(state.images))


def _request(state: ChatState, message_id: str, context: list[str], ask: Ask) -> ReplyRequested:
    return ReplyRequested(
        event_id=new_id("e"),
        chat_id=state.chat_id,
        at=now(),
        reply_id=new_id("r"),
        message_id=message_id,
        model=ask.model,
        params=ask.params,
        context=context,
        requested_by=ask.by,
        speaker=ask.speaker,
    )
