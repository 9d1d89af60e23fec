"""Access: nobody but a chat's owner (and admins where the route says) reaches a chat on any route of
the API's route table, and nobody reaches another user's private bot; checked against a real nats-server
and the in-process projector."""

from __future__ import annotations

from typing import Any

from aiohttp import FormData, web

import bus
from identity.accounts import add_user, issue_key
from tests.apihelp import Api, chat_events, is_error, serve_model

NOT_CHECKED = {
    "healthz",
    "readyz",
    "openapi",
    "models",
    "openai.chat_completions",
    "me",
    "me.consent",
    "me.webhook_secret",  # the caller's own secret: walked below
    "login",
    "logout",
    "register",
    "ui",
    "ui.static",
}  # no chat: public, or acting on the caller only
READ_BY_EVERYONE = {"arena.leaderboard"}  # no one user's data: any signed-in user reads it (walked below)
NOT_CHECKED |= READ_BY_EVERYONE


def _chat_routes(app: web.Application) -> set[tuple[str, str]]:
    routes = set()
    for route in app.router.routes():
        template = route.resource.canonical if route.resource is not None else ""
        if route.name not in NOT_CHECKED:
            routes.add((route.method, template))
    return routes


def _admin_only(template: str) -> bool:
    return template.startswith("/v1/admin/") or template.endswith("/restore")


async def test_nobody_but_the_owner_reaches_a_chat_on_any_route(api: Api) -> None:
    """Every route with a {chat_id} answers 404 to bob for ann's chat; a new unchecked route fails here."""
    chat_id = (await api.new_chat())["chat_id"]
    await serve_model(api.nbus)
    status, posted = await api.call(
        "POST", f"/v1/chats/{chat_id}/messages", json={"content": "hi", "model": "demo"}
    )
    assert status == 202
    bodies = {
        "POST": {"content": "hi", "model": "demo", "title": "t", "node_id": "x"},
        "PATCH": {"title": "t"},
    }
    walked = _chat_routes(api.app)
    with_chat = {(m, t) for m, t in walked if "{chat_id}" in t}
    assert len(with_chat) >= 8
    # Routes without a chat: creating or listing one's own (a battle is a chat of one's own too:
    # tests/test_arena_battles.py walks its arena routes as another user), images (tests/test_images_api.py
    # walks those), and admin routes (walked below).
    outside = {
        (m, t)
        for m, t in walked - with_chat
        if not t.startswith(
            ("/v1/images", "/v1/admin/", "/v1/bots", "/v1/jobs", "/v1/sessions", "/llamalith/", "/v1/batches")
        )
        and not t.startswith("/v1/files")
    }  # bots, jobs, batches, files and Llamalith's routes: walked below
    assert outside <= {("POST", "/v1/chats"), ("GET", "/v1/chats"), ("POST", "/v1/arena/battles")}
    for method, template in sorted(t for t in walked - with_chat if t[1].startswith("/v1/admin/")):
        path = template.replace("{user_id}", "ann")
        assert "{" not in path, f"fill in the new path parameter of {template}"
        assert (await api.call(method, path, "bob"))[0] == 403, template
        assert (await api.call(method, path, None))[0] == 401, template
    seen = set()
    for method, template in sorted(with_chat):
        path = (
            template.replace("{chat_id}", chat_id)
            .replace("{reply_id}", posted["reply_id"])
            .replace("{message_id}", posted["message_id"])
            .replace("{participant_id}", "p1")
        )
        assert "{" not in path, f"fill in the new path parameter of {template}"
        for user in ("bob", "nobody-key"):
            headers = api.auth(user) if user == "bob" else {"Authorization": "Bearer x"}
            async with api.client.request(method, path, headers=headers, json=bodies.get(method)) as resp:
                body = await resp.json(content_type=None)
                stranger = 403 if _admin_only(template) else 404  # admin routes: 403 whatever the chat
                assert resp.status == (stranger if user == "bob" else 401), (method, template, body)
                assert is_error(body)
        status, _ = await api.call(
            method,
            template.replace("{chat_id}", "nosuchchat" + chat_id[::-1])
            .replace("{reply_id}", posted["reply_id"])
            .replace("{message_id}", posted["message_id"])
            .replace("{participant_id}", "p1"),
            json=bodies.get(method),
        )
        assert status == (403 if _admin_only(template) else 404), (method, template)
        seen.add((method, template))
    assert seen == with_chat
    assert len(await chat_events(api.nbus, chat_id)) == 3  # created, posted, requested: bob changed nothing
    assert (await api.call("GET", f"/v1/chats/{chat_id}"))[0] == 200  # and erased nothing


# ---------------------------------------------------------------- batches and files


def _openai_error(body: Any) -> bool:
    return isinstance(body, dict) and set(body) == {"error"} and bool(body["error"].get("message"))


async def test_another_users_batch_or_file_is_a_404_on_every_route(api: Api) -> None:
    """Every route with a {batch_id} or {file_id} answers 404 to bob for ann's batch, file and the batch's
    output and errors files (and for a made-up id), 401 without a key; an admin reads them; the routes
    without one list or make the caller's own."""
    routes = {(m, t) for m, t in _chat_routes(api.app) if t.startswith(("/v1/batches", "/v1/files"))}
    assert {(m, t) for m, t in routes if "{" not in t} == {
        ("POST", "/v1/batches"),
        ("GET", "/v1/batches"),
        ("POST", "/v1/files"),
    }
    await serve_model(api.nbus)
    line = b'{"custom_id": "a", "body": {"messages": [{"role": "user", "content": "hi"}]}}'
    form = FormData({"purpose": "batch"})
    form.add_field("file", line, filename="in.jsonl")
    status, uploaded = await api.call("POST", "/v1/files", data=form)
    assert status == 200, uploaded
    status, batch = await api.call(
        "POST", "/v1/batches?model=demo", data=line, headers={"Content-Type": "application/jsonl"}
    )
    assert status == 200, batch
    stored = await bus.last_seq(api.nbus.js, "BATCHES")
    with_id = sorted((m, t) for m, t in routes if "{" in t)
    assert len(with_id) == 6
    ids = {
        "{batch_id}": (batch["id"], "qnosuch"),
        "{file_id}": (uploaded["id"], batch["output_file_id"], batch["error_file_id"], "fnosuch"),
    }
    for method, template in with_id:
        holder = "{batch_id}" if "{batch_id}" in template else "{file_id}"
        for value in ids[holder]:
            path = template.replace(holder, value)
            assert "{" not in path, f"fill in the new path parameter of {template}"
            for user, expected in (("bob", 404), (None, 401)):
                headers = api.auth(user) if user else {"Authorization": "Bearer x"}
                async with api.client.request(method, path, headers=headers) as resp:
                    body = await resp.json(content_type=None)
                    assert resp.status == expected and _openai_error(body), (method, path, user, body)
    assert await bus.last_seq(api.nbus.js, "BATCHES") == stored  # bob cancelled nothing
    for path in (
        f"/v1/batches/{batch['id']}",
        f"/v1/files/{uploaded['id']}",
        f"/v1/files/{batch['output_file_id']}",
    ):
        status, read = await api.call("GET", path, "root")
        assert status == 200, (path, read)
    for path in ("/v1/batches",):
        status, listed = await api.call("GET", path, "bob")
        assert status == 200 and listed["data"] == []


# ---------------------------------------------------------------- jobs


async def test_another_users_job_is_a_404_on_every_route(api: Api) -> None:
    """Every route with a {job_id} or {session_id} answers 404 to bob for ann's job (and for a malformed
    id), 401 without a key; an admin reads it; the routes without one list or make the caller's own."""
    routes = {(m, t) for m, t in _chat_routes(api.app) if t.startswith(("/v1/jobs", "/v1/sessions"))}
    assert {(m, t) for m, t in routes if "{" not in t} == {("POST", "/v1/jobs"), ("GET", "/v1/jobs")}
    await serve_model(api.nbus)
    status, job = await api.call(
        "POST", "/v1/jobs", json={"input": "hi", "model": "demo", "session_id": "s-1"}
    )
    assert status == 202, job
    events = len(await chat_events(api.nbus, job["chat_id"]))
    with_job = sorted((m, t) for m, t in routes if "{" in t)
    assert len(with_job) >= 3
    for method, template in with_job:
        for job_id in (job["job_id"], "nosuch", "c1-r2-x"):
            path = template.replace("{job_id}", job_id).replace("{session_id}", "s-1")
            assert "{" not in path, f"fill in the new path parameter of {template}"
            for user, expected in (("bob", 404), (None, 401)):
                headers = api.auth(user) if user else {"Authorization": "Bearer x"}
                async with api.client.request(method, path, headers=headers) as resp:
                    body = await resp.json(content_type=None)
                    assert resp.status == expected and is_error(body), (method, path, user, body)
    assert len(await chat_events(api.nbus, job["chat_id"])) == events  # bob cancelled nothing
    status, read = await api.call("GET", f"/v1/jobs/{job['job_id']}", "root")
    assert status == 200 and read["job_id"] == job["job_id"]
    status, listed = await api.call("GET", "/v1/jobs", "bob")
    assert status == 200 and listed["items"] == []


async def test_llamalith_routes_reach_the_callers_own_jobs_only(api: Api) -> None:
    """Llamalith's routes: bob gets 404 for ann's job (and a malformed id), nothing of her conversation
    (sessions are per user: his "s-1" is another chat) and none of her jobs listed; 401 without a key."""
    routes = {(m, t) for m, t in _chat_routes(api.app) if t.startswith("/llamalith/")}
    assert len(routes) == 4
    await serve_model(api.nbus)
    status, job = await api.call(
        "POST", "/llamalith/chat/api/submit", json={"user_input": "hi", "session_id": "s-1", "model": "demo"}
    )
    assert status == 200, job
    chat_id = job["job_id"].split("-")[0]
    events = len(await chat_events(api.nbus, chat_id))
    for method, template in sorted(routes):
        path = template.replace("{job_id}", job["job_id"]).replace("{session_id}", "s-1")
        assert "{" not in path, f"fill in the new path parameter of {template}"
        body = {"user_input": "hi", "session_id": "s-1", "model": "demo"} if method == "POST" else None
        async with api.client.request(method, path, headers={"Authorization": "Bearer x"}, json=body) as resp:
            assert resp.status == 401 and is_error(await resp.json()), template
    for job_id in (job["job_id"], "nosuch", "c1-r2-x"):
        status, body = await api.call("GET", f"/llamalith/chat/api/jobs/{job_id}", "bob")
        assert status == 404 and is_error(body), (job_id, body)
    status, body = await api.call("GET", "/llamalith/chat/api/status/s-1", "bob")
    assert (status, body) == (200, {"response": None, "job_id": None, "status": None})
    status, body = await api.call("GET", "/llamalith/chat/api/jobs?conversation_id=s-1", "bob")
    assert (status, body) == (200, {"jobs": []})
    status, body = await api.call(
        "POST",
        "/llamalith/chat/api/submit",
        "bob",
        json={"user_input": "x", "session_id": "s-1", "model": "demo"},
    )
    assert status == 200 and body["job_id"].split("-")[0] != chat_id  # bob's own conversation
    assert len(await chat_events(api.nbus, chat_id)) == events  # bob added nothing to ann's
    status, read = await api.call("GET", f"/llamalith/chat/api/jobs/{job['job_id']}", "root")
    assert status == 200 and read["id"] == job["job_id"] and read["status"] == "queued"
    status, mine = await api.call("GET", "/llamalith/chat/api/status/s-1")
    assert status == 200 and (mine["job_id"], mine["status"], mine["response"]) == (
        job["job_id"],
        "queued",
        None,
    )


# ---------------------------------------------------------------- bots

BOT = {"name": "Sage", "model": "demo", "system_prompt": "be calm"}


def _bot_routes(app: web.Application) -> set[tuple[str, str]]:
    return {(m, t) for m, t in _chat_routes(app) if t.startswith("/v1/bots")}


async def _bot_events(api: Api) -> int:
    return len(await bus.read_all(api.nbus.js, "BOTS", ["bot.>"]))


async def _walk(api: Api, bot_id: str, user: str | None, body: dict[str, Any]) -> dict[tuple[str, str], int]:
    """The status of every route with a {bot_id} for this bot and caller."""
    seen = {}
    with_bot = sorted(
        (t for t in _bot_routes(api.app) if "{bot_id}" in t[1]), key=lambda t: (t[0] == "DELETE", t)
    )
    for method, template in with_bot:  # DELETE last: an allowed one ends the bot
        path = template.replace("{bot_id}", bot_id)
        assert "{" not in path, f"fill in the new path parameter of {template}"
        headers = api.auth(user) if user else {"Authorization": "Bearer x"}
        async with api.client.request(method, path, headers=headers, json=body) as resp:
            assert is_error(await resp.json(content_type=None)) or resp.status < 300, (method, template)
            seen[(method, template)] = resp.status
    return seen


async def test_another_users_private_bot_is_a_404_on_every_route(api: Api) -> None:
    """Every route with a {bot_id} answers 404 to bob for ann's private bot (and for no bot at all), 401
    without a key; the routes without one list or make the caller's own; a new unchecked route fails here."""
    routes = _bot_routes(api.app)
    assert {(m, t) for m, t in routes if "{bot_id}" not in t} == {
        ("POST", "/v1/bots"),
        ("GET", "/v1/bots"),
        ("POST", "/v1/bots/import"),
    }
    status, bot = await api.call("POST", "/v1/bots", json=BOT)
    assert status == 201
    events = await _bot_events(api)
    with_bot = {(m, t) for m, t in routes if "{bot_id}" in t}
    assert len(with_bot) >= 4
    assert set((await _walk(api, bot["bot_id"], "bob", BOT)).values()) == {404}
    assert set((await _walk(api, bot["bot_id"], None, BOT)).values()) == {401}
    assert set((await _walk(api, "bnosuch" + bot["bot_id"][::-1], "ann", BOT)).values()) == {404}
    assert await _bot_events(api) == events  # bob changed nothing
    for scope in ("usable", "mine", "store"):
        status, listed = await api.call("GET", f"/v1/bots?scope={scope}", "bob")
        assert status == 200 and listed["bots"] == [], scope
    # An admin reads and changes any bot (the walk ends with its DELETE).
    assert set((await _walk(api, bot["bot_id"], "root", BOT)).values()) == {200}


async def test_shared_and_public_bots_are_used_not_changed_by_others(api: Api) -> None:
    """Shared: bob (named) may read and export it, not change it (403); carol (not named) gets 404.
    Public: everyone reads and exports it, only the owner changes it."""
    await add_user(api.nbus.js, "carol")
    api.keys["carol"] = (await issue_key(api.nbus.js, "carol"))[1]
    status, shared = await api.call(
        "POST", "/v1/bots", json={**BOT, "visibility": "shared", "shared_with": ["bob"]}
    )
    assert status == 201
    status, public = await api.call("POST", "/v1/bots", json={**BOT, "visibility": "public"})
    assert status == 201
    events = await _bot_events(api)
    reads = {"GET"}
    for bot, users, strangers in ((shared, ["bob"], ["carol"]), (public, ["bob", "carol"], [])):
        for user in users:
            for (method, template), got in (await _walk(api, bot["bot_id"], user, BOT)).items():
                assert got == (200 if method in reads else 403), (user, method, template, got)
        for user in strangers:
            assert set((await _walk(api, bot["bot_id"], user, BOT)).values()) == {404}
    assert await _bot_events(api) == events
    status, listed = await api.call("GET", "/v1/bots", "carol")
    assert [b["bot_id"] for b in listed["bots"]] == [public["bot_id"]]


async def test_routes_every_signed_in_user_reads_answer_them_and_not_anonymous_callers(api: Api) -> None:
    """The leaderboard (votes of everyone, named by model only): 200 to any user and an admin, 401 without
    a key or with a bad one."""
    paths = {route.name: route.resource.canonical for route in api.app.router.routes() if route.resource}
    for name in sorted(READ_BY_EVERYONE):
        path = paths[name]
        for user in ("ann", "bob", "root"):
            status, body = await api.call("GET", path, user)
            assert status == 200 and not is_error(body), (name, user, body)
        for headers in ({}, {"Authorization": "Bearer x"}):
            async with api.client.get(path, headers=headers) as resp:
                assert resp.status == 401 and is_error(await resp.json()), (name, headers)


async def test_a_webhook_secret_is_the_callers_own_and_signs_only_their_jobs(api: Api) -> None:
    """POST /v1/me/webhook-secret makes the caller's secret (KV key: their id), shown once; another
    user's call makes their own and leaves the first alone; no key: 401."""
    from identity.webhook_secrets import webhook_secret_of

    status, ann = await api.call("POST", "/v1/me/webhook-secret", "ann")
    assert status == 201 and ann["secret"].startswith("whsec_")
    status, bob = await api.call("POST", "/v1/me/webhook-secret", "bob")
    assert status == 201 and bob["secret"] != ann["secret"]
    assert await webhook_secret_of(api.nbus.js, "ann") == ann["secret"]
    assert await webhook_secret_of(api.nbus.js, "bob") == bob["secret"]
    status, again = await api.call("POST", "/v1/me/webhook-secret", "ann")
    assert status == 201 and again["secret"] != ann["secret"]
    assert await webhook_secret_of(api.nbus.js, "ann") == again["secret"]  # the new one replaces it
    status, body = await api.call("POST", "/v1/me/webhook-secret", None)
    assert status == 401 and is_error(body)
