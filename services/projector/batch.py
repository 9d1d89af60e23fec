"""A batch of events against the read model: the keys it touches (the live projector loads those rows
first), the rows of each table while it is folded, and what it changes."""

from __future__ import annotations

from collections.abc import Container, Sequence
from dataclasses import dataclass, field

from bus import Sequenced
from schemas.chat import (
    ArenaTagged,
    ArenaVoted,
    ChatCreated,
    ChatDeleted,
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
    ReplyRetrying,
    ReplyStarted,
    SpeakerNamed,
)
from schemas.identity import ApiKeyIssued, ApiKeyRevoked, TrainingConsentSet, UserCreated, UserRoleChanged
from services.projector.tables import (
    API_KEYS,
    BATTLES,
    CHATS,
    CHOICES,
    FEEDBACK,
    FLOORS,
    JOBS,
    MESSAGES,
    MUTABLE,
    PARTICIPANTS,
    REPLIES,
    USERS,
    Row,
)


@dataclass
class Keys:
    """The keys of mutable rows that a batch touches, per table name."""

    by_table: dict[str, set[str]] = field(
        default_factory=lambda: {t.name: set() for t in (*MUTABLE, MESSAGES)}
    )


# The keys each event type may change, per table (ReplyCancelled: only a job's cancel_at). A post
# clears a stopped floor; a reply request reads its speaker's name.
_KEYS_OF: dict[type, tuple[tuple[str, str], ...]] = {
    MessagePosted: ((CHATS.name, "chat_id"), (FLOORS.name, "chat_id")),
    ChatCreated: ((CHATS.name, "chat_id"), (BATTLES.name, "chat_id")),
    ChatRenamed: ((CHATS.name, "chat_id"),),
    ChatDeleted: ((CHATS.name, "chat_id"),),
    ReplyRequested: ((REPLIES.name, "reply_id"), (PARTICIPANTS.name, "speaker"), (JOBS.name, "reply_id")),
    ReplyStarted: ((REPLIES.name, "reply_id"), (JOBS.name, "reply_id")),
    ReplyCompleted: ((REPLIES.name, "reply_id"), (JOBS.name, "reply_id")),
    ReplyFailed: ((REPLIES.name, "reply_id"), (JOBS.name, "reply_id")),
    ReplyRetrying: ((JOBS.name, "reply_id"),),
    ReplyCancelled: ((JOBS.name, "reply_id"),),
    UserCreated: ((USERS.name, "user_id"),),
    UserRoleChanged: ((USERS.name, "user_id"),),
    ApiKeyIssued: ((API_KEYS.name, "key_id"),),
    ApiKeyRevoked: ((API_KEYS.name, "key_id"),),
    ChatRestored: ((CHATS.name, "chat_id"),),
    TrainingConsentSet: ((USERS.name, "user_id"),),
    ParticipantJoined: ((PARTICIPANTS.name, "participant_id"),),
    ParticipantLeft: ((PARTICIPANTS.name, "participant_id"),),
    ParticipantMuted: ((PARTICIPANTS.name, "participant_id"),),
    FloorSet: ((FLOORS.name, "chat_id"),),
    FloorPaused: ((FLOORS.name, "chat_id"),),
    FloorResumed: ((FLOORS.name, "chat_id"),),
    FloorStopped: ((FLOORS.name, "chat_id"),),
    SpeakerNamed: ((FLOORS.name, "chat_id"),),
    ChoiceMade: ((CHOICES.name, "message_id"),),
    ArenaVoted: ((BATTLES.name, "chat_id"),),
    ArenaTagged: ((BATTLES.name, "chat_id"),),
}


def feedback_key(e: FeedbackGiven) -> str:
    """The feedback row of a user's rating of a reply."""
    return f"{e.reply_id}:{e.user_id}"


class Rows:
    """Rows of one table during a fold: those loaded from the store and those new in this batch.

    `written` names keys that exist but were not loaded (replay keeps finished replies only in
    the file): a create of one is a repeat, and ignored like any other.
    """

    __slots__ = ("known", "existing", "new", "written")

    def __init__(
        self, existing: dict[str, Row], written: Container[str] = frozenset(), in_place: bool = False
    ) -> None:
        self.existing = existing
        self.known: dict[str, Row] = existing if in_place else dict(existing)
        self.new: list[Row] = []
        self.written = written

    def add(self, key: str, row: Row) -> None:
        """Add a new row unless the key is known already (a repeated create is ignored)."""
        if key not in self.known and key not in self.written:
            self.known[key] = row
            self.new.append(row)

    def drop(self, column: str, value: str) -> None:
        """Forget every row whose `column` is `value` (an erasure; the store deletes the stored ones)."""
        self.known = {k: r for k, r in self.known.items() if r.get(column) != value}
        self.existing = {k: r for k, r in self.existing.items() if r.get(column) != value}
        self.new = [r for r in self.new if r.get(column) != value]


@dataclass
class Changes:
    """What a batch does to the read model: new rows to insert, loaded rows to write back."""

    inserts: dict[str, list[Row]]
    updates: dict[str, list[Row]]
    messages: list[Row]
    events: int
    erased_chats: set[str] = field(default_factory=set)
    erased_users: set[str] = field(default_factory=set)


def touched(events: Sequence[Sequenced]) -> Keys:
    """The keys of users, api keys, chats and replies that these events may change."""
    keys = Keys()
    adders = {
        kind: tuple((keys.by_table[table].add, attr) for table, attr in pairs)
        for kind, pairs in _KEYS_OF.items()
    }
    message_ids = keys.by_table[MESSAGES.name]
    for _, event in events:
        found = adders.get(type(event))
        if found is not None:
            for add, attr in found:
                add(getattr(event, attr))
            if type(event) is MessagePosted:
                message_ids.add(event.message_id)
        elif type(event) is FeedbackGiven:
            keys.by_table[FEEDBACK.name].add(feedback_key(event))
    keys.by_table[PARTICIPANTS.name].discard("")  # replies of the chat's own model have no speaker
    return keys
