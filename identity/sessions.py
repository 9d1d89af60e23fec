"""Browser login: argon2 password hashes as identity events, sessions in a KV bucket, CSRF tokens
(the API stays stateless: any replica serves).

The cookie holds a random session id; the KV key is its sha256, so reading the bucket gives no
usable cookie. Each session has its own CSRF token: a write made with the cookie must send it back
in `X-CSRF-Token` (a page of another site cannot read it). A session names the password event it
was opened with: a new password (or an erasure, which removes it) ends every session at once.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass

import msgspec
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

import bus
import schemas
from identity.hashing import HashingPool
from schemas.identity import PasswordSet
from schemas.ids import new_id
from schemas.streams import IDENTITY, SESSIONS_KV
from schemas.subjects import user_event

COOKIE = "chatbus_session"
CSRF_HEADER = "X-CSRF-Token"
MIN_PASSWORD = 8
MAX_PASSWORD = 1024

_hasher = PasswordHasher()
_password_decoder = msgspec.json.Decoder(PasswordSet)
# Verifying against this keeps an unknown user as slow as a wrong password (no user enumeration by timing).
_DUMMY_HASH = _hasher.hash("not a password anyone has")


class Session(msgspec.Struct, frozen=True, kw_only=True):
    """What the KV bucket keeps for a session."""

    user_id: str
    csrf: str
    created_at: str
    # The IDENTITY sequence of the password it logged in with; 0 (older sessions) is no longer valid.
    password_seq: int = 0


@dataclass(frozen=True)
class SessionInfo:
    """A session found from its cookie."""

    key: str
    user_id: str
    csrf: str


def password_problem(password: str) -> str | None:
    """Why a password is refused, or None."""
    if len(password) < MIN_PASSWORD:
        return f"a password needs at least {MIN_PASSWORD} characters"
    if len(password) > MAX_PASSWORD:
        return f"a password has at most {MAX_PASSWORD} characters"
    return None


async def hash_password(password: str, hashing: HashingPool | None = None) -> str:
    """The argon2 hash of an acceptable password (ValueError otherwise), computed on `hashing`'s threads
    (None: right here, for a command line that has no event loop to keep free)."""
    problem = password_problem(password)
    if problem is not None:
        raise ValueError(problem)
    return _hasher.hash(password) if hashing is None else await hashing.run(_hasher.hash, password)


async def set_password(
    js: bus.JetStream, user_id: str, password: str, by: str, hashing: HashingPool | None = None
) -> int:
    """Keep the argon2 hash of a new password as an identity event, end the user's sessions; the sequence."""
    return await store_password(js, user_id, await hash_password(password, hashing), by)


async def store_password(js: bus.JetStream, user_id: str, password_hash: str, by: str) -> int:
    """Keep a password hash (from hash_password) as an identity event and end the user's sessions."""
    event = PasswordSet(
        event_id=new_id("e"), at=schemas.now(), user_id=user_id, password_hash=password_hash, by=by
    )
    seq = (await bus.append_event(js, event)).seq
    await end_sessions(js, user_id)  # they name the old password: dead already, now gone from the bucket
    return seq


async def verify_password(js: bus.JetStream, user_id: str, password: str, hashing: HashingPool) -> int | None:
    """The sequence of the user's current password event if `password` is it, else None (as slow for
    unknown users as for wrong passwords). HashingBusy when the pool is full."""
    last = await bus.last_msg(js, IDENTITY.name, user_event(user_id, "password"))
    stored = _DUMMY_HASH
    if last is not None:
        try:
            stored = _password_decoder.decode(last.data).password_hash
        except msgspec.DecodeError:
            pass
    matches = await hashing.run(_matches, stored, password)
    return last.seq if matches and last is not None else None


def _matches(stored: str, password: str) -> bool:
    try:
        return _hasher.verify(stored, password)
    except (VerificationError, InvalidHashError):
        return False


def _key(session_id: str) -> str:
    return hashlib.sha256(session_id.encode()).hexdigest()


async def create_session(js: bus.JetStream, user_id: str, password_seq: int) -> tuple[str, str]:
    """A session for the user who gave the password of event `password_seq`: (cookie value, CSRF token)."""
    session_id = secrets.token_urlsafe(32)
    csrf = secrets.token_urlsafe(24)
    record = Session(
        user_id=user_id, csrf=csrf, created_at=schemas.now().isoformat(), password_seq=password_seq
    )
    await bus.KV(js, SESSIONS_KV.bucket).create(_key(session_id), msgspec.json.encode(record))
    return session_id, csrf


async def find_session(js: bus.JetStream, cookie: str | None) -> SessionInfo | None:
    """The live session a cookie names, or None: never opened, logged out, expired, or opened with a
    password that is no longer the user's (changed, or erased with the user). An unanswered bus
    raises: it is no logout."""
    if not cookie or len(cookie) > 100:
        return None
    key = _key(cookie)
    try:
        entry = await bus.KV(js, SESSIONS_KV.bucket).get(key)
    except bus.NotFound:  # never created, logged out or expired
        return None
    try:
        record = msgspec.json.decode(entry.value, type=Session)
    except msgspec.DecodeError:
        return None
    password = await bus.last_msg(js, IDENTITY.name, user_event(record.user_id, "password"))
    if password is None or password.seq != record.password_seq:
        return None
    return SessionInfo(key=key, user_id=record.user_id, csrf=record.csrf)


async def end_session(js: bus.JetStream, info: SessionInfo) -> None:
    """Log out: the session is gone for every API replica at once."""
    await bus.KV(js, SESSIONS_KV.bucket).delete(info.key)


async def end_sessions(js: bus.JetStream, user_id: str) -> int:
    """Delete every session of the user from the bucket; how many there were."""
    kv = bus.KV(js, SESSIONS_KV.bucket)
    ended = 0
    for entry in await kv.entries():
        try:
            record = msgspec.json.decode(entry.value, type=Session)
        except msgspec.DecodeError:
            continue
        if record.user_id == user_id:
            await kv.delete(entry.key)
            ended += 1
    return ended


def csrf_ok(info: SessionInfo, sent: str | None) -> bool:
    """Whether a write carries the session's CSRF token."""
    return sent is not None and hmac.compare_digest(sent.encode(), info.csrf.encode())
