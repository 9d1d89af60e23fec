"""Which arena battles the caller reads blind, decided from the CHAT log (schemas/blind.py holds the rule).

A battle is blind to its voter until `chat.arena.voted` is in the log. The vote is looked up in the log,
never in the lagging read model, so a read model that has not caught up with the vote can only keep a
battle blind a little longer, never reveal it early.
"""

from __future__ import annotations

import asyncio

import msgspec
from aiohttp import web

import bus
from schemas.blind import Blind, blind_for, blind_page
from schemas.chat import ChatCreated
from schemas.queries import ChatPage
from schemas.streams import CHAT
from schemas.subjects import chat_event
from services.api.auth import principal_of
from services.api.keys import BUS

ARENA_ORIGIN = "arena"  # the `origin` of a chat the arena made (a battle)
_created_decoder = msgspec.json.Decoder(ChatCreated)


async def _voted(request: web.Request, chat_id: str) -> bool:
    """Whether the chat's vote is in the log."""
    js = request.app[BUS].js
    return await bus.last_msg(js, CHAT.name, chat_event(chat_id, "arena.voted")) is not None


async def battle_blind(request: web.Request, chat: ChatCreated) -> Blind | None:
    """What the caller must not read of this chat (None: every word of it); a log lookup for a battle of
    the caller's only."""
    reader = principal_of(request).user_id
    if blind_for(chat, False, reader) is None:
        return None  # not a battle, or not its voter: nothing to look up
    return blind_for(chat, await _voted(request, chat.chat_id), reader)


async def _created(request: web.Request, chat_id: str) -> ChatCreated | None:
    msg = await bus.last_msg(request.app[BUS].js, CHAT.name, chat_event(chat_id, "created"))
    if msg is None:
        return None
    try:
        return _created_decoder.decode(msg.data)
    except msgspec.DecodeError:
        return None


async def _row_blind(request: web.Request, chat_id: str) -> Blind | None:
    created, voted = await asyncio.gather(_created(request, chat_id), _voted(request, chat_id))
    return blind_for(created, voted, principal_of(request).user_id)


async def blinded_page(request: web.Request, page: ChatPage) -> ChatPage:
    """A page of the caller's chats with their unvoted battles blind (a log lookup per battle row)."""
    battles = [row.chat_id for row in page.items if row.origin == ARENA_ORIGIN]
    if not battles:
        return page
    found = await asyncio.gather(*(_row_blind(request, chat_id) for chat_id in battles))
    return blind_page(
        page, {chat_id: blind for chat_id, blind in zip(battles, found, strict=True) if blind is not None}
    )
