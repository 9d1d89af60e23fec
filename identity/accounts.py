"""Users and API keys as IDENTITY events; authentication reads the log, so revocation is immediate."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass

import msgspec

import bus
import schemas
from bus import JetStream
from schemas.identity import (
    ApiKeyIssued,
    ApiKeyRevoked,
    UserCreated,
    UserErased,
    UserRole,
    UserRoleChanged,
)
from schemas.ids import new_id
from schemas.streams import IDENTITY
from schemas.subjects import one_apikey, one_user, user_event

# \Z, not $: `$` also matches before a trailing newline, and "ann\n" is no user (nor a NATS subject token).
USER_ID_PATTERN = r"^[a-z0-9][a-z0-9_-]{0,63}\Z"
_USER_ID_RE = re.compile(USER_ID_PATTERN)
_KEY_ID_RE = re.compile(r"^k[a-z0-9]{1,63}\Z")
KEY_PREFIX = "cb_"
ROLES: tuple[str, ...] = ("admin", "user")
_user_decoder = msgspec.json.Decoder(UserCreated | UserRoleChanged | UserErased)
_key_decoder = msgspec.json.Decoder(ApiKeyIssued | ApiKeyRevoked)


class UserExists(bus.ConcurrencyConflict):
    """add_user: a user with that id was created before."""


class InvalidUserId(ValueError):
    """A user id that is not lowercase and token-safe, or a role that does not exist."""


class UnknownUser(ValueError):
    """issue_key: no such user."""


class UnknownKey(ValueError):
    """revoke_key: no key with that id was ever issued."""


@dataclass(frozen=True, slots=True)
class Principal:
    """Who a request acts as: the user, their role, and the key they used."""

    user_id: str
    role: UserRole
    key_id: str

    @property
    def is_admin(self) -> bool:
        """True for administrators, who may read every chat."""
        return self.role == "admin"


def is_valid_user_id(user_id: str) -> bool:
    """True for lowercase token-safe ids (`[a-z0-9_-]`, 1-64 chars, starting alphanumeric)."""
    return bool(_USER_ID_RE.match(user_id))


def hash_key(key: str) -> str:
    """The sha256 (hex) that IDENTITY keeps instead of the key."""
    return hashlib.sha256(key.encode()).hexdigest()


def parse_key(key: str) -> str | None:
    """The key id inside a key string `cb_<key_id>_<secret>`, or None when malformed."""
    if not key.startswith(KEY_PREFIX):
        return None
    key_id, sep, secret = key[len(KEY_PREFIX) :].partition("_")
    if not sep or len(secret) < 32 or not _KEY_ID_RE.match(key_id):
        return None
    return key_id


async def add_user(js: JetStream, user_id: str, role: str = "user") -> int:
    """Create a user; returns the IDENTITY sequence. A duplicate raises UserExists."""
    if not is_valid_user_id(user_id):
        raise InvalidUserId(f"user id {user_id!r} must be lowercase letters, digits, _ or - (1-64 chars)")
    if role not in ROLES:
        raise InvalidUserId(f"role {role!r} must be one of {', '.join(ROLES)}")
    event = UserCreated(event_id=new_id("e"), at=schemas.now(), user_id=user_id, role=role)  # type: ignore[arg-type]
    try:
        appended = await bus.append_event(js, event, expected_subject_seq=0)
    except bus.ConcurrencyConflict as exc:
        raise UserExists(f"user {user_id} already exists") from exc
    return appended.seq


async def user_role(js: JetStream, user_id: str) -> UserRole | None:
    """The user's current role from the log; None when the user does not exist or is being erased.

    An erasure appends `user.<id>.erased` before it removes anything, so from that moment no key,
    session or proxy header acts as the user (identity.erasure relies on it); the same name created
    again afterwards is a new account.
    """
    if not is_valid_user_id(user_id):
        return None
    last = await bus.last_msg(js, IDENTITY.name, one_user(user_id))
    if last is None:
        return None
    event = _decode_user(last.data)
    if isinstance(event, UserErased):
        return None
    if event is not None:  # created or role_changed is the newest: nothing erased since
        return event.role
    # A newer kind of user event is last (a password, a consent): read the kinds that decide.
    created, changed, erased = await asyncio.gather(
        bus.last_msg(js, IDENTITY.name, user_event(user_id, "created")),
        bus.last_msg(js, IDENTITY.name, user_event(user_id, "role_changed")),
        bus.last_msg(js, IDENTITY.name, user_event(user_id, "erased")),
    )
    if created is None or (erased is not None and erased.seq > created.seq):
        return None
    for msg in (changed, created):  # the newest role of this account (a change before it was another's)
        if msg is None or msg.seq < created.seq:
            continue
        decoded = _decode_user(msg.data)
        if isinstance(decoded, UserCreated | UserRoleChanged):
            return decoded.role
    return None


async def account_exists(js: JetStream, user_id: str) -> bool:
    """Whether the name has an account in the log, live or in the middle of its erasure."""
    if not is_valid_user_id(user_id):
        return False
    return await bus.last_msg(js, IDENTITY.name, user_event(user_id, "created")) is not None


def _decode_user(data: bytes) -> UserCreated | UserRoleChanged | UserErased | None:
    try:
        return _user_decoder.decode(data)
    except (msgspec.DecodeError, msgspec.ValidationError):
        return None


async def issue_key(js: JetStream, user_id: str, label: str = "") -> tuple[str, str]:
    """Issue an API key for an existing user; returns (key_id, key). Only the key's sha256 is stored."""
    if await user_role(js, user_id) is None:
        raise UnknownUser(f"no user {user_id!r}")
    key_id = new_id("k")
    key = f"{KEY_PREFIX}{key_id}_{secrets.token_urlsafe(32)}"
    event = ApiKeyIssued(
        event_id=new_id("e"),
        at=schemas.now(),
        key_id=key_id,
        user_id=user_id,
        key_sha256=hash_key(key),
        label=label,
    )
    await bus.append_event(js, event, expected_subject_seq=0)
    return key_id, key


async def revoke_key(js: JetStream, key_id: str) -> None:
    """Revoke a key (idempotent); every replica refuses it from the next request on."""
    last = None
    if _KEY_ID_RE.match(key_id):
        last = await bus.last_msg(js, IDENTITY.name, one_apikey(key_id))
    if last is None:
        raise UnknownKey(f"no API key {key_id!r}")
    event = _key_decoder.decode(last.data)
    if isinstance(event, ApiKeyRevoked):
        return
    revoked = ApiKeyRevoked(event_id=new_id("e"), at=schemas.now(), key_id=key_id, user_id=event.user_id)
    await bus.append_event(js, revoked)


async def authenticate(js: JetStream, key: str) -> Principal | None:
    """The principal a key string acts as, or None when it is malformed, unknown or revoked."""
    key_id = parse_key(key)
    if key_id is None:
        return None
    last = await bus.last_msg(js, IDENTITY.name, one_apikey(key_id))
    if last is None:
        return None
    try:
        event = _key_decoder.decode(last.data)
    except msgspec.DecodeError:
        return None
    if not isinstance(event, ApiKeyIssued):
        return None
    if not hmac.compare_digest(event.key_sha256.encode(), hash_key(key).encode()):
        return None
    role = await user_role(js, event.user_id)
    if role is None:
        return None
    return Principal(user_id=event.user_id, role=role, key_id=key_id)
