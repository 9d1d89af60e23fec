"""The subject each event is appended on, and every root token and event kind of chatbus's subjects."""

from __future__ import annotations

from typing import get_args

from schemas.chat import (
    BranchSelected,
    ChatCreated,
    ChatDeleted,
    ChatErased,
    ChatEventUnion,
    ChatRenamed,
    ChatRestored,
    FeedbackGiven,
    MessagePosted,
    ReplyCancelled,
    ReplyCompleted,
    ReplyFailed,
    ReplyRequested,
    ReplyStarted,
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
from schemas.subjects.chat import (
    CHAT_KINDS,
    REPLY_KINDS,
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
    CHAT_ROOT,
    GROUP_ROOT,
    IMAGE_ROOT,
    TOKENS_ROOT,
    USER_ROOT,
)
from schemas.tokens import TokenDelta

Event = ChatEventUnion | IdentityEventUnion | ImageEventUnion | TokenDelta


def subject_of(event: Event) -> str:
    """The subject an event is appended on."""
    match event:
        case ChatCreated():
            return chat_event(event.chat_id, "created")
        case ChatRenamed():
            return chat_event(event.chat_id, "renamed")
        case ChatDeleted():
            return chat_event(event.chat_id, "deleted")
        case ChatRestored():
            return chat_event(event.chat_id, "restored")
        case ChatErased():
            return chat_event(event.chat_id, "erased")
        case MessagePosted():
            return chat_event(event.chat_id, "message.posted")
        case BranchSelected():
            return chat_event(event.chat_id, "branch.selected")
        case ReplyRequested():
            return reply_requested(event.chat_id, event.reply_id, event.model)
        case ReplyStarted():
            return reply_event(event.chat_id, event.reply_id, "started")
        case ReplyCompleted():
            return reply_event(event.chat_id, event.reply_id, "completed")
        case ReplyFailed():
            return reply_event(event.chat_id, event.reply_id, "failed")
        case ReplyCancelled():
            return reply_event(event.chat_id, event.reply_id, "cancelled")
        case FeedbackGiven():
            return feedback(event.chat_id, event.reply_id, event.user_id)
        case UserCreated():
            return user_event(event.user_id, "created")
        case UserRoleChanged():
            return user_event(event.user_id, "role_changed")
        case TrainingConsentSet():
            return user_event(event.user_id, "consent")
        case PasswordSet():
            return user_event(event.user_id, "password")
        case UserErased():
            return user_event(event.user_id, "erased")
        case ApiKeyIssued():
            return apikey_event(event.key_id, "issued")
        case ApiKeyRevoked():
            return apikey_event(event.key_id, "revoked")
        case ImageStored():
            return image_stored(event.sha256, event.uploaded_by)
        case ImagePurged():
            return image_purged(event.sha256)
        case TokenDelta():
            return reply_tokens(event.chat_id, event.reply_id)
    raise TypeError(f"not an event: {event!r}")


# Every root token a subject (or subject pattern) of chatbus starts with; tests/test_subject_spelling.py
# refuses a subject spelled by hand anywhere else with one of these.
ROOTS: tuple[str, ...] = (
    CHAT_ROOT,
    TOKENS_ROOT,
    USER_ROOT,
    APIKEY_ROOT,
    GROUP_ROOT,
    IMAGE_ROOT,
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
    kind.rsplit(".", 1)[-1] for kind in CHAT_KINDS | REPLY_KINDS | USER_KINDS | APIKEY_KINDS
) | frozenset(get_args(ImageKind))
