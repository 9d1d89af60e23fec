"""Each user's webhook signing secret, in KV `webhook_secrets` (key: the user id).

The secret itself is kept, not a hash: the webhooks service signs every delivery with it
(schemas/webhook.py). It is shown once, when made; a new one replaces the old at once. Erasing the
user deletes it (identity/erasure.py).
"""

from __future__ import annotations

import secrets

import bus
from bus import JetStream
from schemas.streams import WEBHOOK_SECRETS_KV
from schemas.subjects import kv_key, kv_stream

SECRET_PREFIX = "whsec_"  # tells a leaked string apart from an API key at a glance


async def new_webhook_secret(js: JetStream, user_id: str) -> str:
    """Make (or replace) the user's secret and return it: the only time it is shown."""
    secret = SECRET_PREFIX + secrets.token_urlsafe(32)
    await bus.KV(js, WEBHOOK_SECRETS_KV.bucket).put(user_id, secret.encode())
    return secret


async def webhook_secret_of(js: JetStream, user_id: str) -> str | None:
    """The user's secret, or None when they have none (never made, or erased)."""
    try:
        return (await bus.KV(js, WEBHOOK_SECRETS_KV.bucket).get(user_id)).value.decode()
    except bus.NotFound:
        return None


async def forget_webhook_secret(js: JetStream, user_id: str) -> None:
    """Remove the user's secret, and its key with it: a purge of its subject leaves no marker naming the
    user (no error when there is none)."""
    bucket = WEBHOOK_SECRETS_KV.bucket
    await bus.purge_subject(js, kv_stream(bucket), kv_key(bucket, user_id))
