"""Who the API lets in: API keys from the log until revoked, 401 JSON without one, public routes."""

from __future__ import annotations

import re

import pytest

import bus
from bus import Bus
from identity.accounts import UserExists, add_user, authenticate, issue_key, revoke_key
from tests.apihelp import Api, is_error

# ---------------------------------------------------------------- identity


async def test_identity_keys_authenticate_until_revoked(nbus: Bus) -> None:
    await add_user(nbus.js, "cat")
    with pytest.raises(UserExists):
        await add_user(nbus.js, "cat")
    with pytest.raises(bus.ConcurrencyConflict):
        await add_user(nbus.js, "cat", role="admin")
    for bad in ("Cat", "c.at", "", "c" * 65):
        with pytest.raises(ValueError):
            await add_user(nbus.js, bad)
    with pytest.raises(ValueError):
        await issue_key(nbus.js, "nobody")
    key_id, key = await issue_key(nbus.js, "cat", label="laptop")
    assert re.fullmatch(rf"cb_{key_id}_[A-Za-z0-9_-]{{43}}", key)
    principal = await authenticate(nbus.js, key)
    assert principal is not None and (principal.user_id, principal.role, principal.key_id) == (
        "cat",
        "user",
        key_id,
    )
    stored = await bus.read_all(nbus.js, "IDENTITY", [f"apikey.{key_id}.>"])
    assert key.encode() not in stored[0].data and key.split("_", 2)[2].encode() not in stored[0].data
    assert await authenticate(nbus.js, key[:-1] + ("A" if key[-1] != "A" else "B")) is None
    assert await authenticate(nbus.js, "cb_nope_" + "x" * 40) is None
    assert await authenticate(nbus.js, "garbage") is None
    await revoke_key(nbus.js, key_id)
    await revoke_key(nbus.js, key_id)  # idempotent
    assert await authenticate(nbus.js, key) is None
    with pytest.raises(ValueError):
        await revoke_key(nbus.js, "knothere")


# ---------------------------------------------------------------- auth


async def test_requests_without_a_valid_key_get_401_json(api: Api) -> None:
    for headers in (
        {},
        {"Authorization": "Bearer nonsense"},
        {"Authorization": "Basic abc"},
        {"Authorization": "Bearer cb_kabc_" + "x" * 43},
    ):
        async with api.client.get("/v1/chats", headers=headers) as resp:
            assert resp.status == 401
            assert is_error(await resp.json())
    key_id, key = await issue_key(api.nbus.js, "ann")
    async with api.client.get("/v1/models", headers={"Authorization": f"Bearer {key}"}) as resp:
        assert resp.status == 200
    await revoke_key(api.nbus.js, key_id)
    async with api.client.get("/v1/models", headers={"Authorization": f"Bearer {key}"}) as resp:
        assert resp.status == 401


async def test_public_routes_need_no_key(api: Api) -> None:
    assert await api.call("GET", "/healthz", None) == (200, {"status": "ok"})
    assert await api.call("GET", "/readyz", None) == (200, {"status": "ready"})
    status, doc = await api.call("GET", "/v1/openapi.json", None)
    assert status == 200 and doc["openapi"].startswith("3.")
    status, body = await api.call("GET", "/nowhere", None)
    assert status == 404 and is_error(body)
