"""The browser session: log in (a cookie and a CSRF token), log out, register an account."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator

from aiohttp import web

from identity.accounts import InvalidUserId, UserExists, add_user, is_valid_user_id, user_role
from identity.attempts import BlockedAddresses, Limits, TooManyAttempts, count_registration, start_login
from identity.hashing import HashingBusy, HashingPool
from identity.sessions import (
    COOKIE,
    create_session,
    end_session,
    hash_password,
    password_problem,
    store_password,
    verify_password,
)
from schemas.api import LoginRequest, LoginResponse, RegisterRequest, StatusResponse
from schemas.streams import SESSIONS_KV
from services.api.auth import check_login_origin, client_address, session_of
from services.api.errors import ApiError, json_response, unavailable
from services.api.inputs import read_body
from services.api.keys import BLOCKED, BUS, HASHING, SETTINGS


async def hashing_pool(app: web.Application) -> AsyncIterator[None]:
    """The threads that hash and verify passwords, for the app's lifetime (cleanup_ctx)."""
    settings = app[SETTINGS]
    threads = settings.password_threads or max(1, (os.cpu_count() or 2) // 2)
    app[HASHING] = HashingPool(threads, settings.password_queue)
    app[BLOCKED] = BlockedAddresses()
    yield
    app[HASHING].close()


def _limits(request: web.Request) -> Limits:
    settings = request.app[SETTINGS]
    return Limits(login=settings.login_limit, address=settings.login_address_limit)


def _too_many(exc: TooManyAttempts) -> ApiError:
    return ApiError(429, "too_many_attempts", str(exc), {"Retry-After": str(exc.retry_after)})


def _busy() -> ApiError:
    return unavailable("too many logins are being checked right now; retry in a moment", retry_after=2)


async def login(request: web.Request) -> web.StreamResponse:
    """Log in with a user name and password: a session cookie (HttpOnly, SameSite=Strict) and a CSRF token."""
    check_login_origin(request)
    body = await read_body(request, LoginRequest)
    if not is_valid_user_id(body.user):
        raise ApiError(400, "bad_user", "a user name is 1-64 lowercase letters, digits, _ or -")
    js = request.app[BUS].js
    try:
        address = client_address(request)
        attempt = await start_login(js, body.user, address, _limits(request), request.app[BLOCKED])
    except TooManyAttempts as exc:
        raise _too_many(exc) from None
    try:
        password_seq = await verify_password(js, body.user, body.password, request.app[HASHING])
    except HashingBusy:
        await attempt.withdrawn()
        raise _busy() from None
    role = await user_role(js, body.user)
    if password_seq is None or role is None:
        raise ApiError(401, "bad_login", "wrong user name or password")
    await attempt.succeeded()
    session_id, csrf = await create_session(js, body.user, password_seq)
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
    settings = request.app[SETTINGS]
    if not settings.self_registration:
        raise ApiError(403, "registration_closed", "accounts are created by an administrator here")
    check_login_origin(request)
    body = await read_body(request, RegisterRequest)
    js = request.app[BUS].js
    problem = password_problem(body.password)
    if problem is not None:
        raise ApiError(422, "weak_password", problem)
    try:
        await count_registration(js, client_address(request), settings.register_limit)
    except TooManyAttempts as exc:
        raise _too_many(exc) from None
    try:  # hashed before the account exists: a busy pool leaves nothing half made
        password_hash = await hash_password(body.password, request.app[HASHING])
    except HashingBusy:
        raise _busy() from None
    try:
        await add_user(js, body.user)
    except UserExists:
        raise ApiError(409, "user_exists", f"the name {body.user!r} is taken") from None
    except InvalidUserId as exc:
        raise ApiError(422, "bad_user", str(exc)) from None
    await store_password(js, body.user, password_hash, by=body.user)
    return json_response(StatusResponse(status="registered"), status=201)
