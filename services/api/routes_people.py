"""The caller's own account (training consent) and ratings of replies."""

from __future__ import annotations

import msgspec
from aiohttp import web

import bus
import schemas
from identity.accounts import InvalidUserId, UserExists, add_user, user_role
from identity.erasure import erase_user
from identity.sessions import (
    COOKIE,
    MAX_FAILURES,
    check_password,
    clear_failures,
    count_failure,
    create_session,
    end_session,
    failures,
    password_problem,
    set_password,
)
from schemas.api import (
    AcceptedResponse,
    ConsentRequest,
    FeedbackRequest,
    LoginRequest,
    LoginResponse,
    MeResponse,
    RegisterRequest,
    StatusResponse,
    UserErasedResponse,
)
from schemas.audit import AuditTrail, audit_entries
from schemas.chat import FeedbackGiven
from schemas.identity import TrainingConsentSet
from schemas.ids import new_id
from schemas.streams import CHAT, IDENTITY, SESSIONS_KV
from schemas.subjects import ANY, one_chat, reply_requested, user_event
from services.api.access import chat_access
from services.api.auth import principal_of, session_of
from services.api.errors import ApiError, json_response
from services.api.inputs import path_id, read_body
from services.api.keys import BUS, SETTINGS

_consent_decoder = msgspec.json.Decoder(TrainingConsentSet)


async def consent_of(js: bus.JetStream, user_id: str, default: bool) -> tuple[bool, bool]:
    """The user's training consent from the log, and whether it is the operator's default."""
    last = await bus.last_msg(js, IDENTITY.name, user_event(user_id, "consent"))
    if last is None:
        return default, True
    try:
        return _consent_decoder.decode(last.data).allowed, False
    except msgspec.DecodeError:
        return default, True


async def me(request: web.Request) -> web.StreamResponse:
    """Who you are, and whether your chats may be used to train models."""
    principal = principal_of(request)
    allowed, is_default = await consent_of(
        request.app[BUS].js, principal.user_id, request.app[SETTINGS].training_consent_default
    )
    session = session_of(request)
    return json_response(
        MeResponse(
            user_id=principal.user_id,
            role=principal.role,
            training_consent=allowed,
            consent_is_default=is_default,
            csrf_token=session.csrf if session is not None else "",
        )
    )


async def set_consent(request: web.Request) -> web.StreamResponse:
    """Say whether your chats may be used for training (an event; exports read the latest)."""
    principal = principal_of(request)
    body = await read_body(request, ConsentRequest)
    event = TrainingConsentSet(
        event_id=new_id("e"),
        at=schemas.now(),
        user_id=principal.user_id,
        allowed=body.allowed,
        by=principal.user_id,
    )
    appended = await bus.append_event(request.app[BUS].js, event)
    return json_response(AcceptedResponse(seq=appended.seq))


async def rate_reply(request: web.Request) -> web.StreamResponse:
    """Rate a reply up or down, with an optional comment and tags; rating again replaces it."""
    access = await chat_access(request, write=True)
    reply_id = path_id(request, "reply_id")
    body = await read_body(request, FeedbackRequest)
    js = request.app[BUS].js
    if await bus.last_msg(js, CHAT.name, reply_requested(access.chat_id, reply_id, ANY)) is None:
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


async def audit_chat(request: web.Request) -> web.StreamResponse:
    """Admins: every event of a chat, from the log (who, when, what, which model and parameters)."""
    if not principal_of(request).is_admin:
        raise ApiError(403, "forbidden", "the audit trail is for administrators")
    chat_id = path_id(request, "chat_id")
    msgs = await bus.read_all(request.app[BUS].js, CHAT.name, [one_chat(chat_id)])
    entries = audit_entries((m.seq, m.data) for m in msgs)
    if not entries:
        raise ApiError(404, "not_found", f"no chat {chat_id}")
    return json_response(AuditTrail(chat_id=chat_id, entries=entries))


async def erase_user_route(request: web.Request) -> web.StreamResponse:
    """Admins: erase a user and everything they wrote (chats, ratings, keys, uploads); a tombstone stays."""
    principal = principal_of(request)
    if not principal.is_admin:
        raise ApiError(403, "forbidden", "erasing users is for administrators")
    user_id = path_id(request, "user_id")
    if user_id == principal.user_id:
        raise ApiError(409, "erase_self", "an administrator cannot erase themselves through their own key")
    if await user_role(request.app[BUS].js, user_id) is None:
        raise ApiError(404, "not_found", f"no user {user_id}")
    erased = await erase_user(request.app[BUS], user_id, principal.user_id)
    return json_response(UserErasedResponse(user_id=user_id, chats=erased.chats, seq=erased.seq))


async def login(request: web.Request) -> web.StreamResponse:
    """Log in with a user name and password: a session cookie (HttpOnly, SameSite=Strict) and a CSRF token."""
    body = await read_body(request, LoginRequest)
    js = request.app[BUS].js
    if await failures(js, body.user) >= MAX_FAILURES:
        raise ApiError(
            429,
            "too_many_attempts",
            "too many failed logins for this user; wait 15 minutes",
            {"Retry-After": "900"},
        )
    role = await user_role(js, body.user)
    if not await check_password(js, body.user, body.password) or role is None:
        await count_failure(js, body.user)
        raise ApiError(401, "bad_login", "wrong user name or password")
    await clear_failures(js, body.user)
    session_id, csrf = await create_session(js, body.user)
    response = json_response(LoginResponse(user_id=body.user, role=role, csrf_token=csrf))
    response.set_cookie(
        COOKIE,
        session_id,
        max_age=int(SESSIONS_KV.ttl),
        httponly=True,
        samesite="Strict",
        secure=_secure(request),
        path="/",
    )
    return response


def _secure(request: web.Request) -> bool:
    """Secure cookies whenever the browser came over TLS (directly or through a TLS proxy)."""
    return request.secure or request.headers.get("X-Forwarded-Proto", "").lower() == "https"


async def logout(request: web.Request) -> web.StreamResponse:
    """End the browser session (every API replica forgets it at once)."""
    session = session_of(request)
    if session is not None:
        await end_session(request.app[BUS].js, session)
    response = json_response(StatusResponse(status="logged out"))
    response.del_cookie(COOKIE, path="/")
    return response


async def register(request: web.Request) -> web.StreamResponse:
    """Create your own account (only when the operator allows self-registration); then log in."""
    if not request.app[SETTINGS].self_registration:
        raise ApiError(403, "registration_closed", "accounts are created by an administrator here")
    body = await read_body(request, RegisterRequest)
    js = request.app[BUS].js
    problem = password_problem(body.password)
    if problem is not None:
        raise ApiError(422, "weak_password", problem)
    try:
        await add_user(js, body.user)
    except UserExists:
        raise ApiError(409, "user_exists", f"the name {body.user!r} is taken") from None
    except InvalidUserId as exc:
        raise ApiError(422, "bad_user", str(exc)) from None
    await set_password(js, body.user, body.password, by=body.user)
    return json_response(StatusResponse(status="registered"), status=201)
