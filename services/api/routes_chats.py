"""Chat routes: create, list, read, rename, delete, post a message, cancel a reply."""

from __future__ import annotations

from dataclasses import dataclass

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
    RegenerateRequest,
    RenameChatRequest,
    SelectBranchRequest,
)
from schemas.chat import (
    BranchSelected,
    ChatCreated,
    ChatDeleted,
    ChatEvent,
    ChatRenamed,
    ChatRestored,
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
from schemas.tree import ChatTree
from services.api.access import ChatAccess, chat_access
from services.api.auth import principal_of
from services.api.erase import erase_chat
from services.api.errors import ApiError, json_response
from services.api.inputs import path_id, query_int, query_str, read_body
from services.api.keys import BUS, SETTINGS
from services.api.presence import model_defaults
from services.api.projector import query
from services.api.routes_images import unseen_images

DEFAULT_PAGE_SIZE = 50
ORIGINS = ("chat", "openai")
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


async def erase_chat_route(request: web.Request) -> web.StreamResponse:
    """Erase a chat for good: its events are purged from the log (a tombstone stays), then its images."""
    principal = principal_of(request)
    access = await chat_access(request, write=not principal.is_admin, deleted_too=True)
    erased = await erase_chat(request.app[BUS], access.chat_id, principal.user_id)
    return json_response(AcceptedResponse(seq=erased))


async def list_messages(request: web.Request) -> web.StreamResponse:
    """A chat's messages and replies in order (at least as new as `min_seq`)."""
    access = await chat_access(request, write=False)
    min_seq = max(query_int(request, "min_seq", 0, high=2**63 - 1), access.created_seq)
    answer = await query(
        request,
        "messages.list",
        ListMessages(chat_id=access.chat_id, min_seq=min_seq, user_id=principal_of(request).user_id),
        MessagesAnswer,
    )
    return json_response(answer)


@dataclass
class ChatLog:
    """What posting needs from a chat's log: its tree, which replies completed, the last post's seq."""

    tree: ChatTree
    completed: set[str]
    last_post_seq: int
    messages: dict[str, MessagePosted]
    alive: bool = True  # created and not erased (an erasure may land between the access check and now)

    def context(self, node_id: str | None) -> list[str]:
        """What a model sees after `node_id`: the messages and completed replies of the path to it."""
        if node_id is None:
            return []
        return [n for n in self.tree.path_to(node_id) if n in self.messages or n in self.completed]


async def read_chat_log(js: JetStream, chat_id: str) -> ChatLog:
    """The chat's tree from the log (never the read model, which may lag)."""
    tree = ChatTree()
    completed: set[str] = set()
    messages: dict[str, MessagePosted] = {}
    last_post_seq = 0
    created = erased = False
    created_subject, erased_subject = chat_subject(chat_id, "created"), chat_subject(chat_id, "erased")
    posted_subject = chat_subject(chat_id, "message.posted")
    for msg in await bus.read_all(js, CHAT.name, _context_filters(chat_id)):
        if msg.subject in (created_subject, erased_subject):
            created = created or msg.subject == created_subject
            erased = erased or msg.subject == erased_subject
            continue
        if msg.subject == posted_subject:
            last_post_seq = msg.seq  # by subject: an event this version cannot read still moves the fence
        event = _decode(msg)
        match event:
            case MessagePosted():
                messages[event.message_id] = event
            case ReplyCompleted(reply_id=reply_id, finish_reason=reason) if reason != "error":
                completed.add(reply_id)
        if isinstance(event, ChatEvent):
            tree.apply(msg.seq, event)
    return ChatLog(
        tree=tree,
        completed=completed,
        last_post_seq=last_post_seq,
        messages=messages,
        alive=created and not erased,
    )


def _decode(msg: StoredMsg) -> schemas.Event | None:
    try:
        return schemas.decode_event(msg.data)
    except msgspec.DecodeError:  # written by a newer version: not part of what this version knows
        return None


def _context_filters(chat_id: str) -> list[str]:
    return [
        chat_subject(chat_id, "created"),
        chat_subject(chat_id, "erased"),
        chat_subject(chat_id, "message.posted"),
        f"chat.{chat_id}.reply.*.requested.*",
        reply_subject(chat_id, "*", "completed"),
        chat_subject(chat_id, "branch.selected"),
    ]


@dataclass(frozen=True)
class Draft:
    """A message to post: what the user wrote, and where in the tree it goes."""

    author_id: str
    content: str
    images: list[str]
    edit_of: str | None = None  # an edit of this message (a sibling of it), else the end of the active path


async def _post(js: JetStream, chat_id: str, draft: Draft) -> tuple[MessagePosted, list[str]]:
    """Append the message, fenced on the chat's last post so concurrent posts each see a whole context."""
    for _ in range(POST_ATTEMPTS):
        log = await read_chat_log(js, chat_id)
        if not log.alive:
            raise ApiError(404, "not_found", f"no chat {chat_id}")
        if draft.edit_of is not None:
            edited = log.tree.nodes.get(draft.edit_of)
            if edited is None or edited.kind != "message":
                raise ApiError(404, "not_found", f"no message {draft.edit_of} in chat {chat_id}")
            parent: str | None = edited.parent or None
        else:
            parent = log.tree.leaf()
        message = MessagePosted(
            event_id=new_id("e"),
            chat_id=chat_id,
            at=schemas.now(),
            message_id=new_id("m"),
            author_id=draft.author_id,
            content=draft.content,
            images=draft.images,
            parent_id=parent,
            edit_of=draft.edit_of,
        )
        try:
            await bus.append_event(
                js,
                message,
                expected_subject_seq=log.last_post_seq,
                expected_subject=chat_subject(chat_id, "message.posted"),
            )
        except bus.ConcurrencyConflict:
            continue
        return message, log.context(parent)
    raise ApiError(409, "conflict", "the chat is busy with other posts; retry")


async def _checked_draft(
    request: web.Request, access: ChatAccess, body: PostMessageRequest, edit_of: str | None = None
) -> tuple[Draft, str, SamplingParams]:
    """Validate a message body (length, images, model served now): the draft, the model alias and the
    sampling to ask for (the body's, else the model's defaults)."""
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
    model, defaults = await _served_model(request, body.model or access.chat.model)
    draft = Draft(author_id=principal.user_id, content=body.content, images=images, edit_of=edit_of)
    return draft, model, body.params or defaults


async def _served_model(request: web.Request, wanted: str | None) -> tuple[str, SamplingParams]:
    """The alias to ask and its default sampling; 409 when none is named or no worker serves it."""
    model = wanted or request.app[SETTINGS].default_model
    if not model or not is_valid_id(model):
        raise ApiError(
            409, "no_model", "name a model: neither the message nor the chat has one, nor a default"
        )
    defaults = await model_defaults(request.app[BUS].js, model)
    if defaults is None:
        raise ApiError(409, "model_unavailable", f"no worker serves {model!r} right now; see GET /v1/models")
    return model, defaults


async def _request_reply(
    request: web.Request,
    access: ChatAccess,
    message_id: str,
    context: list[str],
    model: str,
    params: SamplingParams,
) -> tuple[ReplyRequested, int]:
    reply = ReplyRequested(
        event_id=new_id("e"),
        chat_id=access.chat_id,
        at=schemas.now(),
        reply_id=new_id("r"),
        message_id=message_id,
        model=model,
        params=params,
        context=context,
        requested_by=principal_of(request).user_id,
    )
    appended = await bus.append_event(request.app[BUS].js, reply)
    return reply, appended.seq


async def post_message(request: web.Request) -> web.StreamResponse:
    """Post a user message at the end of the active branch and request a reply (202)."""
    access = await chat_access(request, write=True)
    body = await read_body(request, PostMessageRequest)
    draft, model, params = await _checked_draft(request, access, body)
    return await _post_and_request(request, access, draft, model, params)


async def edit_message(request: web.Request) -> web.StreamResponse:
    """Edit a user message: a new sibling of it (a new branch from its parent) and a reply to that (202)."""
    access = await chat_access(request, write=True)
    body = await read_body(request, PostMessageRequest)
    draft, model, params = await _checked_draft(request, access, body, edit_of=path_id(request, "message_id"))
    return await _post_and_request(request, access, draft, model, params)


async def _post_and_request(
    request: web.Request, access: ChatAccess, draft: Draft, model: str, params: SamplingParams
) -> web.StreamResponse:
    message, context = await _post(request.app[BUS].js, access.chat_id, draft)
    reply, seq = await _request_reply(
        request, access, message.message_id, [*context, message.message_id], model, params
    )
    await _not_erased_meanwhile(request, access.chat_id)
    answer = PostMessageResponse(
        chat_id=access.chat_id, message_id=message.message_id, reply_id=reply.reply_id, model=model, seq=seq
    )
    return json_response(answer, status=202)


async def _not_erased_meanwhile(request: web.Request, chat_id: str) -> None:
    """If the chat was erased while we wrote to it, erase what we wrote too (and say the chat is gone)."""
    if await bus.last_msg(request.app[BUS].js, CHAT.name, chat_subject(chat_id, "erased")) is not None:
        await erase_chat(request.app[BUS], chat_id, principal_of(request).user_id)
        raise ApiError(404, "not_found", f"no chat {chat_id}")


async def regenerate_reply(request: web.Request) -> web.StreamResponse:
    """Ask again: a sibling of the reply to the same message, maybe from another model or sampling (202)."""
    access = await chat_access(request, write=True)
    reply_id = path_id(request, "reply_id")
    body = await read_body(request, RegenerateRequest)
    log = await read_chat_log(request.app[BUS].js, access.chat_id)
    if not log.alive:
        raise ApiError(404, "not_found", f"no chat {access.chat_id}")
    node = log.tree.nodes.get(reply_id)
    if node is None or node.kind != "reply":
        raise ApiError(404, "not_found", f"no reply {reply_id} in chat {access.chat_id}")
    model, defaults = await _served_model(request, body.model or access.chat.model)
    reply, seq = await _request_reply(
        request, access, node.parent, log.context(node.parent), model, body.params or defaults
    )
    await _not_erased_meanwhile(request, access.chat_id)
    answer = PostMessageResponse(
        chat_id=access.chat_id, message_id=node.parent, reply_id=reply.reply_id, model=model, seq=seq
    )
    return json_response(answer, status=202)


async def select_branch(request: web.Request) -> web.StreamResponse:
    """Make the path to a message or reply the chat's active branch."""
    access = await chat_access(request, write=True)
    body = await read_body(request, SelectBranchRequest)
    log = await read_chat_log(request.app[BUS].js, access.chat_id)
    if body.node_id not in log.tree.nodes:
        raise ApiError(404, "not_found", f"no message or reply {body.node_id} in chat {access.chat_id}")
    event = BranchSelected(
        event_id=new_id("e"),
        chat_id=access.chat_id,
        at=schemas.now(),
        node_id=body.node_id,
        by=principal_of(request).user_id,
    )
    appended = await bus.append_event(request.app[BUS].js, event)
    return json_response(AcceptedResponse(seq=appended.seq))


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
