"""The browser session: log in (a cookie and a CSRF token), log out, register an account."""

from __future__ import annotations

from aiohttp import web

from identity.accounts import InvalidUserId, UserExists, add_user, user_role
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
from schemas.api import LoginRequest, LoginResponse, RegisterRequest, StatusResponse
from schemas.streams import SESSIONS_KV
from services.api.auth import session_of
from services.api.errors import ApiError, json_response
from services.api.inputs import read_body
from services.api.keys import BUS, SETTINGS


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
