"""Chat routes: create, list, read, rename, delete, post a message, cancel a reply."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

from aiohttp import web

import bus
import schemas
from bus import StoredMsg
from identity.erasure import erase_chat
from logtools.chat_log import ChatBusy, append_decision, decide_and_append, read_chat_state
from schemas import chat_decide as decide
from schemas import party_decide
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
from schemas.blind import blind_chat, blind_messages
from schemas.chat import (
    ChatCreated,
    ChatDeleted,
    ChatRenamed,
    ChatRestored,
    MessagePosted,
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
from services.api import party
from services.api.access import ChatAccess, chat_access
from services.api.auth import principal_of
from services.api.blind_reads import battle_blind, blinded_page
from services.api.errors import ApiError, json_response
from services.api.inputs import path_id, query_int, query_str, read_body
from services.api.keys import BUS, MODEL_DEFAULTS, SETTINGS
from services.api.projector import min_seq_of, query
from services.api.refusal import refusal
from services.api.routes_images import unseen_images

DEFAULT_PAGE_SIZE = 50
ORIGINS = ("chat", "openai", "arena", "jobs", "batch")


async def create_chat(request: web.Request) -> web.StreamResponse:
    """Create a chat owned by the caller (201): with one model, with bots, or side by side."""
    principal = principal_of(request)
    body = await read_body(request, CreateChatRequest)
    joining = await party.chat_bots(request, body)
    compare = await party.compare_models(request, body.compare)
    model = compare[0] if compare else body.model or request.app[SETTINGS].default_model
    event = ChatCreated(
        event_id=new_id("e"),
        chat_id=new_id("c"),
        at=schemas.now(),
        owner_id=principal.user_id,
        title=body.title,
        model=model,
        system_prompt=body.system_prompt,
        compare=compare,
    )
    js = request.app[BUS].js
    appended = await bus.append_event(js, event, expected_subject_seq=0)
    seq, participants = appended.seq, []
    if joining:
        state = ChatState(event.chat_id)
        state.apply(appended.seq, event)
        floor = body.floor.floor() if body.floor is not None else None
        decision = party_decide.join(state, joining, principal.user_id, floor)
        seq = (await append_decision(js, decision))[-1].seq
        participants = party.joined(decision)
    answer = ChatCreatedResponse(
        chat_id=event.chat_id,
        owner_id=event.owner_id,
        title=event.title,
        model=event.model,
        seq=seq,
        participants=participants,
        compare=compare,
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
    page = await query(request, "chats.list", question, ChatPage)
    return json_response(await blinded_page(request, page))


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
    blind = await battle_blind(request, access.chat)
    return json_response(answer.chat if blind is None else blind_chat(answer.chat, blind))


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
    blind = await battle_blind(request, access.chat)
    answer = await query(request, "messages.list", question, MessagesAnswer)
    return json_response(answer if blind is None else blind_messages(answer, blind))


async def checked_draft(request: web.Request, body: PostMessageRequest, edit_of: str | None = None) -> Draft:
    """Validate a message body (length, images): the draft."""
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
    # The user's name is how bots address them (user ids are the names people log in with).
    return Draft(
        author_id=principal.user_id,
        content=body.content,
        images=images,
        edit_of=edit_of,
        author_name=principal.user_id,
    )


async def _asks(
    request: web.Request, access: ChatAccess, state: ChatState, body: PostMessageRequest
) -> list[Ask]:
    """The replies a post asks for (each model served now, else 409): none in a chat with bots (they take
    turns), one per model side by side, else one of the body's model (or the chat's: a battle that went
    on with a side asks that side's model; a battle's own post is routes_arena.py's)."""
    try:
        decide.battle_post(state)  # a voted battle goes on with one side: refused before asking anyone
    except Refused as exc:
        raise refusal(exc) from None
    if state.has_bots or state.compare:
        if body.model is not None:
            raise ApiError(400, "bad_request", "this chat's models are fixed: leave out `model`")
        if state.has_bots and body.params is not None:
            raise ApiError(
                400, "bad_request", "in a chat with bots each bot has its sampling: leave out `params`"
            )
        return [await served_ask(request, alias, body.params) for alias in state.compare]
    return [await served_ask(request, body.model or state.model, body.params)]


async def served_ask(request: web.Request, wanted: str | None, params: SamplingParams | None) -> Ask:
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


async def decided(
    request: web.Request,
    chat_id: str,
    decision_of: Callable[[ChatState], Decision],
    state: ChatState | None = None,
) -> tuple[Decision, int]:
    """Decide on the chat (`state` first, if read already) and append (fenced, again on a conflict): the
    decision and its last event's sequence. A refusal is a 404 (a 409 when the chat cannot do it, a 400
    when the request is wrong), a chat that stays busy a 409."""
    try:
        decision, appended = await decide_and_append(request.app[BUS].js, chat_id, decision_of, state)
    except Refused as exc:
        raise refusal(exc) from None
    except ChatBusy:
        raise ApiError(409, "conflict", "the chat is busy with other posts; retry") from None
    return decision, appended[-1].seq


async def post_message(request: web.Request) -> web.StreamResponse:
    """Post a user message at the end of the active branch and request its replies (202)."""
    access = await chat_access(request, write=True)
    body = await read_body(request, PostMessageRequest)
    return await _post(request, access, body)


async def edit_message(request: web.Request) -> web.StreamResponse:
    """Edit a user message: a new sibling of it (a new branch from its parent) and its replies (202)."""
    access = await chat_access(request, write=True)
    body = await read_body(request, PostMessageRequest)
    return await _post(request, access, body, edit_of=path_id(request, "message_id"))


async def _post(
    request: web.Request, access: ChatAccess, body: PostMessageRequest, edit_of: str | None = None
) -> web.StreamResponse:
    draft = await checked_draft(request, body, edit_of)
    state = await read_chat_state(request.app[BUS].js, access.chat_id)
    blind = await battle_blind(request, access.chat)
    asks = await _asks(request, access, state, body)
    decision, seq = await decided(
        request, access.chat_id, lambda state: decide.post_message(state, draft, *asks), state
    )
    await _not_erased_meanwhile(request, access.chat_id)
    replies = [event for event in decision.events if isinstance(event, ReplyRequested)]
    one = replies[0] if len(replies) == 1 else None
    answer = PostMessageResponse(
        chat_id=access.chat_id,
        message_id=decision.one(MessagePosted).message_id,
        reply_id=one.reply_id if one is not None else None,
        model=one.model if one is not None and blind is None else "",
        seq=seq,
        reply_ids=[reply.reply_id for reply in replies],
    )
    return json_response(answer, status=202)


async def _reply_requested(
    request: web.Request, access: ChatAccess, reply: ReplyRequested, seq: int
) -> web.StreamResponse:
    """202 for a requested reply (once sure the chat was not erased meanwhile)."""
    await _not_erased_meanwhile(request, access.chat_id)
    blind = await battle_blind(request, access.chat)
    answer = PostMessageResponse(
        chat_id=access.chat_id,
        message_id=reply.message_id,
        reply_id=reply.reply_id,
        model=reply.model if blind is None else "",
        seq=seq,
        reply_ids=[reply.reply_id],
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
        raise refusal(exc) from None
    ask = await _regenerate_ask(request, access, state, reply_id, body)
    decision, seq = await decided(
        request, access.chat_id, lambda state: decide.regenerate(state, reply_id, ask), state
    )
    return await _reply_requested(request, access, decision.one(ReplyRequested), seq)


async def _regenerate_ask(
    request: web.Request, access: ChatAccess, state: ChatState, reply_id: str, body: RegenerateRequest
) -> Ask:
    """Ask again of the body's model and sampling, else the chat's model and the model's defaults; in a
    chat with bots or side by side, else the reply's own (its speaker, model and sampling)."""
    original = state.replies[reply_id].request
    if original is None or not (state.has_bots or state.compare):
        return await served_ask(request, body.model or state.model, body.params)
    ask = await served_ask(request, body.model or original.model, body.params or original.params)
    return replace(ask, speaker=original.speaker)


async def select_branch(request: web.Request) -> web.StreamResponse:
    """Make the path to a message or reply the chat's active branch."""
    access = await chat_access(request, write=True)
    body = await read_body(request, SelectBranchRequest)
    by = principal_of(request).user_id
    _, seq = await decided(
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
