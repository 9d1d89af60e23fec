"""Routes of chats with bots and side-by-side chats: bots join and leave, the moderator's floor actions,
and choosing the best of a message's side-by-side replies. Every write is a decision on the chat's state
(schemas/party_decide.py), appended under a fence on the whole chat."""

from __future__ import annotations

from aiohttp import web

from schemas import party_decide
from schemas.api import (
    AcceptedResponse,
    FloorActionRequest,
    FloorActionResponse,
    JoinRequest,
    ParticipantResponse,
)
from schemas.chat import ReplyCancelled
from schemas.chat_decide import Decision
from schemas.party_decide import ACTIONS, FloorAction
from services.api import party
from services.api.access import chat_access
from services.api.auth import principal_of
from services.api.errors import ApiError, json_response
from services.api.inputs import path_id, read_body
from services.api.routes_chats import decided


async def join(request: web.Request) -> web.StreamResponse:
    """A bot you may use joins the chat, as it is now (201)."""
    access = await chat_access(request, write=True)
    body = await read_body(request, JoinRequest)
    joining = await party.usable_bot(request, body.bot_id)
    by = principal_of(request).user_id
    decision, seq = await decided(
        request, access.chat_id, lambda state: party_decide.join(state, [joining], by)
    )
    answer = ParticipantResponse(participant=party.joined(decision)[0], seq=seq)
    return json_response(answer, status=201)


async def leave(request: web.Request) -> web.StreamResponse:
    """A participant leaves the chat (its turn still running is cancelled; its turns stay)."""
    access = await chat_access(request, write=True)
    participant_id = path_id(request, "participant_id")
    by = principal_of(request).user_id
    decision, seq = await decided(
        request, access.chat_id, lambda state: party_decide.leave(state, participant_id, by)
    )
    return json_response(_accepted(decision, seq))


async def floor_action(request: web.Request) -> web.StreamResponse:
    """A moderator's action on a chat with bots (202): pause, resume, stop, next, mute, unmute, set."""
    access = await chat_access(request, write=True)
    body = await read_body(request, FloorActionRequest)
    if body.action not in ACTIONS:
        raise ApiError(400, "bad_action", f"action must be one of {', '.join(ACTIONS)}, not {body.action!r}")
    act = FloorAction(
        action=body.action,
        participant=body.participant,
        cancel_running=body.cancel_running,
        floor=body.floor.floor() if body.floor is not None else None,
    )
    by = principal_of(request).user_id
    decision, seq = await decided(
        request, access.chat_id, lambda state: party_decide.moderate(state, act, by)
    )
    return json_response(_accepted(decision, seq), status=202)


async def choose(request: web.Request) -> web.StreamResponse:
    """Choose a side-by-side reply over its siblings: the active branch, and a preference for export."""
    access = await chat_access(request, write=True)
    reply_id = path_id(request, "reply_id")
    by = principal_of(request).user_id
    _, seq = await decided(request, access.chat_id, lambda state: party_decide.choose(state, reply_id, by))
    return json_response(AcceptedResponse(seq=seq))


def _accepted(decision: Decision, seq: int) -> FloorActionResponse:
    return FloorActionResponse(
        accepted=[type(event).__struct_config__.tag for event in decision.events],  # type: ignore[misc]
        cancelled=[event.reply_id for event in decision.events if isinstance(event, ReplyCancelled)],
        seq=seq,
    )
