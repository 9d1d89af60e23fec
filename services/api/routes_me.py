"""The caller's own account: who they are, their training consent, their webhook signing secret."""

from __future__ import annotations

import msgspec
from aiohttp import web

import bus
import schemas
from identity.webhook_secrets import new_webhook_secret
from schemas.api import AcceptedResponse, ConsentRequest, MeResponse
from schemas.api_webhooks import WebhookSecretResponse
from schemas.identity import TrainingConsentSet
from schemas.ids import new_id
from schemas.streams import IDENTITY
from schemas.subjects import user_event
from services.api.auth import principal_of, session_of
from services.api.errors import json_response
from services.api.inputs import read_body
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


async def make_webhook_secret(request: web.Request) -> web.StreamResponse:
    """Make your webhook signing secret (a new one replaces the old at once); shown only in this answer."""
    secret = await new_webhook_secret(request.app[BUS].js, principal_of(request).user_id)
    body = WebhookSecretResponse(secret=secret)
    return json_response(body, status=201, headers={"Cache-Control": "no-store"})
