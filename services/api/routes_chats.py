"""Chat routes: create, list, read, rename, delete, post a message, cancel a reply."""

from __future__ import annotations

from collections.abc import Callable

from aiohttp import web

import bus
import schemas
from bus import StoredMsg
from identity.erasure import erase_chat
from logtools.chat_log import ChatBusy, decide_and_append, read_chat_state
from schemas import chat_decide as decide
from schemas.api import (
    AcceptedResponse,
    ChatCreatedResponse,
    CreateChatRequest,
    PostMessageRequest,
    PostMessageResponse,
    RegenerateRequest,
    RenameChatRequest,
    SelectBranchRequest,
)
from schemas.chat import (
    ChatCreated,
    ChatDeleted,
    ChatRenamed,
    ChatRestored,
    ReplyCancelled,
    ReplyCompleted,
    ReplyFailed,
    ReplyRequested,
)
from schemas.chat_decide import Ask, Decision, Draft, Refused
from schemas.chat_state import ChatState
from schemas.ids import is_valid_id, new_id
from schemas.queries import ChatAnswer, ChatPage, GetChat, ListChats, ListMessages, MessagesAnswer
from schemas.sampling import SamplingParams
from schemas.streams import CHAT
from schemas.subjects import chat_event, one_reply
from services.api.access import ChatAccess, chat_access
from services.api.auth import principal_of
from services.api.errors import ApiError, json_response
from services.api.inputs import path_id, query_int, query_str, read_body
from services.api.keys import BUS, MODEL_DEFAULTS, SETTINGS
from services.api.projector import min_seq_of, query
from services.api.routes_images import unseen_images

DEFAULT_PAGE_SIZE = 50
ORIGINS = ("chat", "openai")


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
        min_seq=await min_seq_of(request),
        origin=_origin(request),
    )
    return json_response(await query(request, "chats.list", question, ChatPage))


def _origin(request: web.Request) -> str | None:
    """The `origin` filter of a chat list: `chat` by default, `all` for every front door."""
    origin = query_str(request, "origin", max_length=32) or "chat"
    if origin == "all":
        return None
    if origin not in ORIGINS:
        raise ApiError(400, "bad_parameter", f"origin must be one of {', '.join(ORIGINS)} or all")
    return origin


async def get_chat(request: web.Request) -> web.StreamResponse:
    """One chat as the read model holds it (at least as new as `min_seq`)."""
    access = await chat_access(request, write=False)
    min_seq = await min_seq_of(request, access.created_seq)
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
    """Delete a chat: hidden from every read (the log keeps it; an admin can restore it)."""
    access = await chat_access(request, write=True)
    event = ChatDeleted(
        event_id=new_id("e"), chat_id=access.chat_id, at=schemas.now(), by=principal_of(request).user_id
    )
    appended = await bus.append_event(request.app[BUS].js, event)
    return json_response(AcceptedResponse(seq=appended.seq))


async def restore_chat(request: web.Request) -> web.StreamResponse:
    """Admins: bring a deleted chat back to its owner."""
    if not principal_of(request).is_admin:
        raise ApiError(403, "forbidden", "restoring chats is for administrators")
    access = await chat_access(request, write=False, deleted_too=True)
    if not access.deleted:
        raise ApiError(409, "not_deleted", f"chat {access.chat_id} is not deleted")
    event = ChatRestored(
        event_id=new_id("e"), chat_id=access.chat_id, at=schemas.now(), by=principal_of(request).user_id
    )
    appended = await bus.append_event(request.app[BUS].js, event)
    return json_response(AcceptedResponse(seq=appended.seq))


async def list_messages(request: web.Request) -> web.StreamResponse:
    """A page of a chat's messages and replies in stream order (at least as new as `min_seq`); the whole
    chat when it fits one page, else follow `next_cursor`."""
    access = await chat_access(request, write=False)
    min_seq = await min_seq_of(request, access.created_seq)
    limit_max = request.app[SETTINGS].max_page_size
    question = ListMessages(
        chat_id=access.chat_id,
        min_seq=min_seq,
        user_id=principal_of(request).user_id,
        limit=query_int(request, "limit", limit_max, low=1, high=limit_max),
        cursor=query_str(request, "cursor"),
    )
    return json_response(await query(request, "messages.list", question, MessagesAnswer))


async def _checked_draft(
    request: web.Request, access: ChatAccess, body: PostMessageRequest, edit_of: str | None = None
) -> tuple[Draft, Ask]:
    """Validate a message body (length, images, model served now): the draft, and the reply to ask for
    (the model alias; the body's sampling, else the model's defaults)."""
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
    ask = await _ask(request, body.model or access.chat.model, body.params)
    draft = Draft(author_id=principal.user_id, content=body.content, images=images, edit_of=edit_of)
    return draft, ask


async def _ask(request: web.Request, wanted: str | None, params: SamplingParams | None) -> Ask:
    """The reply to ask for: the alias and its sampling (else its defaults); 409 when none is named or
    no worker serves it."""
    model = wanted or request.app[SETTINGS].default_model
    if not model or not is_valid_id(model):
        raise ApiError(
            409, "no_model", "name a model: neither the message nor the chat has one, nor a default"
        )
    served = await request.app[MODEL_DEFAULTS].of(model)
    if served is None:
        raise ApiError(409, "model_unavailable", f"no worker serves {model!r} right now; see GET /v1/models")
    params = params or served.defaults
    refused = served.refuses(params)
    if refused is not None:
        raise ApiError(400, "max_new_tokens_too_large", f"params.max_new_tokens: {refused}")
    return Ask(model=model, params=params, by=principal_of(request).user_id)


async def _decide(
    request: web.Request,
    chat_id: str,
    decision_of: Callable[[ChatState], Decision],
    state: ChatState | None = None,
) -> tuple[Decision, int]:
    """Decide on the chat (`state` first, if read already) and append (fenced, again on a conflict): the
    decision and its last event's sequence. A refusal is a 404, a chat that stays busy a 409."""
    try:
        decision, appended = await decide_and_append(request.app[BUS].js, chat_id, decision_of, state)
    except Refused as exc:
        raise ApiError(404, "not_found", str(exc)) from None
    except ChatBusy:
        raise ApiError(409, "conflict", "the chat is busy with other posts; retry") from None
    return decision, appended[-1].seq


async def post_message(request: web.Request) -> web.StreamResponse:
    """Post a user message at the end of the active branch and request a reply (202)."""
    access = await chat_access(request, write=True)
    body = await read_body(request, PostMessageRequest)
    draft, ask = await _checked_draft(request, access, body)
    return await _post_and_request(request, access, draft, ask)


async def edit_message(request: web.Request) -> web.StreamResponse:
    """Edit a user message: a new sibling of it (a new branch from its parent) and a reply to that (202)."""
    access = await chat_access(request, write=True)
    body = await read_body(request, PostMessageRequest)
    draft, ask = await _checked_draft(request, access, body, edit_of=path_id(request, "message_id"))
    return await _post_and_request(request, access, draft, ask)


async def _post_and_request(
    request: web.Request, access: ChatAccess, draft: Draft, ask: Ask
) -> web.StreamResponse:
    decision, seq = await _decide(
        request, access.chat_id, lambda state: decide.post_message(state, draft, ask)
    )
    return await _reply_requested(request, access, decision.one(ReplyRequested), seq)


async def _reply_requested(
    request: web.Request, access: ChatAccess, reply: ReplyRequested, seq: int
) -> web.StreamResponse:
    """202 for a requested reply (once sure the chat was not erased meanwhile)."""
    await _not_erased_meanwhile(request, access.chat_id)
    answer = PostMessageResponse(
        chat_id=access.chat_id,
        message_id=reply.message_id,
        reply_id=reply.reply_id,
        model=reply.model,
        seq=seq,
    )
    return json_response(answer, status=202)


async def _not_erased_meanwhile(request: web.Request, chat_id: str) -> None:
    """If the chat was erased while we wrote to it, erase what we wrote too (and say the chat is gone)."""
    if await bus.last_msg(request.app[BUS].js, CHAT.name, chat_event(chat_id, "erased")) is not None:
        await erase_chat(request.app[BUS], chat_id, principal_of(request).user_id)
        raise ApiError(404, "not_found", f"no chat {chat_id}")


async def regenerate_reply(request: web.Request) -> web.StreamResponse:
    """Ask again: a sibling of the reply to the same message, maybe from another model or sampling (202)."""
    access = await chat_access(request, write=True)
    reply_id = path_id(request, "reply_id")
    body = await read_body(request, RegenerateRequest)
    state = await read_chat_state(request.app[BUS].js, access.chat_id)
    try:
        decide.regenerated_message(state, reply_id)  # a missing reply is a 404 before a missing model a 409
    except Refused as exc:
        raise ApiError(404, "not_found", str(exc)) from None
    ask = await _ask(request, body.model or access.chat.model, body.params)
    decision, seq = await _decide(
        request, access.chat_id, lambda state: decide.regenerate(state, reply_id, ask), state
    )
    return await _reply_requested(request, access, decision.one(ReplyRequested), seq)


async def select_branch(request: web.Request) -> web.StreamResponse:
    """Make the path to a message or reply the chat's active branch."""
    access = await chat_access(request, write=True)
    body = await read_body(request, SelectBranchRequest)
    by = principal_of(request).user_id
    _, seq = await _decide(
        request, access.chat_id, lambda state: decide.select_branch(state, body.node_id, by)
    )
    return json_response(AcceptedResponse(seq=seq))


def _decode(msg: StoredMsg) -> schemas.Event | None:
    # None for a newer version's event, or one that does not belong on its subject
    return bus.decode_one(msg.subject, msg.data)


async def cancel_reply(request: web.Request) -> web.StreamResponse:
    """Ask the worker to stop a reply (202); cancelling twice is harmless, a finished reply is 409."""
    access = await chat_access(request, write=True)
    reply_id = path_id(request, "reply_id")
    js = request.app[BUS].js
    last = await bus.last_msg(js, CHAT.name, one_reply(access.chat_id, reply_id))
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
