"""Erasure for good: a chat (its owner or an admin) or a user (admins); a tombstone stays in the log."""

from __future__ import annotations

from aiohttp import web

from identity.accounts import account_exists
from identity.erasure import erase_chat, erase_user
from schemas.api import AcceptedResponse, UserErasedResponse
from services.api.access import chat_access
from services.api.auth import principal_of
from services.api.errors import ApiError, json_response
from services.api.inputs import path_id
from services.api.keys import BUS


async def erase_chat_route(request: web.Request) -> web.StreamResponse:
    """Erase a chat for good: its events are purged from the log (a tombstone stays), then its images."""
    principal = principal_of(request)
    access = await chat_access(request, write=not principal.is_admin, deleted_too=True)
    erased = await erase_chat(request.app[BUS], access.chat_id, principal.user_id)
    return json_response(AcceptedResponse(seq=erased))


async def erase_user_route(request: web.Request) -> web.StreamResponse:
    """Admins: erase a user and all they wrote (chats, bots, ratings, keys, uploads); a tombstone stays."""
    principal = principal_of(request)
    if not principal.is_admin:
        raise ApiError(403, "forbidden", "erasing users is for administrators")
    user_id = path_id(request, "user_id")
    if user_id == principal.user_id:
        raise ApiError(409, "erase_self", "an administrator cannot erase themselves through their own key")
    if not await account_exists(request.app[BUS].js, user_id):  # an erasure cut short may be finished
        raise ApiError(404, "not_found", f"no user {user_id}")
    erased = await erase_user(request.app[BUS], user_id, principal.user_id)
    answer = UserErasedResponse(user_id=user_id, chats=erased.chats, seq=erased.seq, bots=erased.bots)
    return json_response(answer)
