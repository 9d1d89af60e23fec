"""Checking what a chat with bots or a side-by-side chat is made of: the bots (each usable by the caller,
names unique in the chat) and the models (2 to 4 served aliases), before anything is appended."""

from __future__ import annotations

from aiohttp import web

from logtools.bots import read_bot
from schemas.api import CreateChatRequest
from schemas.chat import ParticipantJoined
from schemas.chat_decide import Decision
from schemas.chat_state import Participant, name_key
from schemas.party_decide import Joining
from schemas.queries import ParticipantInfo
from services.api.auth import principal_of
from services.api.errors import ApiError
from services.api.keys import BUS, MODEL_DEFAULTS

COMPARE_MIN, COMPARE_MAX = 2, 4


async def usable_bot(request: web.Request, bot_id: str) -> Joining:
    """The bot as it is now, if the caller may use it (404 otherwise, as for a bot that does not exist)."""
    principal = principal_of(request)
    bot = await read_bot(request.app[BUS].js, bot_id)
    if bot is None or not bot.usable_by(principal.user_id, admin=principal.is_admin):
        raise ApiError(404, "not_found", f"no bot {bot_id}")
    return Joining(bot_id=bot_id, bot=bot.spec)


async def chat_bots(request: web.Request, body: CreateChatRequest) -> list[Joining]:
    """The bots a new chat starts with (400 for a body that mixes bots and side by side, repeats a bot or a
    name, or sets a floor without bots)."""
    if body.bots and body.compare:
        raise ApiError(400, "bad_request", "a chat has bots or compares models side by side, not both")
    if body.floor is not None and not body.bots:
        raise ApiError(400, "bad_request", "a floor needs bots: name them in `bots`")
    if len(set(body.bots)) != len(body.bots):
        raise ApiError(400, "bad_request", "`bots` names a bot twice")
    joining = [await usable_bot(request, bot_id) for bot_id in body.bots]
    names = [name_key(one.bot.name) for one in joining]
    if len(set(names)) != len(names):
        raise ApiError(400, "bad_request", "two of the bots have the same name: names are unique in a chat")
    return joining


async def compare_models(request: web.Request, aliases: list[str]) -> list[str]:
    """The models of a side-by-side chat ([] for none): 2 to 4 different aliases, each served now (400)."""
    if not aliases:
        return []
    if not COMPARE_MIN <= len(aliases) <= COMPARE_MAX:
        raise ApiError(
            400, "bad_request", f"`compare` takes {COMPARE_MIN} to {COMPARE_MAX} models, not {len(aliases)}"
        )
    if len(set(aliases)) != len(aliases):
        raise ApiError(400, "bad_request", "`compare` names a model twice")
    for alias in aliases:
        if await request.app[MODEL_DEFAULTS].of(alias) is None:
            raise ApiError(400, "unknown_model", f"no worker serves {alias!r} right now; see GET /v1/models")
    return list(aliases)


def joined(decision: Decision) -> list[ParticipantInfo]:
    """The participants a decision adds, as the API shows them."""
    return [
        ParticipantInfo(
            participant_id=event.participant_id,
            bot_id=event.bot_id,
            name=event.bot.name,
            model=event.bot.model,
            muted=False,
            has_left=False,
        )
        for event in decision.events
        if isinstance(event, ParticipantJoined)
    ]


def participant_info(participant: Participant) -> ParticipantInfo:
    """A participant as the API shows it."""
    return ParticipantInfo(
        participant_id=participant.participant_id,
        bot_id=participant.bot_id,
        name=participant.name,
        model=participant.bot.model,
        muted=participant.muted,
        has_left=participant.left,
    )
