"""Identity events: users and API keys, on `user.>` and `apikey.>` in stream IDENTITY."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

import msgspec

UserRole = Literal["admin", "user"]


class IdentityEvent(msgspec.Struct, frozen=True, kw_only=True, tag_field="type"):
    """Base of identity events."""

    event_id: str
    at: datetime


class UserCreated(IdentityEvent, frozen=True, kw_only=True, tag="user.created"):
    """A user account was created; `user_id` is the login name. Subject `user.<user_id>.created`."""

    user_id: str
    role: UserRole = "user"
    display_name: str = ""


class UserRoleChanged(IdentityEvent, frozen=True, kw_only=True, tag="user.role_changed"):
    """A user's role changed. Subject `user.<user_id>.role_changed`."""

    user_id: str
    role: UserRole


class ApiKeyIssued(IdentityEvent, frozen=True, kw_only=True, tag="apikey.issued"):
    """An API key was issued; only its sha256 is kept. Subject `apikey.<key_id>.issued`."""

    key_id: str
    user_id: str
    key_sha256: str
    label: str = ""


class ApiKeyRevoked(IdentityEvent, frozen=True, kw_only=True, tag="apikey.revoked"):
    """An API key was revoked and no longer authenticates. Subject `apikey.<key_id>.revoked`."""

    key_id: str
    user_id: str


class TrainingConsentSet(IdentityEvent, frozen=True, kw_only=True, tag="user.consent_set"):
    """Whether a user's chats may be used for training. Subject `user.<user_id>.consent`.

    The last one counts; with none, the operator's default (CHATBUS_TRAINING_CONSENT_DEFAULT) applies.
    """

    user_id: str
    allowed: bool
    by: str


class PasswordSet(IdentityEvent, frozen=True, kw_only=True, tag="user.password_set"):
    """A user's password was set; only its argon2 hash is kept. Subject `user.<user_id>.password`."""

    user_id: str
    password_hash: str
    by: str


class UserErased(IdentityEvent, frozen=True, kw_only=True, tag="user.erased"):
    """Tombstone: the user's events, keys, chats and ratings were purged. Subject `user.<user_id>.erased`."""

    user_id: str
    by: str


IdentityEventUnion = (
    UserCreated
    | UserRoleChanged
    | ApiKeyIssued
    | ApiKeyRevoked
    | TrainingConsentSet
    | PasswordSet
    | UserErased
)
