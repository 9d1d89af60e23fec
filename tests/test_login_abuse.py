"""Attacks on logging in, performed against the real app and NATS: a flood of bogus logins, parallel
guesses, guesses spread over names, registrations in bulk (issue 13 items 2 and 3)."""

from __future__ import annotations

import asyncio
import secrets
import subprocess
import sys
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import aiohttp
import msgspec
from aiohttp.test_utils import TestClient, TestServer

from identity.attempts import counted_address
from identity.sessions import set_password
from services.api import create_app
from tests.apihelp import SETTINGS, Api
from tests.stack import ROOT

PASSWORD = "correct horse battery"
OTHER_ADDRESS = "127.0.0.2"  # Linux answers the whole 127/8 on loopback: a second client address


@asynccontextmanager
async def _app(api: Api, **settings: Any) -> AsyncIterator[TestClient]:
    """The API over the test's bus with these settings changed."""
    app = create_app(msgspec.structs.replace(SETTINGS, **settings), api.nbus)
    async with TestClient(TestServer(app)) as client:
        yield client


async def _login(client: TestClient, user: str, password: str, **kw: Any) -> tuple[int, dict[str, Any]]:
    async with client.post("/v1/login", json={"user": user, "password": password}, **kw) as resp:
        return resp.status, {**await resp.json(), "retry_after": resp.headers.get("Retry-After")}


async def _login_from(client: TestClient, address: str, user: str, password: str) -> int:
    """Log in over a connection from another local address (the server sees that peer address)."""
    connector = aiohttp.TCPConnector(local_addr=(address, 0))
    async with aiohttp.ClientSession(connector=connector) as session:
        url = client.make_url("/v1/login")
        async with session.post(url, json={"user": user, "password": password}) as resp:
            return resp.status


async def _flood(url: str, count: int) -> list[tuple[int, str | None]]:
    """`count` logins at once with random user names: (status, Retry-After) of each."""

    async def bogus(session: aiohttp.ClientSession) -> tuple[int, str | None]:
        body = {"user": f"nobody-{secrets.token_hex(6)}", "password": "not a password at all"}
        async with session.post(url, json=body) as resp:
            return resp.status, resp.headers.get("Retry-After")

    async with aiohttp.ClientSession() as session:
        return await asyncio.gather(*(bogus(session) for _ in range(count)))


async def test_forty_bogus_logins_do_not_stall_requests_made_with_a_key(api: Api) -> None:
    loop = asyncio.get_running_loop()
    # Only the hashing pool may limit here: the address limit is out of the way.
    async with _app(api, login_address_limit=1000, password_threads=2, password_queue=8) as client:

        async def key_get() -> float:
            start = loop.time()
            async with client.get("/v1/me", headers=api.auth("ann")) as resp:
                assert resp.status == 200
            return loop.time() - start

        await key_get()  # warm: the first request opens a connection
        # The attacker is another program: its 40 requests arrive together, whatever this loop does.
        flood = asyncio.ensure_future(
            asyncio.to_thread(asyncio.run, _flood(str(client.make_url("/v1/login")), 40))
        )
        took = []
        while not flood.done():  # a key's GET after another while the flood lasts
            took.append(await key_get())
        answers = await flood
    statuses = Counter(status for status, _ in answers)
    # ~0.1 s of argon2 each: the 40 on the event loop held a key's GET for seconds (5.8 s measured here).
    assert max(took) < 1.0, took
    # 2 threads + 8 waiting at a time: most of the 40 are refused at once, with a time to come back.
    assert set(statuses) == {401, 503} and statuses[503] >= 20, statuses
    assert all(retry for status, retry in answers if status == 503)


async def test_a_hundred_parallel_guesses_verify_at_most_the_limit_and_the_owner_still_logs_in(
    api: Api, nats_url: str
) -> None:
    await set_password(api.nbus.js, "bob", PASSWORD, by="root")
    limit = SETTINGS.login_limit
    guesses = [_login(api.client, "bob", f"guess number {i}") for i in range(100)]
    statuses = Counter(status for status, _ in await asyncio.gather(*guesses))
    # Before: each guess read the count, verified, then counted: 52 of 100 were verified here (401s).
    assert statuses[401] == limit and statuses[429] == 100 - limit, statuses
    status, body = await _login(api.client, "bob", PASSWORD)  # the attacker's address: refused
    assert (status, body["error"], body["retry_after"]) == (429, "too_many_attempts", "900")

    # The owner, from another address, is not locked out.
    assert await _login_from(api.client, OTHER_ADDRESS, "bob", PASSWORD) == 200
    # Nor is anybody else from the attacker's address.
    await set_password(api.nbus.js, "ann", PASSWORD, by="root")
    assert (await _login(api.client, "ann", PASSWORD))[0] == 200

    # An administrator clears the count: from that address too, then.
    command = [sys.executable, "-m", "services.cli", "admin", "user", "unlock", "bob", "--nats", nats_url]
    done = await asyncio.to_thread(subprocess.run, command, cwd=ROOT, capture_output=True, text=True)
    said = done.stdout + done.stderr
    assert done.returncode == 0 and "1 login count(s) cleared" in said, said
    assert (await _login(api.client, "bob", PASSWORD))[0] == 200


async def test_one_address_cannot_spread_guesses_over_many_names(api: Api) -> None:
    async with _app(api, login_address_limit=8) as client:
        statuses = [(await _login(client, f"someone-{i}", "a wrong password"))[0] for i in range(10)]
        assert statuses == [401] * 8 + [429] * 2
        await set_password(api.nbus.js, "ann", PASSWORD, by="root")
        assert (await _login(client, "ann", PASSWORD))[0] == 429  # this address, whatever the name
        assert await _login_from(client, OTHER_ADDRESS, "ann", PASSWORD) == 200


async def test_a_success_does_not_count_against_the_address(api: Api) -> None:
    await set_password(api.nbus.js, "ann", PASSWORD, by="root")
    async with _app(api, login_address_limit=3) as client:
        for _ in range(6):  # an office behind one NAT logging in all morning
            assert (await _login(client, "ann", PASSWORD))[0] == 200


async def test_registration_is_limited_per_address(api: Api) -> None:
    async with _app(api, self_registration=True, register_limit=3) as client:
        statuses = []
        for i in range(5):
            async with client.post("/v1/register", json={"user": f"bot-{i}", "password": PASSWORD}) as resp:
                statuses.append(resp.status)
                if resp.status == 429:
                    assert (await resp.json())["error"] == "too_many_attempts" and resp.headers["Retry-After"]
        assert statuses == [201, 201, 201, 429, 429]
        connector = aiohttp.TCPConnector(local_addr=(OTHER_ADDRESS, 0))
        async with aiohttp.ClientSession(connector=connector) as elsewhere:
            body = {"user": "human", "password": PASSWORD}
            async with elsewhere.post(client.make_url("/v1/register"), json=body) as resp:
                assert resp.status == 201


async def test_behind_a_trusted_proxy_the_forwarded_client_is_counted_not_the_proxy(api: Api) -> None:
    await set_password(api.nbus.js, "bob", PASSWORD, by="root")
    async with _app(api, trusted_proxies=("127.0.0.1/32",)) as client:

        async def via_proxy(forwarded_for: str, password: str) -> int:
            headers = {"X-Forwarded-For": forwarded_for}
            return (await _login(client, "bob", password, headers=headers))[0]

        attacker = "203.0.113.7"
        for _ in range(SETTINGS.login_limit):
            assert await via_proxy(attacker, "a wrong guess") == 401
        assert await via_proxy(attacker, PASSWORD) == 429
        # The hops left of the proxy's are the client's to write: a made-up one changes nothing.
        assert await via_proxy(f"198.51.100.1, {attacker}", PASSWORD) == 429
        assert (
            await via_proxy("198.51.100.20", PASSWORD) == 200
        )  # the owner, elsewhere, through the same proxy
    async with _app(api) as untrusted:  # from a peer that is no trusted proxy the header means nothing
        for i in range(SETTINGS.login_limit):
            headers = {"X-Forwarded-For": f"198.51.100.{i}"}
            assert (await _login(untrusted, "bob", "a wrong guess", headers=headers))[0] == 401
        headers = {"X-Forwarded-For": "198.51.100.200"}
        assert (await _login(untrusted, "bob", PASSWORD, headers=headers))[0] == 429  # all were 127.0.0.1


def test_an_ipv6_client_counts_by_its_64_and_a_mapped_ipv4_as_ipv4() -> None:
    assert (
        counted_address("2001:db8:1:2:aaaa::1")
        == counted_address("2001:db8:1:2:bbbb::9")
        == "2001:db8:1:2::/64"
    )
    assert counted_address("2001:db8:1:3::1") != counted_address("2001:db8:1:2::1")
    assert counted_address("::ffff:192.0.2.4") == counted_address("192.0.2.4") == "192.0.2.4"
