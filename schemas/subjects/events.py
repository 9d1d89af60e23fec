"""The subject each event is appended on (and so the one event a subject may carry), and every root
token and event kind of chatbus's subjects."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, get_args

from schemas.arena import ArenaEventUnion, PoolSet, VoterExcluded
from schemas.batch import BatchCancelled, BatchCreated, BatchEventUnion, BatchExpanded, FileUploaded
from schemas.bot import BotCreated, BotDeleted, BotEventUnion, BotUpdated
from schemas.chat import (
    ArenaContinued,
    ArenaTagged,
    ArenaVoted,
    BranchSelected,
    ChatCreated,
    ChatDeleted,
    ChatErased,
    ChatEventUnion,
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
    WebhookAttempted,
)
from schemas.identity import (
    ApiKeyIssued,
    ApiKeyRevoked,
    IdentityEventUnion,
    PasswordSet,
    TrainingConsentSet,
    UserCreated,
    UserErased,
    UserRoleChanged,
)
from schemas.image import ImageEventUnion, ImagePurged, ImageStored
from schemas.subjects.arena import ARENA_KINDS, arena_pool, voter_excluded
from schemas.subjects.batch import BATCH_KINDS, FILE_KINDS, batch_event, file_uploaded
from schemas.subjects.bot import BOT_KINDS, bot_event
from schemas.subjects.chat import (
    BATCH_LANE,
    CHAT_KINDS,
    REPLY_KINDS,
    Lane,
    chat_event,
    feedback,
    reply_event,
    reply_requested,
    reply_tokens,
)
from schemas.subjects.identity import APIKEY_KINDS, USER_KINDS, apikey_event, user_event
from schemas.subjects.image import ImageKind, image_purged, image_stored
from schemas.subjects.kv import KV_ROOT
from schemas.subjects.nats_api import DEFAULT_INBOX_PREFIX, JS_ROOT, WORKER_INBOX_PREFIX
from schemas.subjects.roots import (
    APIKEY_ROOT,
    ARENA_ROOT,
    BATCH_FILE_ROOT,
    BATCH_ROOT,
    BOT_ROOT,
    CHAT_ROOT,
    GROUP_ROOT,
    IMAGE_ROOT,
    TOKENS_ROOT,
    USER_ROOT,
)
from schemas.tokens import TokenDelta

Event = (
    ChatEventUnion
    | IdentityEventUnion
    | ImageEventUnion
    | BotEventUnion
    | ArenaEventUnion
    | BatchEventUnion
    | TokenDelta
)


# Each event type and the subject it is appended on: a table, not a `match`, because every reader
# checks every event it decodes against it (a lookup costs ~0.2 µs an event, the match ~0.8).
_SUBJECT_OF: dict[type, Callable[[Any], str]] = {
    ChatCreated: lambda e: chat_event(e.chat_id, "created"),
    ChatRenamed: lambda e: chat_event(e.chat_id, "renamed"),
    ChatDeleted: lambda e: chat_event(e.chat_id, "deleted"),
    ChatRestored: lambda e: chat_event(e.chat_id, "restored"),
    ChatErased: lambda e: chat_event(e.chat_id, "erased"),
    MessagePosted: lambda e: chat_event(e.chat_id, "message.posted"),
    BranchSelected: lambda e: chat_event(e.chat_id, "branch.selected"),
    ReplyRequested: lambda e: reply_requested(e.chat_id, e.reply_id, e.model, lane_of(e)),
    ReplyStarted: lambda e: reply_event(e.chat_id, e.reply_id, "started"),
    ReplyCompleted: lambda e: reply_event(e.chat_id, e.reply_id, "completed"),
    ReplyFailed: lambda e: reply_event(e.chat_id, e.reply_id, "failed"),
    ReplyCancelled: lambda e: reply_event(e.chat_id, e.reply_id, "cancelled"),
    ReplyRetrying: lambda e: reply_event(e.chat_id, e.reply_id, "retrying"),
    WebhookAttempted: lambda e: reply_event(e.chat_id, e.reply_id, "webhook"),
    FeedbackGiven: lambda e: feedback(e.chat_id, e.reply_id, e.user_id),
    ParticipantJoined: lambda e: chat_event(e.chat_id, "participant.joined"),
    ParticipantLeft: lambda e: chat_event(e.chat_id, "participant.left"),
    ParticipantMuted: lambda e: chat_event(e.chat_id, "participant.muted"),
    FloorSet: lambda e: chat_event(e.chat_id, "floor.set"),
    FloorPaused: lambda e: chat_event(e.chat_id, "floor.paused"),
    FloorResumed: lambda e: chat_event(e.chat_id, "floor.resumed"),
    FloorStopped: lambda e: chat_event(e.chat_id, "floor.stopped"),
    SpeakerNamed: lambda e: chat_event(e.chat_id, "floor.next"),
    ChoiceMade: lambda e: chat_event(e.chat_id, "choice.made"),
    ArenaVoted: lambda e: chat_event(e.chat_id, "arena.voted"),
    ArenaContinued: lambda e: chat_event(e.chat_id, "arena.continued"),
    ArenaTagged: lambda e: chat_event(e.chat_id, "arena.tagged"),
    PoolSet: lambda e: arena_pool(),
    VoterExcluded: lambda e: voter_excluded(e.user_id),
    BotCreated: lambda e: bot_event(e.bot_id, "created"),
    BotUpdated: lambda e: bot_event(e.bot_id, "updated"),
    BotDeleted: lambda e: bot_event(e.bot_id, "deleted"),
    BatchCreated: lambda e: batch_event(e.batch_id, "created"),
    BatchExpanded: lambda e: batch_event(e.batch_id, "expanded"),
    BatchCancelled: lambda e: batch_event(e.batch_id, "cancelled"),
    FileUploaded: lambda e: file_uploaded(e.file_id),
    UserCreated: lambda e: user_event(e.user_id, "created"),
    UserRoleChanged: lambda e: user_event(e.user_id, "role_changed"),
    TrainingConsentSet: lambda e: user_event(e.user_id, "consent"),
    PasswordSet: lambda e: user_event(e.user_id, "password"),
    UserErased: lambda e: user_event(e.user_id, "erased"),
    ApiKeyIssued: lambda e: apikey_event(e.key_id, "issued"),
    ApiKeyRevoked: lambda e: apikey_event(e.key_id, "revoked"),
    ImageStored: lambda e: image_stored(e.sha256, e.uploaded_by),
    ImagePurged: lambda e: image_purged(e.sha256),
    TokenDelta: lambda e: reply_tokens(e.chat_id, e.reply_id),
}


def lane_of(request: ReplyRequested) -> Lane:
    """The lane a reply request goes on: a batch's line on the batch lane, anything else interactive."""
    return BATCH_LANE if request.job is not None and request.job.batch_id else ""


def subject_of(event: Event) -> str:
    """The subject an event is appended on."""
    build = _SUBJECT_OF.get(type(event))
    if build is None:
        raise TypeError(f"not an event: {event!r}")
    return build(event)


def belongs(subject: str, event: Event) -> bool:
    """Whether `event` may be read from `subject`: the rule every reader applies (bus/decode.py).

    A subject carries exactly one event type, of the ids it names: the subject `subject_of` gives
    the event. So a publisher allowed `chat.*.reply.*.completed` can append nothing but a reply's
    completion there: a `chat.message.posted` body on it (a system message slipped into someone
    else's prompt), a `chat.erased`, or a completion naming another chat or reply is misfiled, and
    readers skip it.
    """
    build = _SUBJECT_OF.get(type(event))
    return build is not None and build(event) == subject


# Every root token a subject (or subject pattern) of chatbus starts with; tests/test_subject_spelling.py
# refuses a subject spelled by hand anywhere else with one of these.
ROOTS: tuple[str, ...] = (
    CHAT_ROOT,
    TOKENS_ROOT,
    USER_ROOT,
    APIKEY_ROOT,
    GROUP_ROOT,
    IMAGE_ROOT,
    BOT_ROOT,
    ARENA_ROOT,
    BATCH_ROOT,
    BATCH_FILE_ROOT,
    KV_ROOT,
    JS_ROOT,
    "$O",
    "$SRV",
    DEFAULT_INBOX_PREFIX,
    WORKER_INBOX_PREFIX,
)
# Every event kind a subject ends with (`.completed`, `.posted`, ...): a hand-written
# `subject.endswith(".completed")` is refused too.
KINDS: frozenset[str] = frozenset(
    kind.rsplit(".", 1)[-1]
    for kind in CHAT_KINDS
    | REPLY_KINDS
    | USER_KINDS
    | APIKEY_KINDS
    | BOT_KINDS
    | ARENA_KINDS
    | BATCH_KINDS
    | FILE_KINDS
) | frozenset(get_args(ImageKind))
