"""Every NATS subject chatbus uses, built and parsed here and nowhere else.

Subjects put the aggregate id before the event kind (`chat.<chat_id>.message.posted`), so one
pattern (`chat.<chat_id>.>`) is one conversation. Ids are token-safe (`[A-Za-z0-9_-]`): a subject
splits on dots into exactly the tokens its builder joined, which is what makes the parsers exact.

A builder's id arguments may be the wildcards `ANY` (`*`, one token) or `REST` (`>`, the final
tokens) to make a pattern, e.g. `feedback(ANY, ANY, user_id)` is every rating a user gave.
Parsers take a concrete subject and return a typed value, or None when it is not of that shape.

Also here: KV keys that hold several tokens (worker presence), KV and JetStream API subjects,
micro service endpoints and the advisory a worker listens to. What each NATS user may publish and
subscribe to is schemas/permissions.py, built from these builders.
"""

from __future__ import annotations

from typing import Literal, get_args

import msgspec

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
from schemas.tokens import TokenDelta

ANY = "*"  # a wildcard for exactly one token
REST = ">"  # a wildcard for one or more final tokens


def _join(*tokens: str) -> str:
    return ".".join(tokens)


# ---------------------------------------------------------------- the streams' subjects

CHAT_ROOT = "chat"
TOKENS_ROOT = "tokens"
USER_ROOT = "user"
APIKEY_ROOT = "apikey"
GROUP_ROOT = "group"
IMAGE_ROOT = "image"

ALL_CHATS = _join(CHAT_ROOT, REST)
ALL_TOKENS = _join(TOKENS_ROOT, REST)
ALL_USERS = _join(USER_ROOT, REST)
ALL_APIKEYS = _join(APIKEY_ROOT, REST)
ALL_GROUPS = _join(GROUP_ROOT, REST)  # reserved in IDENTITY; no group event exists yet
ALL_IMAGES = _join(IMAGE_ROOT, REST)

# ---------------------------------------------------------------- chat.<chat_id>.>

# Chat-level events: `chat.<chat_id>.<kind>` (some kinds are two tokens).
ChatKind = Literal["created", "renamed", "deleted", "restored", "erased", "message.posted", "branch.selected"]
# Reply events: `chat.<chat_id>.reply.<reply_id>.<kind>`, and `...requested.<model>` for a request.
ReplyKind = Literal["requested", "started", "completed", "failed", "cancelled"]
ReplyEventKind = Literal["started", "completed", "failed", "cancelled"]
CHAT_KINDS: frozenset[str] = frozenset(get_args(ChatKind))
REPLY_KINDS: frozenset[str] = frozenset(get_args(ReplyKind))
# Reply events after which nothing of that attempt follows (a cancel is answered by a completion).
REPLY_ENDS: frozenset[str] = frozenset({"completed", "failed"})
_REPLY = "reply"
_REQUESTED: ReplyKind = "requested"
_FEEDBACK = "feedback"


def chat_event(chat_id: str, kind: ChatKind) -> str:
    """Subject of a chat-level event, e.g. `chat.<chat_id>.created`."""
    return _join(CHAT_ROOT, chat_id, kind)


def reply_event(chat_id: str, reply_id: str, kind: ReplyEventKind) -> str:
    """Subject of a reply event, e.g. `chat.<chat_id>.reply.<reply_id>.started`."""
    return _join(CHAT_ROOT, chat_id, _REPLY, reply_id, kind)


def reply_requested(chat_id: str, reply_id: str, model: str) -> str:
    """Subject of a reply request; the model alias is last so workers filter on it."""
    return _join(CHAT_ROOT, chat_id, _REPLY, reply_id, _REQUESTED, model)


def feedback(chat_id: str, reply_id: str, user_id: str) -> str:
    """Subject of a user's rating of a reply: `chat.<chat_id>.feedback.<reply_id>.<user_id>`."""
    return _join(CHAT_ROOT, chat_id, _FEEDBACK, reply_id, user_id)


def one_chat(chat_id: str) -> str:
    """Every event of one chat: `chat.<chat_id>.>`."""
    return _join(CHAT_ROOT, chat_id, REST)


def one_reply(chat_id: str, reply_id: str) -> str:
    """Every event of one reply (request, attempts, cancel, end): `chat.<chat_id>.reply.<reply_id>.>`."""
    return _join(CHAT_ROOT, chat_id, _REPLY, reply_id, REST)


def context_subjects(chat_id: str) -> list[str]:
    """The subjects of a chat that hold what a prompt is built from (schemas/chat_state.py's rule)."""
    return [
        chat_event(chat_id, "created"),
        chat_event(chat_id, "message.posted"),
        reply_event(chat_id, ANY, "completed"),
    ]


def reply_requests_of(alias: str) -> str:
    """Every reply request for one model alias: what the workers serving it pull."""
    return reply_requested(ANY, ANY, alias)


class ChatSubject(msgspec.Struct, frozen=True):
    """A chat-level event's subject, parsed."""

    chat_id: str
    kind: ChatKind


class ReplySubject(msgspec.Struct, frozen=True):
    """A reply event's subject, parsed; `model` only for a request."""

    chat_id: str
    reply_id: str
    kind: ReplyKind
    model: str = ""


class FeedbackSubject(msgspec.Struct, frozen=True):
    """A rating's subject, parsed."""

    chat_id: str
    reply_id: str
    user_id: str


def parse_chat_subject(subject: str) -> ChatSubject | ReplySubject | FeedbackSubject | None:
    """The parts of a subject in CHAT, or None when it is none of the shapes the builders make."""
    parts = subject.split(".")
    if len(parts) < 3 or parts[0] != CHAT_ROOT:
        return None
    chat_id, rest = parts[1], parts[2:]
    kind = ".".join(rest)
    if kind in CHAT_KINDS:
        return ChatSubject(chat_id, kind)  # type: ignore[arg-type]
    if rest[0] == _FEEDBACK and len(rest) == 3:
        return FeedbackSubject(chat_id, rest[1], rest[2])
    if rest[0] != _REPLY:
        return None
    if len(rest) == 3 and rest[2] in REPLY_KINDS and rest[2] != _REQUESTED:
        return ReplySubject(chat_id, rest[1], rest[2])  # type: ignore[arg-type]
    if len(rest) == 4 and rest[2] == _REQUESTED:
        return ReplySubject(chat_id, rest[1], _REQUESTED, model=rest[3])
    return None


def parse_reply_subject(subject: str) -> ReplySubject | None:
    """The parts of a reply event's subject, or None when it is not one."""
    parsed = parse_chat_subject(subject)
    return parsed if isinstance(parsed, ReplySubject) else None


def reply_kind(subject: str) -> ReplyKind | None:
    """The kind of a reply event's subject (`started`, `completed`, ...), or None when it is not one."""
    parsed = parse_reply_subject(subject)
    return parsed.kind if parsed is not None else None


# ---------------------------------------------------------------- tokens.<chat_id>.<reply_id>


def reply_tokens(chat_id: str, reply_id: str) -> str:
    """Subject of a reply's token deltas."""
    return _join(TOKENS_ROOT, chat_id, reply_id)


def chat_tokens(chat_id: str) -> str:
    """The token deltas of every reply of one chat: `tokens.<chat_id>.>`."""
    return _join(TOKENS_ROOT, chat_id, REST)


class TokensSubject(msgspec.Struct, frozen=True):
    """A token delta's subject, parsed."""

    chat_id: str
    reply_id: str


def parse_tokens_subject(subject: str) -> TokensSubject | None:
    """The chat and reply of a token delta's subject, or None."""
    parts = subject.split(".")
    if len(parts) != 3 or parts[0] != TOKENS_ROOT:
        return None
    return TokensSubject(parts[1], parts[2])


# ---------------------------------------------------------------- user.<user_id>.>, apikey.<key_id>.>

UserKind = Literal["created", "role_changed", "consent", "password", "erased"]
ApiKeyKind = Literal["issued", "revoked"]
USER_KINDS: frozenset[str] = frozenset(get_args(UserKind))
APIKEY_KINDS: frozenset[str] = frozenset(get_args(ApiKeyKind))


def user_event(user_id: str, kind: UserKind) -> str:
    """Subject of a user event, e.g. `user.<user_id>.created`."""
    return _join(USER_ROOT, user_id, kind)


def one_user(user_id: str) -> str:
    """Every identity event of one user: `user.<user_id>.>`."""
    return _join(USER_ROOT, user_id, REST)


def apikey_event(key_id: str, kind: ApiKeyKind) -> str:
    """Subject of an API key event, e.g. `apikey.<key_id>.issued`."""
    return _join(APIKEY_ROOT, key_id, kind)


def one_apikey(key_id: str) -> str:
    """Every event of one API key: `apikey.<key_id>.>`."""
    return _join(APIKEY_ROOT, key_id, REST)


class UserSubject(msgspec.Struct, frozen=True):
    """A user event's subject, parsed."""

    user_id: str
    kind: UserKind


class ApiKeySubject(msgspec.Struct, frozen=True):
    """An API key event's subject, parsed."""

    key_id: str
    kind: ApiKeyKind


def parse_identity_subject(subject: str) -> UserSubject | ApiKeySubject | None:
    """The parts of a subject in IDENTITY, or None."""
    parts = subject.split(".")
    if len(parts) != 3:
        return None
    if parts[0] == USER_ROOT and parts[2] in USER_KINDS:
        return UserSubject(parts[1], parts[2])  # type: ignore[arg-type]
    if parts[0] == APIKEY_ROOT and parts[2] in APIKEY_KINDS:
        return ApiKeySubject(parts[1], parts[2])  # type: ignore[arg-type]
    return None


# ---------------------------------------------------------------- image.<sha256>.>

ImageKind = Literal["stored", "purged"]
_STORED: ImageKind = "stored"
_PURGED: ImageKind = "purged"


def image_stored(sha256: str, uploaded_by: str) -> str:
    """Subject of `uploaded_by`'s stored event of an image: `image.<sha256>.stored.<uploaded_by>`."""
    return _join(IMAGE_ROOT, sha256, _STORED, uploaded_by)


def image_purged(sha256: str) -> str:
    """Subject of an image's purge: `image.<sha256>.purged`."""
    return _join(IMAGE_ROOT, sha256, _PURGED)


def one_image(sha256: str) -> str:
    """One image's whole history: `image.<sha256>.>`."""
    return _join(IMAGE_ROOT, sha256, REST)


class ImageSubject(msgspec.Struct, frozen=True):
    """An image event's subject, parsed; `uploaded_by` only for a stored event."""

    sha256: str
    kind: ImageKind
    uploaded_by: str = ""


def parse_image_subject(subject: str) -> ImageSubject | None:
    """The parts of a subject in IMAGE, or None."""
    parts = subject.split(".")
    if len(parts) == 4 and parts[0] == IMAGE_ROOT and parts[2] == _STORED:
        return ImageSubject(parts[1], _STORED, uploaded_by=parts[3])
    if len(parts) == 3 and parts[0] == IMAGE_ROOT and parts[2] == _PURGED:
        return ImageSubject(parts[1], _PURGED)
    return None


# ---------------------------------------------------------------- the subject of each event

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


# ---------------------------------------------------------------- KV buckets

KV_ROOT = "$KV"
ALL_KEYS = REST  # every key of a bucket


def kv_stream(bucket: str) -> str:
    """The stream that holds a KV bucket."""
    return f"KV_{bucket}"


def object_stream(bucket: str) -> str:
    """The stream that holds an object-store bucket (chunks and metadata)."""
    return f"OBJ_{bucket}"


def kv_prefix(bucket: str) -> str:
    """What a KV bucket's key subjects start with (nats-py's `pre`), the final dot included."""
    return _join(KV_ROOT, bucket, "")


def kv_key(bucket: str, key: str) -> str:
    """The subject a KV key is stored on: `$KV.<bucket>.<key>`."""
    return _join(KV_ROOT, bucket, key)


class KVSubject(msgspec.Struct, frozen=True):
    """A KV key's subject, parsed."""

    bucket: str
    key: str


def parse_kv_subject(subject: str) -> KVSubject | None:
    """The bucket and key of a KV subject, or None."""
    parts = subject.split(".", 2)
    if len(parts) != 3 or parts[0] != KV_ROOT or not parts[2]:
        return None
    return KVSubject(parts[1], parts[2])


# Worker presence, bucket `workers`: key `<alias>.<worker_id>`, so `<alias>.*` is one alias's workers.


def presence_key(alias: str, worker_id: str) -> str:
    """KV key of a worker's presence entry."""
    return _join(alias, worker_id)


def presence_of(alias: str) -> str:
    """The presence keys of every worker serving `alias`."""
    return presence_key(alias, ANY)


class PresenceKey(msgspec.Struct, frozen=True):
    """A presence key, parsed."""

    alias: str
    worker_id: str


def parse_presence_key(key: str) -> PresenceKey | None:
    """The alias and worker of a presence key, or None."""
    parts = key.split(".")
    if len(parts) != 2:
        return None
    return PresenceKey(parts[0], parts[1])


# ---------------------------------------------------------------- micro services, inboxes

# A micro service `<service>` answers endpoint `x.y` on `<service>.x.y` (bus/micro.py).


def service_endpoint(service: str, endpoint: str) -> str:
    """The subject a micro service answers an endpoint on, e.g. `projector.chats.list`."""
    return _join(service, endpoint)


class ServiceSubject(msgspec.Struct, frozen=True):
    """A micro service endpoint's subject, parsed (service names hold no dot, endpoints may)."""

    service: str
    endpoint: str


def parse_service_endpoint(subject: str) -> ServiceSubject | None:
    """The service and endpoint of an endpoint's subject, or None."""
    service, _, endpoint = subject.partition(".")
    if not service or not endpoint:
        return None
    return ServiceSubject(service, endpoint)


DEFAULT_INBOX_PREFIX = "_INBOX"
# Workers take answers on their own inbox prefix, so the `worker` NATS user reads no one else's.
WORKER_INBOX_PREFIX = "_INBOX_worker"


def inboxes(prefix: str) -> str:
    """Every inbox under a prefix: `<prefix>.>`."""
    return _join(prefix, REST)


# ---------------------------------------------------------------- JetStream: advisories and the API

JS_ROOT = "$JS"
_MAX_DELIVERIES = _join(JS_ROOT, "EVENT", "ADVISORY", "CONSUMER", "MAX_DELIVERIES")


def max_deliveries_advisory(stream: str, consumer: str) -> str:
    """Where the server announces that `consumer` gave up on a message of `stream`."""
    return _join(_MAX_DELIVERIES, stream, consumer)


class AdvisorySubject(msgspec.Struct, frozen=True):
    """A max-deliveries advisory's subject, parsed."""

    stream: str
    consumer: str


def parse_max_deliveries_advisory(subject: str) -> AdvisorySubject | None:
    """The stream and consumer of a max-deliveries advisory's subject, or None."""
    head, _, tail = subject.rpartition(".")
    prefix, _, stream = head.rpartition(".")
    if prefix != _MAX_DELIVERIES or not stream or not tail:
        return None
    return AdvisorySubject(stream, tail)


def js_api(operation: str, *args: str) -> str:
    """A JetStream API subject, e.g. `js_api("STREAM.INFO", "CHAT")` is `$JS.API.STREAM.INFO.CHAT`."""
    return _join(JS_ROOT, "API", operation, *args)


def js_acks(stream: str) -> str:
    """The subjects acks of `stream`'s consumers are sent on: `$JS.ACK.<stream>.>`."""
    return _join(JS_ROOT, "ACK", stream, REST)


def js_flow_control(stream: str) -> str:
    """The subjects flow-control replies of `stream`'s push consumers go to: `$JS.FC.<stream>.>`."""
    return _join(JS_ROOT, "FC", stream, REST)


# Every root token a subject (or subject pattern) of chatbus starts with; tests/test_subjects.py
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
