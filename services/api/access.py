"""Who may touch a chat, decided from the CHAT log (never the lagging read model)."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

import msgspec
from aiohttp import web

import bus
from schemas.chat import ChatCreated
from schemas.streams import CHAT
from schemas.subjects import chat_event
from services.api.auth import principal_of
from services.api.errors import ApiError
from services.api.inputs import path_id
from services.api.keys import BUS

_created_decoder = msgspec.json.Decoder(ChatCreated)


@dataclass(frozen=True, slots=True)
class ChatAccess:
    """A chat the caller may use: its creation event and the CHAT sequence of that event."""

    chat: ChatCreated
    created_seq: int
    deleted: bool = False

    @property
    def chat_id(self) -> str:
        """The chat's id."""
        return self.chat.chat_id


def _not_found(chat_id: str) -> ApiError:
    return ApiError(404, "not_found", f"no chat {chat_id}")


async def chat_access(request: web.Request, *, write: bool, deleted_too: bool = False) -> ChatAccess:
    """The `{chat_id}` chat if the caller owns it (or, to read, is an admin); otherwise 404 for all.

    A deleted chat (deleted and not restored since) is a 404 too, unless `deleted_too` (for restoring).
    """
    chat_id = path_id(request, "chat_id")
    principal = principal_of(request)
    js = request.app[BUS].js
    created, deleted, restored = await asyncio.gather(
        bus.last_msg(js, CHAT.name, chat_event(chat_id, "created")),
        bus.last_msg(js, CHAT.name, chat_event(chat_id, "deleted")),
        bus.last_msg(js, CHAT.name, chat_event(chat_id, "restored")),
    )
    is_deleted = deleted is not None and (restored is None or restored.seq < deleted.seq)
    if created is None or (is_deleted and not deleted_too):
        raise _not_found(chat_id)
    try:
        chat = _created_decoder.decode(created.data)
    except msgspec.DecodeError:
        raise _not_found(chat_id) from None
    allowed = chat.owner_id == principal.user_id or (principal.is_admin and not write)
    if not allowed:
        raise _not_found(chat_id)
    return ChatAccess(chat=chat, created_seq=created.seq, deleted=is_deleted)
