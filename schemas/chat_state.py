"""A chat's state, folded from its events: what the chat holds, and what a model is shown of it.

The API (to decide), the worker (to build a prompt), the export (training data) and the image
store (which images a chat uses) all fold a chat's events into a `ChatState` with `apply`, one
small step per event type, and ask it the same questions. Two rules live here and nowhere else:

- A reply enters later contexts once it has a completion that is not an error (the first such
  completion is its answer; a cancelled reply's partial text counts, a failed reply never does).
- What a model sees (`context_for`): the chat's system prompt, then exactly the messages and
  answered replies that `reply.requested.context` names, in that order. When a reply is asked
  for, that list is `context_ids` of the node it follows: the messages and answered replies on
  the tree path to it (schemas/tree.py holds the tree: branches, edits, the active path).
- A reply with a `speaker` (a bot participant of the chat) sees the chat from that bot's seat:
  schemas/seat.py holds that rule and `context_for`, built on the turns this module gives.

A fold may see only some of a chat's subjects (the worker reads messages and completions, the
image store messages and deletions): each part of the state depends only on its own events.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Literal

import msgspec

from schemas.bot import BotSpec
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
    ReplyRequested,
    ReplyRetrying,
    ReplyStarted,
    Role,
    SpeakerNamed,
)
from schemas.subjects import chat_event
from schemas.tree import ChatTree

ReplyStatus = Literal["requested", "started", "completed", "failed", "cancelled"]
TERMINAL: frozenset[ReplyStatus] = frozenset({"completed", "failed", "cancelled"})


@dataclass
class Reply:
    """A reply of the chat: what was asked, how far the worker got, and its answer."""

    reply_id: str
    request: ReplyRequested | None = None  # None: known only from later events (a partial read)
    status: ReplyStatus = "requested"
    attempt: int = 0
    worker_id: str = ""
    ending: ReplyCompleted | ReplyFailed | None = None  # the terminal event that set the status
    answer: ReplyCompleted | None = None  # the first completion that is not an error: what others see
    stop_asked: bool = False  # someone appended reply.cancelled

    @property
    def open(self) -> bool:
        """Still being worked on and nobody asked it to stop."""
        return self.status not in TERMINAL and not self.stop_asked

    def advance(self, attempt: int) -> bool:
        """Whether an event of `attempt` may move the status: not after an end, nor to an older attempt."""
        return self.status not in TERMINAL and attempt >= self.attempt


@dataclass
class Participant:
    """A bot in the chat: the copy it joined with, and whether the moderator muted it or it left."""

    participant_id: str
    bot: BotSpec
    bot_id: str = ""
    joined_seq: int = 0
    muted: bool = False
    left: bool = False

    @property
    def name(self) -> str:
        return self.bot.name

    @property
    def speaks(self) -> bool:
        """May be given a turn: still in the chat and not muted."""
        return not self.left and not self.muted


@dataclass
class FloorState:
    """The turn policy of a chat with bots and where the moderator left it (each with the seq that set it)."""

    floor: Floor = field(default_factory=Floor)
    paused: bool = False
    paused_seq: int = 0  # of the last floor.paused or floor.resumed
    stopped_seq: int = 0  # of the last floor.stopped (0: never)
    named: SpeakerNamed | None = None  # the moderator's last `floor.next`
    named_seq: int = 0


class Turn(msgspec.Struct, frozen=True, kw_only=True):
    """One message a model is given: its role, text, and attached images (sha256, in order)."""

    role: Role
    content: str
    images: tuple[str, ...] = ()


@dataclass
class ChatState:
    """Everything a chat's events say about it, folded in stream order with `apply`."""

    chat_id: str
    created: ChatCreated | None = None
    title: str = ""
    deleted: bool = False  # deleted and not restored since
    erased: bool = False  # the tombstone: every other event is gone from the log
    tree: ChatTree = field(default_factory=ChatTree)
    messages: dict[str, MessagePosted] = field(default_factory=dict)
    replies: dict[str, Reply] = field(default_factory=dict)
    ratings: dict[str, FeedbackGiven] = field(default_factory=dict)  # reply -> the owner's latest rating
    images: dict[str, None] = field(default_factory=dict)  # every image a message attached, first use first
    participants: dict[str, Participant] = field(default_factory=dict)  # bots, in the order they joined
    floor: FloorState = field(default_factory=FloorState)
    choices: dict[str, ChoiceMade] = field(default_factory=dict)  # message -> its side-by-side choice
    vote: ArenaVoted | None = None  # an arena battle's vote: the reveal (schemas/blind.py)
    continued: ArenaContinued | None = None  # the side a voted battle went on with
    category: str = ""  # an arena battle's category (its creation's, or the last tag since)
    last_seq: int = 0  # of the last event applied or skipped
    last_post_seq: int = 0  # of the last event on the chat's message.posted subject (posts fence on it)

    @property
    def alive(self) -> bool:
        """Created and not erased (deleted chats are alive: they can be restored)."""
        return self.created is not None and not self.erased

    @property
    def owner_id(self) -> str:
        """Who created the chat ("" before its creation is applied)."""
        return self.created.owner_id if self.created is not None else ""

    @property
    def origin(self) -> str:
        """Which front door made the chat ("chat", "openai", "jobs")."""
        return self.created.origin if self.created is not None else ""

    @property
    def has_bots(self) -> bool:
        """A chat with bot participants: the conductor gives the turns, posts ask no reply of their own."""
        return bool(self.participants)

    @property
    def compare(self) -> list[str]:
        """The models that answer each message side by side (empty: not a side-by-side chat, or a battle
        that went on with one side)."""
        if self.created is None or self.continued is not None:
            return []
        return self.created.compare

    @property
    def arena(self) -> bool:
        """An arena battle (blind to its voter until the vote)."""
        return self.created is not None and self.created.arena

    @property
    def model(self) -> str:
        """The model a one-model post asks by default: the chat's, or the side a battle went on with."""
        if self.continued is not None:
            return self.continued.model
        return self.created.model if self.created is not None else ""

    def participant_named(self, name: str) -> Participant | None:
        """The participant of this name (case and spaces ignored), if any."""
        key = name_key(name)
        return next((p for p in self.participants.values() if name_key(p.name) == key), None)

    @property
    def system_prompt(self) -> str:
        """The chat's system prompt ("" for none)."""
        return self.created.system_prompt if self.created is not None else ""

    def apply(self, seq: int, event: ChatEvent) -> None:
        """Fold one event of this chat (events of other chats must not be passed)."""
        self.last_seq = max(self.last_seq, seq)
        self.tree.apply(seq, event)
        match event:
            case ChatCreated():
                if self.created is None:
                    self.created, self.title, self.category = event, event.title, event.category
            case ChatRenamed():
                self.title = event.title
            case ChatDeleted():
                self.deleted = True
            case ChatRestored():
                self.deleted = False
            case ChatErased():
                self.erased = True
            case MessagePosted():
                self._posted(seq, event)
            case ReplyRequested():
                reply = self.reply(event.reply_id)
                if reply.request is None:  # the first request of a reply id wins, as in the tree
                    reply.request = event
            case ReplyStarted():
                self._started(event)
            case ReplyCompleted() | ReplyFailed():
                self._ended(event)
            case ReplyCancelled():
                self.reply(event.reply_id).stop_asked = True
            case ReplyRetrying():
                self._retrying(event)
            case FeedbackGiven() if event.user_id == self.owner_id:
                self.ratings[event.reply_id] = event
            case BranchSelected():
                pass  # the tree's
            case ParticipantJoined() | ParticipantLeft() | ParticipantMuted():
                self._participant(seq, event)
            case FloorSet() | FloorPaused() | FloorResumed() | FloorStopped() | SpeakerNamed():
                self._floor(seq, event)
            case ChoiceMade():
                self.choices[event.message_id] = event
            case ArenaVoted():
                self.vote = self.vote or event  # one vote per battle: the first
            case ArenaContinued():
                self.continued = self.continued or event
            case ArenaTagged():
                self.category = event.category

    def _participant(self, seq: int, event: ParticipantJoined | ParticipantLeft | ParticipantMuted) -> None:
        if isinstance(event, ParticipantJoined):
            if event.participant_id not in self.participants:
                self.participants[event.participant_id] = Participant(
                    event.participant_id, event.bot, bot_id=event.bot_id, joined_seq=seq
                )
            return
        participant = self.participants.get(event.participant_id)
        if participant is None:
            return
        if isinstance(event, ParticipantLeft):
            participant.left = True
        else:
            participant.muted = event.muted

    def _floor(
        self, seq: int, event: FloorSet | FloorPaused | FloorResumed | FloorStopped | SpeakerNamed
    ) -> None:
        floor = self.floor
        match event:
            case FloorSet():
                floor.floor = event.floor
            case FloorPaused() | FloorResumed():
                floor.paused, floor.paused_seq = isinstance(event, FloorPaused), seq
            case FloorStopped():
                floor.stopped_seq = seq
            case SpeakerNamed():
                floor.named, floor.named_seq = event, seq

    def skip(self, seq: int, subject: str) -> None:
        """Note an event this version cannot read: it still moves the fences (a tombstone still counts)."""
        self.last_seq = max(self.last_seq, seq)
        if subject == chat_event(self.chat_id, "message.posted"):
            self.last_post_seq = seq
        elif subject == chat_event(self.chat_id, "erased"):
            self.erased = True

    def _posted(self, seq: int, event: MessagePosted) -> None:
        self.last_post_seq = seq
        if event.message_id not in self.messages:  # the first of a message id wins, as in the tree
            self.messages[event.message_id] = event
            self.images.update(dict.fromkeys(event.images))

    def reply(self, reply_id: str) -> Reply:
        """The reply's state, made on its first event."""
        reply = self.replies.get(reply_id)
        if reply is None:
            reply = self.replies[reply_id] = Reply(reply_id)
        return reply

    def _started(self, event: ReplyStarted) -> None:
        reply = self.reply(event.reply_id)
        if reply.advance(event.attempt):
            reply.status, reply.attempt, reply.worker_id = "started", event.attempt, event.worker_id

    def _retrying(self, event: ReplyRetrying) -> None:
        """A job's failed attempt is asked again: the reply waits (`requested`) from that attempt on."""
        reply = self.reply(event.reply_id)
        if reply.advance(event.attempt):
            reply.status, reply.attempt, reply.worker_id = "requested", event.attempt, event.worker_id

    def _ended(self, event: ReplyCompleted | ReplyFailed) -> None:
        reply = self.reply(event.reply_id)
        if isinstance(event, ReplyCompleted) and event.finish_reason != "error" and reply.answer is None:
            reply.answer = event  # the rule of what enters later contexts: see the module docstring
        if reply.advance(event.attempt):
            reply.status = _status_after(event)
            reply.attempt, reply.worker_id, reply.ending = event.attempt, event.worker_id, event

    def answer(self, reply_id: str) -> ReplyCompleted | None:
        """The reply's answer (its first completion that is not an error), if it has one."""
        reply = self.replies.get(reply_id)
        return reply.answer if reply is not None else None

    def turn(self, node_id: str) -> Turn | None:
        """What a model is given for this message or reply; None for what it never sees."""
        message = self.messages.get(node_id)
        if message is not None:
            return Turn(role=message.role, content=message.content, images=tuple(message.images))
        answer = self.answer(node_id)
        return Turn(role="assistant", content=answer.text) if answer is not None else None

    def held_images(self, *, deleted_too: bool = False) -> dict[str, None]:
        """The images this chat keeps alive: none once erased, or deleted (unless `deleted_too`)."""
        if self.erased or (self.deleted and not deleted_too):
            return {}
        return self.images


def _status_after(event: ReplyCompleted | ReplyFailed) -> ReplyStatus:
    if isinstance(event, ReplyFailed):
        return "failed"
    return "cancelled" if event.finish_reason == "cancelled" else "completed"


def fold(chat_id: str, events: Iterable[tuple[int, ChatEvent]]) -> ChatState:
    """The state of a chat from its (seq, event) pairs in stream order."""
    state = ChatState(chat_id)
    for seq, event in events:
        state.apply(seq, event)
    return state


def context_ids(state: ChatState, node_id: str | None) -> list[str]:
    """The ids a reply after `node_id` is given (its `reply.requested.context`): the messages and
    answered replies on the path to the node, the node included (None: a reply to nothing yet)."""
    if node_id is None:
        return []
    return [node for node in state.tree.path_to(node_id) if state.turn(node) is not None]


def conversation(state: ChatState, node_ids: Iterable[str]) -> list[Turn]:
    """The system prompt (if any), then the turns of `node_ids` in order (ids it never sees are left out)."""
    turns = [Turn(role="system", content=state.system_prompt)] if state.system_prompt else []
    for node_id in node_ids:
        turn = state.turn(node_id)
        if turn is not None:
            turns.append(turn)
    return turns


def name_key(name: str) -> str:
    """A participant's name as mentions and commands match it: case and spaces ignored."""
    return "".join(name.split()).casefold()
