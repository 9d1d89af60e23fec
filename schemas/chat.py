"""Chat events: the facts of one conversation, on subjects `chat.<chat_id>.>` in stream CHAT."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

import msgspec

from schemas.sampling import SamplingParams

Role = Literal["system", "user", "assistant"]
FinishReason = Literal["stop", "length", "cancelled", "error"]


class ChatEvent(msgspec.Struct, frozen=True, kw_only=True, tag_field="type"):
    """Base of chat events: every event names its chat, its own id and when it happened."""

    event_id: str
    chat_id: str
    at: datetime


class ChatCreated(ChatEvent, frozen=True, kw_only=True, tag="chat.created"):
    """A chat was created by its owner. Subject `chat.<chat_id>.created`."""

    owner_id: str
    title: str
    model: str = ""
    system_prompt: str = ""
    # Which front door made it: "chat" (the web UI and /v1/chats) or "openai" (/v1/chat/completions).
    # Lists show "chat" chats unless asked for others. A str, not a Literal: a new front door
    # must not break old readers.
    origin: str = "chat"
    end_user: str = ""  # the OpenAI `user` field: the API client's own name for its end user


class ChatRenamed(ChatEvent, frozen=True, kw_only=True, tag="chat.renamed"):
    """A chat got a new title. Subject `chat.<chat_id>.renamed`."""

    title: str
    by: str


class ChatDeleted(ChatEvent, frozen=True, kw_only=True, tag="chat.deleted"):
    """A chat was deleted (hidden; the log keeps it). Subject `chat.<chat_id>.deleted`."""

    by: str


class MessagePosted(ChatEvent, frozen=True, kw_only=True, tag="chat.message.posted"):
    """A user (or system) message was posted. Subject `chat.<chat_id>.message.posted`."""

    message_id: str
    author_id: str
    role: Role = "user"
    content: str
    # The node (message or reply) this message follows; None: the end of the active path when it was
    # posted (how messages were appended before branches existed). See schemas/tree.py.
    parent_id: str | None = None
    images: list[str] = []  # sha256 hashes of stored images, in the order the user attached them
    edit_of: str | None = None  # an edit: a new sibling of this message, under parent_id (None: the root)


class ReplyRequested(ChatEvent, frozen=True, kw_only=True, tag="chat.reply.requested"):
    """A reply was asked of a model. Subject `chat.<chat_id>.reply.<reply_id>.requested.<model>`.

    `context` lists, in order, the message and reply ids the model will see.
    """

    reply_id: str
    message_id: str
    model: str
    params: SamplingParams = SamplingParams()
    context: list[str] = []
    requested_by: str
    imported: bool = False  # brought in with its reply by `chatbus admin import`: no worker answers it


class ReplyStarted(ChatEvent, frozen=True, kw_only=True, tag="chat.reply.started"):
    """A worker began an attempt at a reply. Subject `chat.<chat_id>.reply.<reply_id>.started`."""

    reply_id: str
    attempt: int
    worker_id: str
    model: str


class ReplyCompleted(ChatEvent, frozen=True, kw_only=True, tag="chat.reply.completed"):
    """A reply finished (stop, length or cancelled). Subject `chat.<chat_id>.reply.<reply_id>.completed`."""

    reply_id: str
    attempt: int
    worker_id: str
    model: str
    text: str
    prompt_tokens: int
    completion_tokens: int
    finish_reason: FinishReason
    queue_ms: float = 0.0
    first_token_ms: float = 0.0
    generation_ms: float = 0.0
    # Images of the context the model saw, and those it did not (a text-only model, or over its limit).
    images_seen: list[str] = []
    images_ignored: list[str] = []
    # The context's oldest turns (message and reply ids) left out so that the prompt fits the model's
    # window (the system prompt and the newest turn always stay); empty when it saw all of it.
    context_dropped: list[str] = []


class ReplyFailed(ChatEvent, frozen=True, kw_only=True, tag="chat.reply.failed"):
    """A reply could not be produced. Subject `chat.<chat_id>.reply.<reply_id>.failed`."""

    reply_id: str
    attempt: int
    worker_id: str
    error: str
    # What kind of failure, for clients to act on: "context_length_exceeded" (the prompt leaves no room),
    # "invalid_prompt" (the chat template cannot render it), "engine_error", "gave_up" (every delivery
    # failed); "" from versions before it was recorded.
    code: str = ""


class ReplyCancelled(ChatEvent, frozen=True, kw_only=True, tag="chat.reply.cancelled"):
    """Someone asked to stop a reply. Subject `chat.<chat_id>.reply.<reply_id>.cancelled`."""

    reply_id: str
    by: str


class BranchSelected(ChatEvent, frozen=True, kw_only=True, tag="chat.branch.selected"):
    """The path to `node_id` became the chat's active branch. Subject `chat.<chat_id>.branch.selected`."""

    node_id: str
    by: str


Rating = Literal["up", "down"]


class FeedbackGiven(ChatEvent, frozen=True, kw_only=True, tag="chat.feedback.given"):
    """A user rated a reply; a later rating by the same user replaces it (`rating` None withdraws it).

    Subject `chat.<chat_id>.feedback.<reply_id>.<user_id>`: the last one is the user's current rating.
    """

    reply_id: str
    user_id: str
    rating: Rating | None
    comment: str = ""
    tags: list[str] = []


class ChatRestored(ChatEvent, frozen=True, kw_only=True, tag="chat.restored"):
    """An admin brought a deleted chat back. Subject `chat.<chat_id>.restored`."""

    by: str


class ChatErased(ChatEvent, frozen=True, kw_only=True, tag="chat.erased"):
    """Tombstone: every other event of the chat was purged from the log. Subject `chat.<chat_id>.erased`.

    It keeps only the chat id, when and by whom, so that read models drop what they hold.
    """

    by: str


ChatEventUnion = (
    ChatCreated
    | ChatRenamed
    | ChatDeleted
    | MessagePosted
    | ReplyRequested
    | ReplyStarted
    | ReplyCompleted
    | ReplyFailed
    | ReplyCancelled
    | BranchSelected
    | FeedbackGiven
    | ChatRestored
    | ChatErased
)
