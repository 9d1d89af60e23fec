"""Bot routes: create, list (yours, usable, the store), read, replace, delete, export and import bots.

Bots are read from the log (stream BOTS) at each request, never from the read model: they are few,
and a change must be fenced on the bot's newest event, which only the log knows. Another user's
private bot is a 404 on every route, as another user's chat is.
"""

from __future__ import annotations

from aiohttp import web

import bus
from identity.accounts import is_valid_user_id, user_role
from logtools.bots import (
    Bot,
    append_bot_change,
    bot_body,
    create_bots,
    created_event,
    deleted_event,
    in_scope,
    read_bot,
    read_bots,
    updated_event,
)
from schemas.api import AcceptedResponse
from schemas.api_bots import (
    BOT_SCOPES,
    BotFileError,
    BotList,
    BotRequest,
    BotScope,
    BotsImported,
    file_of,
    login_names,
    parse_bot_file,
    shared_names,
    sharing_problem,
    spec_of,
)
from schemas.bot import Visibility
from services.api.auth import principal_of
from services.api.errors import ApiError, json_response
from services.api.inputs import path_id, query_str, read_body, require_json
from services.api.keys import BUS


def _etag(bot: Bot) -> dict[str, str]:
    return {"ETag": f'"{bot.last_seq}"'}


async def _user_ids(request: web.Request, visibility: Visibility, names: list[str], where: str) -> list[str]:
    """The user ids of `shared_with` names (a user's id is their login name), else 400 naming the fault."""
    problem = sharing_problem(visibility, names)
    if problem is not None:
        raise ApiError(400, "bad_sharing", f"{where}{problem}")
    ids = login_names(names)
    for user_id in ids:
        if not is_valid_user_id(user_id) or await user_role(request.app[BUS].js, user_id) is None:
            raise ApiError(400, "unknown_user", f"{where}shared_with: no user {user_id!r}")
    return ids


async def _usable_bot(request: web.Request) -> Bot:
    """The `{bot_id}` bot if the caller may use it; a 404 for everyone else, as if it did not exist."""
    bot_id = path_id(request, "bot_id")
    principal = principal_of(request)
    bot = await read_bot(request.app[BUS].js, bot_id)
    if bot is None or not bot.usable_by(principal.user_id, admin=principal.is_admin):
        raise ApiError(404, "not_found", f"no bot {bot_id}")
    return bot


async def _editable_bot(request: web.Request) -> Bot:
    """The `{bot_id}` bot if the caller may change it (owner, admin); 403 if they may only use it."""
    bot = await _usable_bot(request)
    principal = principal_of(request)
    if not bot.editable_by(principal.user_id, admin=principal.is_admin):
        raise ApiError(403, "forbidden", f"only the owner of bot {bot.bot_id} (or an admin) may change it")
    return bot


def _if_match(request: web.Request) -> int | None:
    """The version the client read (`If-Match: "<version>"`), or None to change the bot as it is now."""
    raw = request.headers.get("If-Match")
    if raw is None:
        return None
    value = raw.strip().removeprefix("W/").strip('"')
    if not value.isdigit() or len(value) > 19:
        raise ApiError(400, "bad_if_match", 'If-Match must be a bot\'s version, e.g. "42" (its `version`)')
    return int(value)


def _changed(bot_id: str) -> ApiError:
    return ApiError(
        409,
        "conflict",
        f"bot {bot_id} changed since that version: read it again (GET) and send your change again",
    )


async def create_bot(request: web.Request) -> web.StreamResponse:
    """Create a bot owned by the caller (201)."""
    principal = principal_of(request)
    body = await read_body(request, BotRequest)
    shared_with = await _user_ids(request, body.visibility, body.shared_with, "")
    event = created_event(principal.user_id, spec_of(body), body.visibility, shared_with)
    (bot,) = await create_bots(request.app[BUS].js, [event])
    answer = bot_body(bot, principal.user_id, admin=principal.is_admin)
    return json_response(answer, status=201, headers={"Location": f"/v1/bots/{bot.bot_id}", **_etag(bot)})


async def list_bots(request: web.Request) -> web.StreamResponse:
    """Bots by name: `usable` (default: yours, shared with you, public), `mine`, `store`, `all` (admins)."""
    principal = principal_of(request)
    scope = query_str(request, "scope", max_length=16) or "usable"
    if scope not in BOT_SCOPES:
        raise ApiError(400, "bad_parameter", f"scope must be one of {', '.join(BOT_SCOPES)}")
    if scope == "all" and not principal.is_admin:
        raise ApiError(403, "forbidden", "scope=all is for administrators")
    chosen: BotScope = scope  # type: ignore[assignment]
    bots = [
        bot
        for bot in (await read_bots(request.app[BUS].js)).values()
        if in_scope(bot, chosen, principal.user_id, admin=principal.is_admin)
    ]
    bots.sort(key=lambda b: (b.spec.name.casefold(), b.created_at))
    rows = [bot_body(bot, principal.user_id, admin=principal.is_admin) for bot in bots]
    return json_response(BotList(scope=chosen, bots=rows))


async def get_bot(request: web.Request) -> web.StreamResponse:
    """One bot you may use; its `version` is also the ETag."""
    bot = await _usable_bot(request)
    principal = principal_of(request)
    return json_response(bot_body(bot, principal.user_id, admin=principal.is_admin), headers=_etag(bot))


async def put_bot(request: web.Request) -> web.StreamResponse:
    """Replace a bot's whole definition (owner or admin); with If-Match only if unchanged since (else 409)."""
    bot = await _editable_bot(request)
    principal = principal_of(request)
    body = await read_body(request, BotRequest)
    shared_with = await _user_ids(request, body.visibility, body.shared_with, "")
    event = updated_event(bot, spec_of(body), body.visibility, shared_with, principal.user_id)
    try:
        appended = await append_bot_change(request.app[BUS].js, bot, event, at_seq=_if_match(request))
    except bus.ConcurrencyConflict:
        raise _changed(bot.bot_id) from None
    bot.apply(appended.seq, event)
    return json_response(bot_body(bot, principal.user_id, admin=principal.is_admin), headers=_etag(bot))


async def delete_bot(request: web.Request) -> web.StreamResponse:
    """Delete a bot (owner or admin): gone from every list; chats it joined keep their copy of it."""
    bot = await _editable_bot(request)
    event = deleted_event(bot, principal_of(request).user_id)
    try:
        appended = await append_bot_change(request.app[BUS].js, bot, event, at_seq=_if_match(request))
    except bus.ConcurrencyConflict:
        raise _changed(bot.bot_id) from None
    return json_response(AcceptedResponse(seq=appended.seq))


async def export_bot(request: web.Request) -> web.StreamResponse:
    """A bot you may use as a file to import elsewhere: `{"chatbus_bot": 1, ...definition, visibility}`."""
    bot = await _usable_bot(request)
    disposition = f'attachment; filename="bot-{bot.bot_id}.json"'
    return json_response(file_of(bot.spec, bot.visibility), headers={"Content-Disposition": disposition})


async def import_bots(request: web.Request) -> web.StreamResponse:
    """Import one exported bot or a list of them as yours (private unless the file says); all or none."""
    principal = principal_of(request)
    require_json(request)
    try:
        items = parse_bot_file(await request.read())
    except BotFileError as exc:
        raise ApiError(400, "bad_bot_file", str(exc)) from None
    many = len(items) > 1
    events = []
    for index, item in enumerate(items):
        where = f"$[{index}]." if many else ""
        shared_with = await _user_ids(request, item.visibility, shared_names(item), where)
        events.append(created_event(principal.user_id, spec_of(item), item.visibility, shared_with))
    bots = await create_bots(request.app[BUS].js, events)
    answer = BotsImported(bots=[bot_body(bot, principal.user_id, admin=principal.is_admin) for bot in bots])
    return json_response(answer, status=201)
