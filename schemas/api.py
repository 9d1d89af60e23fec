"""The REST API's request and response bodies. Requests refuse unknown fields."""

from __future__ import annotations

from typing import Annotated, Literal

import msgspec

from schemas.chat import Floor
from schemas.ids import ID_PATTERN
from schemas.image import Sha256
from schemas.queries import ParticipantInfo
from schemas.sampling import SamplingParams

MAX_TITLE = 200
MAX_SYSTEM_PROMPT = 8_000
MAX_IMAGES_PER_MESSAGE = 8
MAX_URL = 2_048
MAX_BOTS_PER_CHAT = 16
ModelAlias = Annotated[str, msgspec.Meta(pattern=ID_PATTERN)]
Title = Annotated[str, msgspec.Meta(min_length=1, max_length=MAX_TITLE)]
Id = Annotated[str, msgspec.Meta(pattern=ID_PATTERN)]


class FloorBody(Floor, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """A chat's turn policy and limits, as a request sends it (the fields of schemas.chat.Floor)."""

    def floor(self) -> Floor:
        """As the event carries it."""
        return Floor(
            policy=self.policy, rounds=self.rounds, max_bot_turns=self.max_bot_turns, delay_s=self.delay_s
        )


class CreateChatRequest(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """POST /v1/chats: a chat with one model; or with bots (`bots`, which take turns as `floor` says);
    or side by side (`compare`: 2 to 4 model aliases that answer every message)."""

    title: Title = "New chat"
    model: ModelAlias | None = None
    system_prompt: Annotated[str, msgspec.Meta(max_length=MAX_SYSTEM_PROMPT)] = ""
    bots: Annotated[list[Id], msgspec.Meta(max_length=MAX_BOTS_PER_CHAT)] = []
    floor: FloorBody | None = None
    compare: Annotated[list[ModelAlias], msgspec.Meta(max_length=8)] = []


class JoinRequest(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """POST /v1/chats/{chat_id}/participants: a bot (that you may use) joins the chat."""

    bot_id: Id


class FloorActionRequest(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """POST /v1/chats/{chat_id}/floor: a moderator's action.

    `action`: pause (with `cancel_running` to stop the running turn too), resume, stop, next, mute,
    unmute (these three name a `participant`: its name or participant id), or set (a new `floor`)."""

    action: Annotated[str, msgspec.Meta(max_length=16)]
    participant: Annotated[str, msgspec.Meta(max_length=128)] = ""
    cancel_running: bool = False
    floor: FloorBody | None = None


class RenameChatRequest(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """PATCH /v1/chats/{chat_id}."""

    title: Title


class PostMessageRequest(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """POST /v1/chats/{chat_id}/messages; the content length limit is a setting.

    `images` are sha256 hashes of images the caller stored (POST /v1/images); content may be empty
    when there are images.
    """

    content: str = ""
    images: Annotated[list[Sha256], msgspec.Meta(max_length=MAX_IMAGES_PER_MESSAGE)] = []
    model: ModelAlias | None = None
    params: SamplingParams | None = None


class RegenerateRequest(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """POST /v1/chats/{chat_id}/replies/{reply_id}/regenerate: optionally another model or sampling."""

    model: ModelAlias | None = None
    params: SamplingParams | None = None


class SelectBranchRequest(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """POST /v1/chats/{chat_id}/branch: make the path to this message or reply the active one."""

    node_id: Annotated[str, msgspec.Meta(pattern=ID_PATTERN)]


class FeedbackRequest(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """PUT /v1/chats/{chat_id}/replies/{reply_id}/feedback: your rating (null withdraws it)."""

    rating: Literal["up", "down"] | None
    comment: Annotated[str, msgspec.Meta(max_length=2_000)] = ""
    tags: Annotated[
        list[Annotated[str, msgspec.Meta(min_length=1, max_length=40)]], msgspec.Meta(max_length=10)
    ] = []


class ConsentRequest(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """PUT /v1/me/consent: may your chats be used to train models?"""

    allowed: bool


class MeResponse(msgspec.Struct, frozen=True, kw_only=True):
    """GET /v1/me: who you are and whether your chats may be used for training."""

    user_id: str
    role: str
    training_consent: bool
    consent_is_default: bool  # you never chose; the operator's default applies
    csrf_token: str = ""  # with a browser session: the token its writes must send (another tab needs it)


class UserErasedResponse(msgspec.Struct, frozen=True, kw_only=True):
    """POST /v1/admin/users/{user_id}/erase: the chats and bots erased with the user, and the tombstone's
    sequence."""

    user_id: str
    chats: list[str]
    seq: int
    bots: list[str] = []


class LoginRequest(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """POST /v1/login."""

    user: Annotated[str, msgspec.Meta(min_length=1, max_length=64)]
    password: Annotated[str, msgspec.Meta(min_length=1, max_length=1024)]


class RegisterRequest(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """POST /v1/register (when the operator allows self-registration)."""

    user: Annotated[str, msgspec.Meta(min_length=1, max_length=64)]
    password: Annotated[str, msgspec.Meta(min_length=1, max_length=1024)]


class LoginResponse(msgspec.Struct, frozen=True, kw_only=True):
    """A session cookie is set; send `csrf_token` as X-CSRF-Token with every write made with it."""

    user_id: str
    role: str
    csrf_token: str


class ImageFromUrlRequest(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """POST /v1/images/from-url: the server fetches the image (public addresses only)."""

    url: Annotated[str, msgspec.Meta(min_length=1, max_length=MAX_URL)]


class ImageInfo(msgspec.Struct, frozen=True, kw_only=True):
    """201 answer to an image upload: what was stored (the hash is the server's, of the normalised bytes)."""

    sha256: str
    media_type: str
    width: int
    height: int
    size: int
    deduplicated: bool  # you had stored this image before (whether others did is never said)
    url: str


class PostMessageResponse(msgspec.Struct, frozen=True, kw_only=True):
    """202 answer to a posted message: ids and the CHAT sequence of its last event.

    One reply asked: `reply_id` (also the one item of `reply_ids`) and its `model`. In a chat with bots:
    no reply (`reply_id` null, `reply_ids` empty, `model` ""): the bots' turns come as the floor gives
    them. Side by side: `reply_id` null, `reply_ids` one per model, in the chat's `compare` order."""

    chat_id: str
    message_id: str
    reply_id: str | None
    model: str
    seq: int
    reply_ids: list[str] = []


class ParticipantResponse(msgspec.Struct, frozen=True, kw_only=True):
    """201 answer to a bot joining a chat: the participant and the CHAT sequence of its last event."""

    participant: ParticipantInfo
    seq: int


class FloorActionResponse(msgspec.Struct, frozen=True, kw_only=True):
    """202 answer to a moderator's action: the event types appended, in order, the replies it cancelled,
    and the CHAT sequence of its last event."""

    accepted: list[str]
    cancelled: list[str] = []
    seq: int


class AcceptedResponse(msgspec.Struct, frozen=True, kw_only=True):
    """Answer to a write that appended one event."""

    seq: int


class ModelInfo(msgspec.Struct, frozen=True, kw_only=True):
    """A model alias that workers serve now, in OpenAI's model shape plus chatbus's load figures."""

    id: str  # the alias clients name as `model`
    object: str = "model"
    created: int  # Unix time the longest-running worker of the alias started
    owned_by: str = "chatbus"
    workers: int
    active: int
    capacity: int
    images: bool = False  # some worker of this alias shows images to its model
    max_context: int = 0  # tokens of prompt + reply the model takes (0: unknown)
    # What runs it, one entry per distinct setting among its workers: "llama.cpp gguf float16",
    # "transformers float32 int8" (engine, dtype, quantization; empty for a worker too old to say).
    engines: list[str] = []


class ModelList(msgspec.Struct, frozen=True, kw_only=True):
    """GET /v1/models: OpenAI's list shape."""

    object: str = "list"
    data: list[ModelInfo]


class ErrorBody(msgspec.Struct, frozen=True, kw_only=True):
    """Every 4xx/5xx answer: a short machine code and a sentence for people."""

    error: str
    message: str


class ChatCreatedResponse(msgspec.Struct, frozen=True, kw_only=True):
    """201 answer to POST /v1/chats: the new chat and the CHAT sequence of its creation."""

    chat_id: str
    owner_id: str
    title: str
    model: str
    seq: int
    participants: list[ParticipantInfo] = []  # the bots that joined it, in order
    compare: list[str] = []


class StatusResponse(msgspec.Struct, frozen=True, kw_only=True):
    """GET /healthz and /readyz when all is well."""

    status: str
