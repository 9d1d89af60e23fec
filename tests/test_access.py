"""Access: nobody but a chat's owner (and admins where the route says) reaches a chat on any route of
the API's route table, checked against a real nats-server and the in-process projector."""

from __future__ import annotations

from aiohttp import web

from tests.apihelp import Api, chat_events, is_error, serve_model

NOT_CHECKED = {
    "healthz",
    "readyz",
    "openapi",
    "models",
    "openai.chat_completions",
    "me",
    "me.consent",
    "login",
    "logout",
    "register",
    "ui",
    "ui.static",
}  # no chat: public, or acting on the caller only


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
    # Routes without a chat: creating or listing one's own, images (tests/test_images_api.py walks those),
    # and admin routes (walked below).
    outside = {(m, t) for m, t in walked - with_chat if not t.startswith(("/v1/images", "/v1/admin/"))}
    assert outside <= {("POST", "/v1/chats"), ("GET", "/v1/chats")}
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
