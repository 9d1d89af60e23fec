"""Chat events: the facts of one conversation, on subjects `chat.<chat_id>.>` in stream CHAT."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

import msgspec

from schemas.bot import BotSpec
from schemas.job import JobSpec
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
    # Side by side: every message posted is answered by each of these model aliases at once (sibling
    # replies); the owner picks the best (`chat.choice.made`). Empty: one reply from `model`.
    compare: list[str] = []
    session_id: str = ""  # a jobs session's chat (origin "jobs"): the caller's session id (schemas/job.py)
    # A blind battle of the arena (docs/arena.md): `compare` holds the two models drawn, side A then side
    # B. Until the vote, what the voter reads of the chat is schemas/blind.py's view (labels "A"/"B", no
    # alias, no worker); the log itself keeps the truth for the reveal and for admins.
    arena: bool = False
    category: str = ""  # the battle's category (a tag the user gives its prompt; "" for none)


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
    # The author's name as the chat's bots see it ("Ana: ..."); "" from versions before it was recorded.
    author_name: str = ""


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
    # The participant who speaks (`chat.participant.joined.participant_id`): the model sees the chat from
    # that bot's seat (schemas/chat_state.py). "": the chat's own model, as in a one-model chat.
    speaker: str = ""
    job: JobSpec | None = (
        None  # asked as a job (schemas/job.py): its deadline, attempts, callback, batch line
    )


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
    # The request's `speaker` (a bot participant), copied so that a reader of completions alone (the
    # worker building a prompt) knows whose turn each answer was.
    speaker: str = ""


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


class ReplyRetrying(ChatEvent, frozen=True, kw_only=True, tag="chat.reply.retrying"):
    """An attempt at a job failed for a reason that is not the input's (an engine error); it is asked
    again after `retry_in_s` (exponential backoff). Subject `chat.<chat_id>.reply.<reply_id>.retrying`.

    A worker that died mid-attempt leaves no event: the next attempt's `reply.started` (a higher
    `attempt`, after the consumer's ack wait) is the sign of it.
    """

    reply_id: str
    attempt: int
    worker_id: str
    code: str
    error: str
    retry_in_s: float


class WebhookAttempted(ChatEvent, frozen=True, kw_only=True, tag="chat.reply.webhook"):
    """One delivery of a finished job to its `callback_url`: the HTTP status (0: no answer) or the error,
    and whether more deliveries follow. Subject `chat.<chat_id>.reply.<reply_id>.webhook`."""

    reply_id: str
    delivery: int  # 1, 2, ... for this job
    status: int
    error: str = ""
    final: bool  # delivered (2xx), or the last try


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


class ParticipantJoined(ChatEvent, frozen=True, kw_only=True, tag="chat.participant.joined"):
    """A bot joined the chat, as it was then (`bot`: a copy; later edits of the bot do not change it).

    Subject `chat.<chat_id>.participant.joined`. Its name is unique among the chat's participants.
    """

    participant_id: str
    bot_id: str = ""  # the bot store's bot it was copied from ("" for one defined in the chat only)
    bot: BotSpec
    by: str


class ParticipantLeft(ChatEvent, frozen=True, kw_only=True, tag="chat.participant.left"):
    """A participant left: it speaks no more; its turns stay. Subject `chat.<chat_id>.participant.left`."""

    participant_id: str
    by: str


class ParticipantMuted(ChatEvent, frozen=True, kw_only=True, tag="chat.participant.muted"):
    """The moderator muted (or unmuted) a participant: a muted one is skipped when turns are given.

    Subject `chat.<chat_id>.participant.muted`.
    """

    participant_id: str
    muted: bool = True
    by: str


Policy = Literal["manual", "round_robin", "mention", "auto"]


class Floor(msgspec.Struct, frozen=True, kw_only=True):
    """Who speaks when, in a chat with bots (the conductor applies it; schemas/floor.py).

    - `manual`: only the moderator names the next speaker.
    - `round_robin`: after a human message each unmuted bot answers once, in the order they joined;
      `rounds` > 1 lets them go round again.
    - `mention`: a bot speaks when the last turn @names it (a human's message or another bot's reply).
    - `auto`: the bots keep the conversation going, in order, until `max_bot_turns`.
    `max_bot_turns` caps the bot turns in a row without a human message (every policy);
    `delay_s` is the pause between turns (a bot's own delay adds to it).
    """

    policy: Policy = "round_robin"
    rounds: Annotated[int, msgspec.Meta(ge=1, le=100)] = 1
    max_bot_turns: Annotated[int, msgspec.Meta(ge=1, le=1000)] = 10
    delay_s: Annotated[float, msgspec.Meta(ge=0.0, le=600.0)] = 0.0


class FloorSet(ChatEvent, frozen=True, kw_only=True, tag="chat.floor.set"):
    """The turn policy and its limits, set at creation or changed while the chat runs.

    Subject `chat.<chat_id>.floor.set`.
    """

    floor: Floor
    by: str


class FloorPaused(ChatEvent, frozen=True, kw_only=True, tag="chat.floor.paused"):
    """The moderator paused the chat: no new bot turn starts until `floor.resumed`. The running turn
    finishes, unless `cancel_running` (then a `reply.cancelled` follows).

    Subject `chat.<chat_id>.floor.paused`.
    """

    by: str
    cancel_running: bool = False


class FloorResumed(ChatEvent, frozen=True, kw_only=True, tag="chat.floor.resumed"):
    """The moderator resumed a paused chat: turns go on where they stopped.

    Subject `chat.<chat_id>.floor.resumed`.
    """

    by: str


class FloorStopped(ChatEvent, frozen=True, kw_only=True, tag="chat.floor.stopped"):
    """The moderator stopped the bots' run: the running turn is cancelled and no bot speaks again until
    a human posts (or the moderator names a speaker). Subject `chat.<chat_id>.floor.stopped`."""

    by: str


class SpeakerNamed(ChatEvent, frozen=True, kw_only=True, tag="chat.floor.next"):
    """The moderator named who speaks next (under any policy; while paused, after the resume).

    Subject `chat.<chat_id>.floor.next`.
    """

    participant_id: str
    by: str


class ChoiceMade(ChatEvent, frozen=True, kw_only=True, tag="chat.choice.made"):
    """The user picked the best of a message's side-by-side replies: it becomes the active branch, and a
    preference (chosen over `rejected`) for the preference export. A later choice for the same message
    replaces it. Subject `chat.<chat_id>.choice.made`.
    """

    message_id: str
    reply_id: str
    rejected: list[str]
    by: str


Vote = Literal["A", "B", "tie", "both_bad"]
Side = Literal["A", "B"]


class ArenaVoted(ChatEvent, frozen=True, kw_only=True, tag="chat.arena.voted"):
    """The voter judged a battle's two sides: A better, B better, a tie, or both bad. It reveals the
    models (it names them) and ends the battle; there is one per battle. Subject `chat.<chat_id>.arena.voted`.

    The leaderboard counts it unless the voter's votes are excluded (`arena.voter.<user_id>.excluded`).
    `tokens_a`/`tokens_b` are the completion tokens of each side's answers, the length control's covariate.
    """

    voter_id: str
    vote: Vote
    model_a: str
    model_b: str
    replies_a: list[str]  # side A's answered replies in the battle, in order (B's likewise)
    replies_b: list[str]
    tokens_a: int
    tokens_b: int
    category: str = ""


class ArenaContinued(ChatEvent, frozen=True, kw_only=True, tag="chat.arena.continued"):
    """After the vote, the voter goes on with one side's model alone: the chat becomes a one-model chat of
    `model`, on the branch of that side's last answer. Subject `chat.<chat_id>.arena.continued`."""

    side: Side
    model: str
    reply_id: str  # the side's last answer: the active branch from now on
    by: str


class ArenaTagged(ChatEvent, frozen=True, kw_only=True, tag="chat.arena.tagged"):
    """The battle's category was set (by its voter or an admin); the last one holds.
    Subject `chat.<chat_id>.arena.tagged`."""

    category: str
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
    | ReplyRetrying
    | WebhookAttempted
    | BranchSelected
    | FeedbackGiven
    | ChatRestored
    | ChatErased
    | ParticipantJoined
    | ParticipantLeft
    | ParticipantMuted
    | FloorSet
    | FloorPaused
    | FloorResumed
    | FloorStopped
    | SpeakerNamed
    | ChoiceMade
    | ArenaVoted
    | ArenaContinued
    | ArenaTagged
)
