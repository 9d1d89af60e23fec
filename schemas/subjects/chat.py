"""A chat's subjects: `chat.<chat_id>.>` (its events, replies and feedback) and its tokens
(`tokens.<chat_id>.<reply_id>`)."""

from __future__ import annotations

from typing import Literal, get_args

import msgspec

from schemas.subjects.roots import ANY, CHAT_ROOT, REST, TOKENS_ROOT, join

# Chat-level events: `chat.<chat_id>.<kind>` (some kinds are two tokens).
ChatKind = Literal[
    "created",
    "renamed",
    "deleted",
    "restored",
    "erased",
    "message.posted",
    "branch.selected",
    "participant.joined",
    "participant.left",
    "participant.muted",
    "floor.set",
    "floor.paused",
    "floor.resumed",
    "floor.stopped",
    "floor.next",
    "choice.made",
    "arena.voted",
    "arena.continued",
    "arena.tagged",
]
# Reply events: `chat.<chat_id>.reply.<reply_id>.<kind>`, and `...requested.<model>` for a request
# (`...requested.<model>.batch` for a batch line's: its own lane, so people are never queued behind a batch).
ReplyKind = Literal["requested", "started", "completed", "failed", "cancelled", "retrying", "webhook"]
ReplyEventKind = Literal["started", "completed", "failed", "cancelled", "retrying", "webhook"]
CHAT_KINDS: frozenset[str] = frozenset(get_args(ChatKind))
REPLY_KINDS: frozenset[str] = frozenset(get_args(ReplyKind))
# Reply events after which nothing of that attempt follows (a cancel is answered by a completion).
REPLY_ENDS: frozenset[str] = frozenset({"completed", "failed"})
_REPLY = "reply"
_REQUESTED: ReplyKind = "requested"
_FEEDBACK = "feedback"
# The lane of a request: "" (interactive: a person waits) or "batch" (a batch's line, served in spare slots).
Lane = Literal["", "batch"]
BATCH_LANE: Lane = "batch"


def chat_event(chat_id: str, kind: ChatKind) -> str:
    """Subject of a chat-level event, e.g. `chat.<chat_id>.created`."""
    return join(CHAT_ROOT, chat_id, kind)


def reply_event(chat_id: str, reply_id: str, kind: ReplyEventKind) -> str:
    """Subject of a reply event, e.g. `chat.<chat_id>.reply.<reply_id>.started`."""
    return join(CHAT_ROOT, chat_id, _REPLY, reply_id, kind)


def reply_requested(chat_id: str, reply_id: str, model: str, lane: Lane = "") -> str:
    """Subject of a reply request; the model alias (then the lane, for a batch line) is last so workers
    filter on it."""
    if lane:
        return join(CHAT_ROOT, chat_id, _REPLY, reply_id, _REQUESTED, model, lane)
    return join(CHAT_ROOT, chat_id, _REPLY, reply_id, _REQUESTED, model)


def any_reply_request(chat_id: str, reply_id: str) -> str:
    """The request of a reply for any model, in either lane: `chat.<chat_id>.reply.<reply_id>.requested.>`
    (`reply_id` may be ANY: every request of the chat)."""
    return join(CHAT_ROOT, chat_id, _REPLY, reply_id, _REQUESTED, REST)


def feedback(chat_id: str, reply_id: str, user_id: str) -> str:
    """Subject of a user's rating of a reply: `chat.<chat_id>.feedback.<reply_id>.<user_id>`."""
    return join(CHAT_ROOT, chat_id, _FEEDBACK, reply_id, user_id)


def all_votes() -> str:
    """Every arena vote of every chat: `chat.*.arena.voted` (what the leaderboard reads)."""
    return chat_event(ANY, "arena.voted")


def one_chat(chat_id: str) -> str:
    """Every event of one chat: `chat.<chat_id>.>`."""
    return join(CHAT_ROOT, chat_id, REST)


def one_reply(chat_id: str, reply_id: str) -> str:
    """Every event of one reply (request, attempts, cancel, end): `chat.<chat_id>.reply.<reply_id>.>`."""
    return join(CHAT_ROOT, chat_id, _REPLY, reply_id, REST)


def context_subjects(chat_id: str) -> list[str]:
    """The subjects of a chat that hold what a prompt is built from (schemas/chat_state.py's rule)."""
    return [
        chat_event(chat_id, "created"),
        chat_event(chat_id, "message.posted"),
        chat_event(chat_id, "participant.joined"),
        reply_event(chat_id, ANY, "completed"),
    ]


def reply_ends_of_every_chat() -> dict[str, str]:
    """Each kind of reply end with its subject over every chat: `chat.*.reply.*.completed`, `...failed`."""
    return {kind: join(CHAT_ROOT, ANY, _REPLY, ANY, kind) for kind in sorted(REPLY_ENDS)}


def reply_requests_of(alias: str, lane: Lane = "") -> str:
    """Every reply request for one model alias in one lane: what the workers serving it pull."""
    return reply_requested(ANY, ANY, alias, lane)


class ChatSubject(msgspec.Struct, frozen=True):
    """A chat-level event's subject, parsed."""

    chat_id: str
    kind: ChatKind


class ReplySubject(msgspec.Struct, frozen=True):
    """A reply event's subject, parsed; `model` and `lane` only for a request."""

    chat_id: str
    reply_id: str
    kind: ReplyKind
    model: str = ""
    lane: Lane = ""


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
    if len(rest) == 5 and rest[2] == _REQUESTED and rest[4] == BATCH_LANE:
        return ReplySubject(chat_id, rest[1], _REQUESTED, model=rest[3], lane=BATCH_LANE)
    return None


def parse_reply_subject(subject: str) -> ReplySubject | None:
    """The parts of a reply event's subject, or None when it is not one."""
    parsed = parse_chat_subject(subject)
    return parsed if isinstance(parsed, ReplySubject) else None


def reply_kind(subject: str) -> ReplyKind | None:
    """The kind of a reply event's subject (`started`, `completed`, ...), or None when it is not one."""
    parsed = parse_reply_subject(subject)
    return parsed.kind if parsed is not None else None


def reply_tokens(chat_id: str, reply_id: str) -> str:
    """Subject of a reply's token deltas."""
    return join(TOKENS_ROOT, chat_id, reply_id)


def chat_tokens(chat_id: str) -> str:
    """The token deltas of every reply of one chat: `tokens.<chat_id>.>`."""
    return join(TOKENS_ROOT, chat_id, REST)


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
