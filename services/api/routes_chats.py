"""Chat routes: create, list, read, rename, delete, post a message, cancel a reply."""

from __future__ import annotations

import msgspec
from aiohttp import web

import bus
import schemas
from bus import JetStream, StoredMsg
from schemas.api import (
    AcceptedResponse,
    ChatCreatedResponse,
    CreateChatRequest,
    PostMessageRequest,
    PostMessageResponse,
    RenameChatRequest,
)
from schemas.chat import (
    ChatCreated,
    ChatDeleted,
    ChatRenamed,
    MessagePosted,
    ReplyCancelled,
    ReplyCompleted,
    ReplyFailed,
    ReplyRequested,
    chat_subject,
    reply_subject,
)
from schemas.ids import is_valid_id, new_id
from schemas.queries import ChatAnswer, ChatPage, GetChat, ListChats, ListMessages, MessagesAnswer
from schemas.sampling import SamplingParams
from schemas.streams import CHAT
from services.api.access import chat_access
from services.api.auth import principal_of
from services.api.errors import ApiError, json_response
from services.api.inputs import path_id, query_int, query_str, read_body
from services.api.keys import BUS, SETTINGS
from services.api.presence import serves
from services.api.projector import query
from services.api.routes_images import unseen_images

DEFAULT_PAGE_SIZE = 50
POST_ATTEMPTS = 5


async def create_chat(request: web.Request) -> web.StreamResponse:
    """Create a chat owned by the caller (201)."""
    principal = principal_of(request)
    body = await read_body(request, CreateChatRequest)
    model = body.model or request.app[SETTINGS].default_model
    event = ChatCreated(
        event_id=new_id("e"),
        chat_id=new_id("c"),
        at=schemas.now(),
        owner_id=principal.user_id,
        title=body.title,
        model=model,
        system_prompt=body.system_prompt,
    )
    appended = await bus.append_event(request.app[BUS].js, event, expected_subject_seq=0)
    answer = ChatCreatedResponse(
        chat_id=event.chat_id, owner_id=event.owner_id, title=event.title, model=event.model, seq=appended.seq
    )
    return json_response(answer, status=201, headers={"Location": f"/v1/chats/{event.chat_id}"})


async def list_chats(request: web.Request) -> web.StreamResponse:
    """The caller's chats, newest first, a page at a time."""
    settings = request.app[SETTINGS]
    limit = query_int(
        request, "limit", min(DEFAULT_PAGE_SIZE, settings.max_page_size), low=1, high=settings.max_page_size
    )
    question = ListChats(
        user_id=principal_of(request).user_id,
        limit=limit,
        cursor=query_str(request, "cursor"),
        min_seq=query_int(request, "min_seq", 0, high=2**63 - 1),
    )
    return json_response(await query(request, "chats.list", question, ChatPage))


async def get_chat(request: web.Request) -> web.StreamResponse:
    """One chat as the read model holds it (at least as new as `min_seq`)."""
    access = await chat_access(request, write=False)
    min_seq = max(query_int(request, "min_seq", 0, high=2**63 - 1), access.created_seq)
    answer = await query(request, "chats.get", GetChat(chat_id=access.chat_id, min_seq=min_seq), ChatAnswer)
    if answer.chat is None:
        raise ApiError(404, "not_found", f"no chat {access.chat_id}")
    return json_response(answer.chat)


async def rename_chat(request: web.Request) -> web.StreamResponse:
    """Give a chat a new title."""
    access = await chat_access(request, write=True)
    body = await read_body(request, RenameChatRequest)
    event = ChatRenamed(
        event_id=new_id("e"),
        chat_id=access.chat_id,
        at=schemas.now(),
        title=body.title,
        by=principal_of(request).user_id,
    )
    appended = await bus.append_event(request.app[BUS].js, event)
    return json_response(AcceptedResponse(seq=appended.seq))


async def delete_chat(request: web.Request) -> web.StreamResponse:
    """Delete a chat (the log keeps it; every read treats it as gone)."""
    access = await chat_access(request, write=True)
    event = ChatDeleted(
        event_id=new_id("e"), chat_id=access.chat_id, at=schemas.now(), by=principal_of(request).user_id
    )
    try:
        appended = await bus.append_event(request.app[BUS].js, event, expected_subject_seq=0)
    except bus.ConcurrencyConflict:
        raise ApiError(404, "not_found", f"no chat {access.chat_id}") from None
    return json_response(AcceptedResponse(seq=appended.seq))


async def list_messages(request: web.Request) -> web.StreamResponse:
    """A chat's messages and replies in order (at least as new as `min_seq`)."""
    access = await chat_access(request, write=False)
    min_seq = max(query_int(request, "min_seq", 0, high=2**63 - 1), access.created_seq)
    answer = await query(
        request, "messages.list", ListMessages(chat_id=access.chat_id, min_seq=min_seq), MessagesAnswer
    )
    return json_response(answer)


def conversation(msgs: list[StoredMsg]) -> tuple[list[str], int]:
    """The ids a model sees (messages, and completed replies, in request order) and the last post's seq."""
    order: dict[str, bool] = {}  # id -> is a message (else a reply), in log order
    completed: set[str] = set()
    last_post_seq = 0
    for msg in msgs:
        match _decode(msg):
            case MessagePosted(message_id=message_id):
                order[message_id] = True
                last_post_seq = msg.seq
            case ReplyRequested(reply_id=reply_id):
                order.setdefault(reply_id, False)
            case ReplyCompleted(reply_id=reply_id, finish_reason=reason) if reason != "error":
                completed.add(reply_id)
    return [item for item, is_message in order.items() if is_message or item in completed], last_post_seq


def _decode(msg: StoredMsg) -> schemas.Event | None:
    try:
        return schemas.decode_event(msg.data)
    except msgspec.DecodeError:  # written by a newer version: not part of what this version knows
        return None


def _context_filters(chat_id: str) -> list[str]:
    return [
        chat_subject(chat_id, "message.posted"),
        f"chat.{chat_id}.reply.*.requested.*",
        reply_subject(chat_id, "*", "completed"),
    ]


async def _post(
    js: JetStream, chat_id: str, author_id: str, content: str, images: list[str]
) -> tuple[MessagePosted, list[str]]:
    """Append the message, fenced on the chat's last post so concurrent posts each see a whole context."""
    for _ in range(POST_ATTEMPTS):
        context, last_post_seq = conversation(await bus.read_all(js, CHAT.name, _context_filters(chat_id)))
        message = MessagePosted(
            event_id=new_id("e"),
            chat_id=chat_id,
            at=schemas.now(),
            message_id=new_id("m"),
            author_id=author_id,
            content=content,
            images=images,
        )
        try:
            await bus.append_event(
                js,
                message,
                expected_subject_seq=last_post_seq,
                expected_subject=chat_subject(chat_id, "message.posted"),
            )
        except bus.ConcurrencyConflict:
            continue
        return message, context
    raise ApiError(409, "conflict", "the chat is busy with other posts; retry")


async def post_message(request: web.Request) -> web.StreamResponse:
    """Post a user message and request a reply from a model that a worker serves now (202)."""
    access = await chat_access(request, write=True)
    body = await read_body(request, PostMessageRequest)
    settings = request.app[SETTINGS]
    if len(body.content) > settings.max_message_chars:
        raise ApiError(
            413,
            "message_too_long",
            f"content has {len(body.content)} characters; the limit is {settings.max_message_chars}",
        )
    if not body.content and not body.images:
        raise ApiError(422, "empty_message", "a message needs content, images, or both")
    principal = principal_of(request)
    js = request.app[BUS].js
    images = list(dict.fromkeys(body.images))  # the same image twice is attached once
    unknown = await unseen_images(js, principal, images)
    if unknown:
        raise ApiError(
            422, "unknown_image", f"no image {unknown[0]} that you stored; upload it with POST /v1/images"
        )
    model = body.model or access.chat.model or settings.default_model
    if not model or not is_valid_id(model):
        raise ApiError(
            409, "no_model", "name a model: neither the message nor the chat has one, nor a default"
        )
    if not await serves(js, model):
        raise ApiError(409, "model_unavailable", f"no worker serves {model!r} right now; see GET /v1/models")
    message, context = await _post(js, access.chat_id, principal.user_id, body.content, images)
    reply = ReplyRequested(
        event_id=new_id("e"),
        chat_id=access.chat_id,
        at=schemas.now(),
        reply_id=new_id("r"),
        message_id=message.message_id,
        model=model,
        params=body.params or SamplingParams(),
        context=[*context, message.message_id],
        requested_by=principal.user_id,
    )
    appended = await bus.append_event(js, reply)
    answer = PostMessageResponse(
        chat_id=access.chat_id,
        message_id=message.message_id,
        reply_id=reply.reply_id,
        model=model,
        seq=appended.seq,
    )
    return json_response(answer, status=202)


async def cancel_reply(request: web.Request) -> web.StreamResponse:
    """Ask the worker to stop a reply (202); cancelling twice is harmless, a finished reply is 409."""
    access = await chat_access(request, write=True)
    reply_id = path_id(request, "reply_id")
    js = request.app[BUS].js
    last = await bus.last_msg(js, CHAT.name, reply_subject(access.chat_id, reply_id, ">"))
    if last is None:
        raise ApiError(404, "not_found", f"no reply {reply_id} in chat {access.chat_id}")
    match _decode(last):
        case ReplyCancelled():
            return json_response(AcceptedResponse(seq=last.seq), status=202)
        case ReplyCompleted() | ReplyFailed():
            raise ApiError(409, "reply_finished", f"reply {reply_id} has already finished")
    event = ReplyCancelled(
        event_id=new_id("e"),
        chat_id=access.chat_id,
        at=schemas.now(),
        reply_id=reply_id,
        by=principal_of(request).user_id,
    )
    appended = await bus.append_event(js, event)
    return json_response(AcceptedResponse(seq=appended.seq), status=202)
