"""Queries of the projector micro service `projector` (and the image store's `images.fetch`)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

import msgspec

# The most chats one page holds: the projector caps `ListChats.limit` here, and the API's
# CHATBUS_MAX_PAGE_SIZE may not exceed it (a page is one NATS reply, which must stay under max_payload).
MAX_PAGE_SIZE = 200


class ListChats(msgspec.Struct, frozen=True, kw_only=True):
    """Endpoint `projector.chats.list`: a user's chats, newest first, paged by cursor."""

    user_id: str
    limit: int = 50
    cursor: str | None = None
    min_seq: int = 0
    include_deleted: bool = False
    origin: str | None = "chat"  # only chats made through this front door (None: all)


class ListJobs(msgspec.Struct, frozen=True, kw_only=True):
    """Endpoint `projector.jobs.list`: a user's jobs (GET /v1/jobs), newest first, paged by cursor.

    `status` filters on the status as read at `now` (an open job past its deadline is `expired`)."""

    user_id: str
    session_id: str | None = None
    status: str | None = None
    batch_id: str | None = None  # only the lines of this batch
    now: datetime
    limit: int = 50
    cursor: str | None = None
    min_seq: int = 0


class GetChat(msgspec.Struct, frozen=True, kw_only=True):
    """Endpoint `projector.chats.get`: one chat."""

    chat_id: str
    min_seq: int = 0


# The most bytes of rows one page of messages holds (with one row at least): a message may be long,
# and a page is one NATS reply (max_payload is 1 MiB unless the server says otherwise).
MAX_PAGE_BYTES = 256 * 1024


class ListMessages(msgspec.Struct, frozen=True, kw_only=True):
    """Endpoint `projector.messages.list`: a chat's messages and replies in stream order, a page at a time
    (`limit` rows, at most MAX_PAGE_SIZE and MAX_PAGE_BYTES), and the part of its active path they hold."""

    chat_id: str
    min_seq: int = 0
    user_id: str = ""  # whose ratings to include
    limit: int = MAX_PAGE_SIZE
    cursor: str | None = None  # the previous page's `next_cursor`


class Checkpoints(msgspec.Struct, frozen=True, kw_only=True):
    """Endpoint `projector.status`: the last applied sequence of each stream."""


# A stream sequence: stored in 64 bits (the read model's other integers fit in 32).
Seq = Annotated[int, msgspec.Meta(extra={"bits": 64})]


# The rows below are the read model's rows: the projector's tables (services/projector/tables.py)
# take their columns, in this order, from these fields.
class ChatRow(msgspec.Struct, frozen=True, kw_only=True):
    """A chat as the read model holds it."""

    chat_id: str
    owner_id: str
    title: str
    model: str
    system_prompt: str
    created_at: datetime
    updated_at: datetime
    deleted: bool
    message_count: int
    origin: str = "chat"
    compare: list[str] = []  # side by side: the models that answer every message


class ParticipantInfo(msgspec.Struct, frozen=True, kw_only=True):
    """A bot in a chat (read from the participants table's columns)."""

    participant_id: str
    bot_id: str  # the bot store's bot it was copied from ("" for none)
    name: str
    model: str
    muted: bool
    has_left: bool = msgspec.field(name="left")  # `left` in JSON (a reserved word in SQL)


class FloorInfo(msgspec.Struct, frozen=True, kw_only=True):
    """A chat's turn policy and where the moderator left it (read from the floors table's columns).

    `stopped`: the moderator stopped the bots and no one has posted (or been named to speak) since."""

    policy: str
    rounds: int
    max_bot_turns: int
    delay_s: float
    paused: bool
    stopped: bool


class ChatDetail(ChatRow, frozen=True, kw_only=True):
    """One chat with its bots and their floor (None: a chat without bots)."""

    participants: list[ParticipantInfo] = []
    floor: FloorInfo | None = None


class MessageRow(msgspec.Struct, frozen=True, kw_only=True):
    """A user message as the read model holds it."""

    message_id: str
    chat_id: str
    author_id: str
    role: str
    content: str
    parent_id: str | None
    created_at: datetime
    seq: Seq
    images: list[str] = []  # sha256 of the attached images (GET /v1/images/{sha256})
    edit_of: str | None = None
    speaker: str = ""  # always "" for now: people post messages (a participant id once bots may post)
    speaker_name: str = ""  # the author's name as the chat's bots see it


class ReplyRow(msgspec.Struct, frozen=True, kw_only=True):
    """A reply with its status, token counts and timings."""

    reply_id: str
    chat_id: str
    message_id: str
    model: str
    status: str  # requested | started | completed | failed | cancelled
    attempt: int
    worker_id: str
    text: str
    prompt_tokens: int
    completion_tokens: int
    finish_reason: str
    error: str
    queue_ms: float
    first_token_ms: float
    generation_ms: float
    requested_at: datetime
    completed_at: datetime | None
    seq: Seq
    images_seen: list[str] = []
    images_ignored: list[str] = []  # images of its context the model did not see (text-only, over its limit)
    speaker: str = ""  # the bot participant who spoke it ("": the chat's own model, or a side-by-side one)
    speaker_name: str = ""  # the bot's name, else the model's alias
    # Side by side: True for the reply chosen over its siblings, False for those it was chosen over, None
    # where no choice was made. Not a column: read from the choices table.
    chosen: bool | None = None


class ChatPage(msgspec.Struct, frozen=True, kw_only=True):
    """A page of chats and the cursor of the next page (None at the end)."""

    items: list[ChatRow]
    next_cursor: str | None = None


class ChatAnswer(msgspec.Struct, frozen=True, kw_only=True):
    """Answer to GetChat; `chat` is None when unknown."""

    chat: ChatDetail | None


class PathNode(msgspec.Struct, frozen=True, kw_only=True):
    """A node of the active path, with its siblings (itself included, oldest first) at that fork."""

    node_id: str
    kind: str  # message | reply
    siblings: list[str]


# Read from some of the columns of the read model's feedback table (their names and types must match).
class Rating(msgspec.Struct, frozen=True, kw_only=True):
    """A user's current rating of a reply."""

    reply_id: str
    rating: str | None
    comment: str
    tags: list[str]


class MessagesAnswer(msgspec.Struct, frozen=True, kw_only=True):
    """Answer to ListMessages: a page of the messages and replies (all branches, stream order), the nodes
    of the active path among them (path order: the pages' paths joined are the whole path), the asking
    user's ratings of its replies, and the cursor of the next page (None at the end)."""

    messages: list[MessageRow]
    replies: list[ReplyRow]
    active_path: list[PathNode] = []
    ratings: list[Rating] = []  # the asking user's
    next_cursor: str | None = None


class BattlePairs(msgspec.Struct, frozen=True, kw_only=True):
    """Endpoint `projector.arena.pairs`: how many battles each pair of these models has had (either side)."""

    models: list[str]
    min_seq: int = 0


class PairCount(msgspec.Struct, frozen=True, kw_only=True):
    """Battles between two models (`model_a` < `model_b`: the pair, unordered)."""

    model_a: str
    model_b: str
    battles: int


class PairCounts(msgspec.Struct, frozen=True, kw_only=True):
    """Answer to BattlePairs: the pairs that have met (a pair that never met is absent)."""

    pairs: list[PairCount]


class VotesSince(msgspec.Struct, frozen=True, kw_only=True):
    """Endpoint `projector.arena.votes`: how many battles `voter_id` voted on since `since`."""

    voter_id: str
    since: datetime
    min_seq: int = 0


class VoteCount(msgspec.Struct, frozen=True, kw_only=True):
    """Answer to VotesSince."""

    votes: int


class CheckpointsAnswer(msgspec.Struct, frozen=True, kw_only=True):
    """Answer to Checkpoints: stream name -> last applied sequence."""

    applied: dict[str, int]


class QueryError(msgspec.Struct, frozen=True, kw_only=True):
    """Error answer of any query: `code` is one of bad_request, behind, busy, internal."""

    code: str
    message: str


class FetchImage(msgspec.Struct, frozen=True, kw_only=True):
    """`images.fetch`: fetch `url` for `uploaded_by` and store it; answers ImageInfo."""

    url: str
    uploaded_by: str


class ReleaseImages(msgspec.Struct, frozen=True, kw_only=True):
    """`images.release`: these images lost a reference (an erasure); purge those nothing references now."""

    hashes: list[str]


class ReleasedImages(msgspec.Struct, frozen=True, kw_only=True):
    """Answer to ReleaseImages: the images purged."""

    purged: list[str]


class DigestQuery(msgspec.Struct, frozen=True, kw_only=True):
    """Endpoint `projector.digest`: a consistent digest of the read model and the checkpoints it is at."""

    with_chats: bool = True


class TableDigest(msgspec.Struct, frozen=True, kw_only=True):
    """A table's row count and an order-free hash of its rows."""

    rows: int
    hash: int


class Digest(msgspec.Struct, frozen=True, kw_only=True):
    """A read model's digest at its checkpoints; `chats` maps chat id -> hash of its rows (may be empty)."""

    checkpoints: dict[str, int]
    tables: dict[str, TableDigest]
    chats: dict[str, int] = {}
