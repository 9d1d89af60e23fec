"""A chat's audit trail for administrators: every event of it, from the log."""

from __future__ import annotations

from aiohttp import web

from logtools.audit import read_audit
from schemas.audit import AuditTrail
from services.api.auth import principal_of
from services.api.errors import ApiError, json_response
from services.api.inputs import path_id
from services.api.keys import BUS


async def audit_chat(request: web.Request) -> web.StreamResponse:
    """Admins: every event of a chat, from the log (who, when, what, which model and parameters); an
    admin's own arena battle reads blind until its vote, like every other read of its voter."""
    principal = principal_of(request)
    if not principal.is_admin:
        raise ApiError(403, "forbidden", "the audit trail is for administrators")
    chat_id = path_id(request, "chat_id")
    entries = await read_audit(request.app[BUS].js, chat_id, reader_id=principal.user_id)
    if not entries:
        raise ApiError(404, "not_found", f"no chat {chat_id}")
    return json_response(AuditTrail(chat_id=chat_id, entries=entries))
