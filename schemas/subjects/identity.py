"""Identity subjects: `user.<user_id>.>` and `apikey.<key_id>.>`."""

from __future__ import annotations

from typing import Literal, get_args

import msgspec

from schemas.subjects.roots import APIKEY_ROOT, REST, USER_ROOT, join

UserKind = Literal["created", "role_changed", "consent", "password", "erased"]
ApiKeyKind = Literal["issued", "revoked"]
USER_KINDS: frozenset[str] = frozenset(get_args(UserKind))
APIKEY_KINDS: frozenset[str] = frozenset(get_args(ApiKeyKind))


def user_event(user_id: str, kind: UserKind) -> str:
    """Subject of a user event, e.g. `user.<user_id>.created`."""
    return join(USER_ROOT, user_id, kind)


def one_user(user_id: str) -> str:
    """Every identity event of one user: `user.<user_id>.>`."""
    return join(USER_ROOT, user_id, REST)


def apikey_event(key_id: str, kind: ApiKeyKind) -> str:
    """Subject of an API key event, e.g. `apikey.<key_id>.issued`."""
    return join(APIKEY_ROOT, key_id, kind)


def one_apikey(key_id: str) -> str:
    """Every event of one API key: `apikey.<key_id>.>`."""
    return join(APIKEY_ROOT, key_id, REST)


class UserSubject(msgspec.Struct, frozen=True):
    """A user event's subject, parsed."""

    user_id: str
    kind: UserKind


class ApiKeySubject(msgspec.Struct, frozen=True):
    """An API key event's subject, parsed."""

    key_id: str
    kind: ApiKeyKind


def parse_identity_subject(subject: str) -> UserSubject | ApiKeySubject | None:
    """The parts of a subject in IDENTITY, or None."""
    parts = subject.split(".")
    if len(parts) != 3:
        return None
    if parts[0] == USER_ROOT and parts[2] in USER_KINDS:
        return UserSubject(parts[1], parts[2])  # type: ignore[arg-type]
    if parts[0] == APIKEY_ROOT and parts[2] in APIKEY_KINDS:
        return ApiKeySubject(parts[1], parts[2])  # type: ignore[arg-type]
    return None
