"""Ratings of replies: up or down, with a comment and tags (training preferences come from them)."""

from __future__ import annotations

from aiohttp import web

import bus
import schemas
from schemas.api import AcceptedResponse, FeedbackRequest
from schemas.chat import FeedbackGiven
from schemas.ids import new_id
from schemas.streams import CHAT
from schemas.subjects import any_reply_request
from services.api.access import chat_access
from services.api.auth import principal_of
from services.api.errors import ApiError, json_response
from services.api.inputs import path_id, read_body
from services.api.keys import BUS


async def rate_reply(request: web.Request) -> web.StreamResponse:
    """Rate a reply up or down, with an optional comment and tags; rating again replaces it."""
    access = await chat_access(request, write=True)
    reply_id = path_id(request, "reply_id")
    body = await read_body(request, FeedbackRequest)
    js = request.app[BUS].js
    if await bus.last_msg(js, CHAT.name, any_reply_request(access.chat_id, reply_id)) is None:
        raise ApiError(404, "not_found", f"no reply {reply_id} in chat {access.chat_id}")
    event = FeedbackGiven(
        event_id=new_id("e"),
        chat_id=access.chat_id,
        at=schemas.now(),
        reply_id=reply_id,
        user_id=principal_of(request).user_id,
        rating=body.rating,
        comment=body.comment,
        tags=list(body.tags),
    )
    appended = await bus.append_event(js, event)
    return json_response(AcceptedResponse(seq=appended.seq))
