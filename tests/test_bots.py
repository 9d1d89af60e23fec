"""Bots over HTTP and the admin CLI, against a real nats-server: create, list by scope, read, replace under a
fence, delete, export and import; the events in BOTS say the same."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any, get_args

import msgspec
import pytest
from aiohttp.test_utils import TestClient, TestServer
from typer.testing import CliRunner

import bus
import schemas
from schemas.api_bots import MAX_BOTS_PER_IMPORT
from schemas.bot import BotCreated, BotDeleted, BotUpdated, Visibility
from services.api import create_app
from services.cli.admin_bots import VisibilityChoice
from services.cli.app import app
from tests.apihelp import SETTINGS, Api, is_error

SAGE = {
    "name": "Zen Sage",
    "model": "demo",
    "system_prompt": "You answer in koans.",
    "params": {"temperature": 0.8, "max_new_tokens": 64},
    "history": 10,
    "delay_s": 5,
    "description": "calm",
}


async def _bot_events(api: Api) -> list[schemas.Event]:
    return [schemas.decode_event(m.data) for m in await bus.read_all(api.nbus.js, "BOTS", ["bot.>"])]


async def _create(api: Api, user: str = "ann", **fields: Any) -> dict[str, Any]:
    status, body = await api.call("POST", "/v1/bots", user, json={**SAGE, **fields})
    assert status == 201, body
    return body


def test_the_clis_visibility_choices_are_the_schemas() -> None:
    assert {v.value for v in VisibilityChoice} == set(get_args(Visibility))


async def test_create_get_and_the_event_it_appends(api: Api) -> None:
    created = await _create(api)
    assert created["name"] == "Zen Sage" and created["owner_id"] == created["owner_name"] == "ann"
    assert created["mine"] and created["visibility"] == "private" and created["shared_with"] == []
    assert created["params"]["temperature"] == 0.8 and created["history"] == 10 and created["delay_s"] == 5
    status, got = await api.call("GET", f"/v1/bots/{created['bot_id']}")
    assert status == 200 and got == created
    (event,) = await _bot_events(api)
    assert (
        isinstance(event, BotCreated)
        and event.owner_id == "ann"
        and event.spec.system_prompt == SAGE["system_prompt"]
    )
    assert created["version"] > 0


@pytest.mark.parametrize(
    "fields, status, words",
    [
        ({"name": "@sage"}, 422, "name"),
        ({"name": ""}, 422, "name"),
        ({"model": "no spaces"}, 422, "model"),
        ({"params": {"temperature": 9}}, 422, "temperature"),
        ({"history": -1}, 422, "history"),
        ({"owner_id": "bob"}, 422, "owner_id"),
        ({"shared_with": ["bob"]}, 400, "shared_with"),
        ({"visibility": "shared", "shared_with": ["carol"]}, 400, "carol"),
        ({"visibility": "secret"}, 422, "visibility"),
    ],
)
async def test_bad_bodies_are_refused_naming_what_is_wrong(
    api: Api, fields: dict[str, Any], status: int, words: str
) -> None:
    answer, body = await api.call("POST", "/v1/bots", json={**SAGE, **fields})
    assert answer == status and is_error(body) and words in body["message"], body
    assert await _bot_events(api) == []


async def test_scopes_sharing_and_the_store(api: Api) -> None:
    private = await _create(api, name="Mine")
    shared = await _create(api, name="Shared", visibility="shared", shared_with=["Bob", "bob"])
    public = await _create(api, name="Public", visibility="public")
    bobs = await _create(api, "bob", name="Bobs")
    assert shared["shared_with"] == ["bob"]  # names back, each once, lowercase as logins are

    async def names(user: str, scope: str = "") -> list[str]:
        status, body = await api.call("GET", f"/v1/bots{scope and '?scope=' + scope}", user)
        assert status == 200, body
        return [b["name"] for b in body["bots"]]

    assert await names("ann") == ["Mine", "Public", "Shared"]
    assert await names("ann", "mine") == ["Mine", "Public", "Shared"]
    assert await names("bob") == ["Bobs", "Public", "Shared"]
    assert await names("bob", "mine") == ["Bobs"]
    assert await names("bob", "store") == await names("root", "store") == ["Public"]
    assert await names("root") == ["Public"]  # an admin's own list is theirs, not everyone's
    assert await names("root", "all") == ["Bobs", "Mine", "Public", "Shared"]
    assert (await api.call("GET", "/v1/bots?scope=all", "bob"))[0] == 403
    assert (await api.call("GET", "/v1/bots?scope=everything", "bob"))[0] == 400

    status, seen = await api.call("GET", f"/v1/bots/{shared['bot_id']}", "bob")
    assert status == 200 and not seen["mine"] and seen["shared_with"] == []  # who else: the owner's business
    assert (await api.call("GET", f"/v1/bots/{public['bot_id']}", "bob"))[0] == 200
    assert (await api.call("GET", f"/v1/bots/{private['bot_id']}", "bob"))[0] == 404
    assert (await api.call("GET", f"/v1/bots/{private['bot_id']}", "root"))[0] == 200
    assert (await api.call("GET", f"/v1/bots/{bobs['bot_id']}"))[0] == 404
    # Using is not owning: bob may read the public bot but not change or delete it.
    assert (await api.call("PUT", f"/v1/bots/{public['bot_id']}", "bob", json=SAGE))[0] == 403
    assert (await api.call("DELETE", f"/v1/bots/{public['bot_id']}", "bob"))[0] == 403


async def test_put_replaces_the_definition_and_delete_removes_it(api: Api) -> None:
    bot = await _create(api)
    path = f"/v1/bots/{bot['bot_id']}"
    status, put = await api.call("PUT", path, json={"name": "Sage", "model": "demo", "visibility": "public"})
    assert status == 200, put
    assert put["name"] == "Sage" and put["system_prompt"] == "" and put["history"] == 0  # whole definition
    assert put["version"] > bot["version"] and put["created_at"] == bot["created_at"]
    assert (await api.call("GET", path, "bob"))[1]["name"] == "Sage"
    status, admin_put = await api.call("PUT", path, "root", json={**SAGE, "visibility": "public"})
    assert status == 200 and admin_put["owner_id"] == "ann" and not admin_put["mine"]

    status, deleted = await api.call("DELETE", path)
    assert status == 200 and deleted["seq"] > admin_put["version"]
    for user in ("ann", "bob", "root"):
        assert (await api.call("GET", path, user))[0] == 404
    assert (await api.call("PUT", path, json=SAGE))[0] == 404
    assert (await api.call("DELETE", path))[0] == 404
    assert (await api.call("GET", "/v1/bots?scope=mine"))[1]["bots"] == []
    kinds = [type(e) for e in await _bot_events(api)]
    assert kinds == [BotCreated, BotUpdated, BotUpdated, BotDeleted]
    updates = [e for e in await _bot_events(api) if isinstance(e, BotUpdated)]
    assert [u.by for u in updates] == ["ann", "root"]


async def test_a_put_from_an_old_version_loses_the_fence(api: Api) -> None:
    """Five editors read version v and save at once: one wins, four get 409, one update in the log."""
    bot = await _create(api)
    path = f"/v1/bots/{bot['bot_id']}"
    version = f'"{bot["version"]}"'
    answers = await asyncio.gather(
        *(
            api.call("PUT", path, json={**SAGE, "name": f"Sage {n}"}, headers={"If-Match": version})
            for n in range(5)
        )
    )
    statuses = sorted(status for status, _ in answers)
    assert statuses == [200, 409, 409, 409, 409], answers
    assert all(is_error(body) for status, body in answers if status == 409)
    updates = [e for e in await _bot_events(api) if isinstance(e, BotUpdated)]
    (winner,) = (body for status, body in answers if status == 200)
    assert len(updates) == 1 and updates[0].spec.name == winner["name"]
    # The winner's version is the current one: a save from it passes, a delete from the old one does not.
    assert (await api.call("DELETE", path, headers={"If-Match": version}))[0] == 409
    status, _ = await api.call("PUT", path, json=SAGE, headers={"If-Match": f'"{winner["version"]}"'})
    assert status == 200
    assert (await api.call("PUT", path, json=SAGE, headers={"If-Match": "yesterday"}))[0] == 400


async def test_export_then_import_makes_the_same_bot_for_the_importer(api: Api) -> None:
    bot = await _create(api, visibility="public")
    status, exported = await api.call("GET", f"/v1/bots/{bot['bot_id']}/export", "bob")
    assert status == 200
    assert exported == {"chatbus_bot": 1, **SAGE, "params": exported["params"], "visibility": "public"}
    assert exported["params"]["temperature"] == 0.8 and "owner_id" not in exported

    status, imported = await api.call("POST", "/v1/bots/import", "bob", json=exported)
    assert status == 201, imported
    (copy,) = imported["bots"]
    assert copy["owner_id"] == "bob" and copy["bot_id"] != bot["bot_id"] and copy["visibility"] == "public"
    same = ("name", "model", "system_prompt", "params", "history", "delay_s", "description")
    assert {k: copy[k] for k in same} == {k: bot[k] for k in same}

    private = {k: v for k, v in exported.items() if k != "visibility"}
    status, many = await api.call(
        "POST", "/v1/bots/import", "bob", json=[private, {**private, "name": "Other"}]
    )
    assert status == 201 and [b["name"] for b in many["bots"]] == ["Zen Sage", "Other"]
    assert {b["visibility"] for b in many["bots"]} == {"private"}
    status, mine = await api.call("GET", "/v1/bots?scope=mine", "bob")
    assert len(mine["bots"]) == 3


@pytest.mark.parametrize(
    "body, words",
    [
        ({"name": "x", "model": "demo"}, "chatbus_bot"),
        ([{"chatbus_bot": 1, "name": "x", "model": "demo"}, {"chatbus_bot": 1, "name": "y"}], "$[1]"),
        ([{"chatbus_bot": 1, "name": "x", "model": "demo", "params": {"top_p": 2}}], "params.top_p"),
        ({"chatbus_bot": 2, "name": "x", "model": "demo"}, "chatbus_bot"),
        ({"chatbus_bot": 1, "name": "x", "model": "demo", "bot_id": "b1"}, "bot_id"),
        ([], "no bot"),
        ("a bot", "chatbus bot"),
        (
            [{"chatbus_bot": 1, "name": "x", "model": "demo"}]
            + [
                {
                    "chatbus_bot": 1,
                    "name": "y",
                    "model": "demo",
                    "visibility": "shared",
                    "shared_with": ["zed"],
                }
            ],
            "$[1].shared_with: no user 'zed'",
        ),
    ],
)
async def test_a_bad_import_is_a_400_naming_the_field_and_appends_nothing(
    api: Api, body: Any, words: str
) -> None:
    status, answer = await api.call("POST", "/v1/bots/import", json=body)
    assert status == 400 and is_error(answer) and words in answer["message"], answer
    assert await _bot_events(api) == []


async def test_import_limits(api: Api) -> None:
    one = {"chatbus_bot": 1, "name": "x", "model": "d"}
    body = json.dumps([one] * (MAX_BOTS_PER_IMPORT + 1))
    # The test API takes bodies of 4 KiB: the count is checked as soon as the body fits.
    status, answer = await api.call(
        "POST", "/v1/bots/import", data=body, headers={"Content-Type": "application/json"}
    )
    assert status == 413, answer
    status, answer = await api.call(
        "POST", "/v1/bots/import", data=b"{not json", headers={"Content-Type": "application/json"}
    )
    assert status == 400 and answer["error"] == "bad_bot_file" and "not valid JSON" in answer["message"]
    status, answer = await api.call(
        "POST", "/v1/bots/import", data=b"{}", headers={"Content-Type": "text/plain"}
    )
    assert status == 415
    assert await _bot_events(api) == []


async def test_an_import_takes_at_most_100_bots(api: Api) -> None:
    """With room in the body for more, the 101st bot is refused (400, nothing imported); 100 pass."""
    one = {"chatbus_bot": 1, "name": "x", "model": "d"}
    roomy = create_app(msgspec.structs.replace(SETTINGS, max_body_bytes=64_000), api.nbus)
    async with TestClient(TestServer(roomy)) as client:

        async def post(count: int) -> tuple[int, Any]:
            async with client.post("/v1/bots/import", json=[one] * count, headers=api.auth("ann")) as resp:
                return resp.status, await resp.json()

        status, answer = await post(MAX_BOTS_PER_IMPORT + 1)
        assert status == 400 and answer["error"] == "bad_bot_file" and "at most 100" in answer["message"]
        assert await _bot_events(api) == []
        status, answer = await post(MAX_BOTS_PER_IMPORT)
        assert status == 201 and len(answer["bots"]) == MAX_BOTS_PER_IMPORT
    assert len(await _bot_events(api)) == MAX_BOTS_PER_IMPORT


# ---------------------------------------------------------------- the admin CLI


def _cli(nats_url: str, *args: str) -> Any:
    return CliRunner().invoke(app, [*args, "--nats", nats_url], env={"COLUMNS": "200"})


async def test_admin_bot_commands(api: Api, nats_url: str, tmp_path: Path) -> None:
    prompt = tmp_path / "sage.txt"
    prompt.write_text("You answer in koans.\n")
    add = [
        "admin", "bot", "add", "--name", "Zen Sage", "--model", "demo", "--prompt-file", str(prompt),
        "--temperature", "0.8", "--delay", "5", "--history", "10", "--owner", "bob", "--visibility", "public",
        "--description", "calm",
    ]  # fmt: skip
    result = await asyncio.to_thread(_cli, nats_url, *add)
    assert result.exit_code == 0, result.output
    bot_id = result.stdout.strip()
    status, bot = await api.call("GET", f"/v1/bots/{bot_id}", "ann")
    assert status == 200 and bot["owner_id"] == "bob" and bot["visibility"] == "public"
    assert bot["system_prompt"] == "You answer in koans." and bot["params"]["temperature"] == 0.8
    assert (bot["delay_s"], bot["history"], bot["description"]) == (5, 10, "calm")

    listed = await asyncio.to_thread(_cli, nats_url, "admin", "bot", "list")
    assert listed.exit_code == 0 and "Zen Sage" in listed.stdout and bot_id in listed.stdout

    shown = await asyncio.to_thread(_cli, nats_url, "admin", "bot", "show", bot_id)
    assert shown.exit_code == 0 and json.loads(shown.stdout)["bot_id"] == bot_id

    out = tmp_path / "bots.json"
    exported = await asyncio.to_thread(_cli, nats_url, "admin", "bot", "export", "--all", "--out", str(out))
    assert exported.exit_code == 0, exported.output
    (item,) = json.loads(out.read_text())
    assert item["chatbus_bot"] == 1 and item["name"] == "Zen Sage"
    one = await asyncio.to_thread(_cli, nats_url, "admin", "bot", "export", bot_id)
    assert json.loads(one.stdout) == item

    imported = await asyncio.to_thread(_cli, nats_url, "admin", "bot", "import", str(out), "--owner", "ann")
    assert imported.exit_code == 0, imported.output
    status, mine = await api.call("GET", "/v1/bots?scope=mine", "ann")
    assert [b["name"] for b in mine["bots"]] == ["Zen Sage"] and mine["bots"][0]["bot_id"] in imported.stdout

    deleted = await asyncio.to_thread(_cli, nats_url, "admin", "bot", "delete", bot_id)
    assert deleted.exit_code == 0, deleted.output
    assert (await api.call("GET", f"/v1/bots/{bot_id}", "bob"))[0] == 404


async def test_admin_bot_errors_say_what_to_do(api: Api, nats_url: str, tmp_path: Path) -> None:
    missing = await asyncio.to_thread(
        _cli, nats_url, "admin", "bot", "add", "--name", "X", "--model", "demo", "--owner", "zed"
    )
    assert missing.exit_code == 1 and "chatbus admin user add zed" in missing.output
    no_admin = await asyncio.to_thread(
        _cli, nats_url, "admin", "bot", "add", "--name", "X", "--model", "demo"
    )
    assert no_admin.exit_code == 1 and "--owner" in no_admin.output  # the default owner `admin` is not here
    bad = tmp_path / "bad.json"
    bad.write_text('[{"chatbus_bot": 1, "name": "x"}]')
    refused = await asyncio.to_thread(_cli, nats_url, "admin", "bot", "import", str(bad), "--owner", "ann")
    assert refused.exit_code == 2 and "model" in refused.output
    unknown = await asyncio.to_thread(_cli, nats_url, "admin", "bot", "show", "bnosuch")
    assert unknown.exit_code == 1 and "chatbus admin bot list" in unknown.output
    assert await _bot_events(api) == []
