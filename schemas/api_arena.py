"""The REST API's bodies for arena battles (`/v1/arena/battles`, `/v1/chats/{chat_id}/arena/...`):
docs/arena.md tells the flow. Before the vote nothing here names a model: a battle's sides are "A" and "B".
"""

from __future__ import annotations

from typing import Annotated

import msgspec

from schemas.api import MAX_IMAGES_PER_MESSAGE
from schemas.arena_decide import MAX_CATEGORY
from schemas.chat import Side, Vote
from schemas.image import Sha256
from schemas.sampling import SamplingParams

Category = Annotated[str, msgspec.Meta(max_length=MAX_CATEGORY)]


class BattleRequest(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """POST /v1/arena/battles: a prompt for two models drawn from the arena's pool (a message's fields,
    without `model`), and its category ("" for none)."""

    content: str = ""
    images: Annotated[list[Sha256], msgspec.Meta(max_length=MAX_IMAGES_PER_MESSAGE)] = []
    params: SamplingParams | None = None
    category: Category = ""


class BattleCreated(msgspec.Struct, frozen=True, kw_only=True):
    """201 answer to a new battle: its chat, the prompt's message, the two replies (side A's, then B's),
    their labels, the category and the CHAT sequence of the last event. No model is named."""

    chat_id: str
    message_id: str
    reply_ids: list[str]
    labels: list[str]
    category: str
    seq: int


class VoteRequest(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """POST /v1/chats/{chat_id}/arena/vote: A better, B better, a tie, or both bad."""

    vote: Vote


class VoteResponse(msgspec.Struct, frozen=True, kw_only=True):
    """200 answer to a vote: the vote, the models it reveals ({"A": alias, "B": alias}) and its sequence."""

    vote: Vote
    models: dict[str, str]
    seq: int


class ContinueRequest(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """POST /v1/chats/{chat_id}/arena/continue: after the vote, go on with one side's model."""

    side: Side


class ContinueResponse(msgspec.Struct, frozen=True, kw_only=True):
    """200 answer to a continue: the model the chat goes on with, and the sequence of the last event."""

    model: str
    seq: int


class CategoryRequest(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """PUT /v1/chats/{chat_id}/arena/category: the battle's category (a vote records the one current when
    it is cast; "" for none)."""

    category: Category
