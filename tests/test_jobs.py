"""Jobs over plain HTTP on the real stack (a real nats-server, the projector, a demo worker, the API on a
port): submit, poll, read; sessions; cancel; lists; bad input; other users."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from bus import Bus
from identity.accounts import add_user, issue_key
from schemas.chat import ChatCreated, ReplyRequested
from services.api import ApiSettings
from tests.apihelp import Api, serve_model
from tests.stack import Client, chat_events, in_process_stack, wait_caught_up

SHORT = {"max_new_tokens": 4, "ignore_eos": True, "temperature": 0.0}
LONG = {"max_new_tokens": 3000, "ignore_eos": True}


async def poll(client: Client, job_id: str, until: frozenset[str] = frozenset({"done"})) -> dict[str, Any]:
    """Poll GET /v1/jobs/{job_id} as n8n would, until its status is one of `until` (or it ended otherwise)."""
    for _ in range(600):
        status, body = await client.call("GET", f"/v1/jobs/{job_id}")
        assert status == 200, body
        if body["status"] in until or body["status"] in ("error", "expired", "cancelled", "done"):
            return body
        await asyncio.sleep(0.1)
    raise TimeoutError(f"job {job_id} still {body['status']}")


async def submit(client: Client, **fields: Any) -> dict[str, Any]:
    status, body = await client.call("POST", "/v1/jobs", json={"params": SHORT, **fields})
    assert status == 202, body
    return body


async def _request_of(nbus: Bus, chat_id: str, job_id: str) -> ReplyRequested:
    for event in await chat_events(nbus, chat_id):
        if isinstance(event, ReplyRequested) and event.job is not None and event.job.job_id == job_id:
            return event
    raise AssertionError(f"no request of {job_id}")


async def test_the_n8n_loop_and_a_session_that_keeps_its_history(nbus: Bus, stack: dict[str, str]) -> None:
    """Submit, poll to done, read the result; the session's second job sees the first job's turn; the
    session's latest; the list with its filters and cursor; the chat list hides jobs' chats."""
    async with Client(stack["base"], stack["ann"]) as ann:
        first = await submit(ann, input="What is a cat?", model="demo", session_id="n8n:flow-1")
        assert first["status"] == "queued" and first["status_url"] == f"/v1/jobs/{first['job_id']}"
        done = await poll(ann, first["job_id"])
        assert done["status"] == "done" and done["result"] and done["input"] == "What is a cat?"
        assert done["usage"]["completion_tokens"] == 4 and done["error"] is None
        assert [(a["attempt"], a["outcome"]) for a in done["attempts"]] == [(1, "done")]
        assert done["started_at"] and done["finished_at"] and done["session_id"] == "n8n:flow-1"

        second = await submit(ann, input="And a dog?", session_id="n8n:flow-1")  # the default model
        assert second["chat_id"] == first["chat_id"]
        request = await _request_of(nbus, second["chat_id"], second["job_id"])
        first_request = await _request_of(nbus, first["chat_id"], first["job_id"])
        # The second job's context: the first job's message and its answer, then its own message.
        assert request.context == [first_request.message_id, first_request.reply_id, request.message_id]
        await poll(ann, second["job_id"])
        status, latest = await ann.call("GET", "/v1/sessions/n8n:flow-1/latest")
        assert status == 200 and latest["job_id"] == second["job_id"] and latest["status"] == "done"
        assert (await ann.call("GET", "/v1/sessions/never-used/latest"))[0] == 404

        other = await submit(ann, input="Alone", model="demo")  # no session: a chat of its own
        assert other["chat_id"] != first["chat_id"] and other["session_id"] is None
        await poll(ann, other["job_id"])
        await wait_caught_up(nbus)
        status, page = await ann.call("GET", "/v1/jobs?limit=2")
        assert status == 200 and [j["job_id"] for j in page["items"]] == [other["job_id"], second["job_id"]]
        status, rest = await ann.call("GET", f"/v1/jobs?limit=2&cursor={page['next_cursor']}")
        assert [j["job_id"] for j in rest["items"]] == [first["job_id"]] and rest["next_cursor"] is None
        _, session = await ann.call("GET", "/v1/jobs?session_id=n8n:flow-1&status=done")
        assert [j["job_id"] for j in session["items"]] == [second["job_id"], first["job_id"]]
        _, queued = await ann.call("GET", "/v1/jobs?status=queued")
        assert queued["items"] == []
        _, chats = await ann.call("GET", "/v1/chats")
        assert first["chat_id"] not in {c["chat_id"] for c in chats["items"]}  # hidden like "openai"
        _, jobs_chats = await ann.call("GET", "/v1/chats?origin=jobs")
        assert {c["chat_id"] for c in jobs_chats["items"]} == {first["chat_id"], other["chat_id"]}

    async with Client(stack["base"], stack["bob"]) as bob:  # another user's job, list and session
        assert (await bob.call("GET", f"/v1/jobs/{first['job_id']}"))[0] == 404
        assert (await bob.call("POST", f"/v1/jobs/{first['job_id']}/cancel"))[0] == 404
        assert (await bob.call("GET", "/v1/sessions/n8n:flow-1/latest"))[0] == 404
        assert (await bob.call("GET", "/v1/jobs"))[1]["items"] == []
        mine = await submit(bob, input="Bob's own", model="demo", session_id="n8n:flow-1")
        assert mine["chat_id"] != first["chat_id"]  # the same session name, another user: another chat


async def test_messages_with_earlier_turns_and_a_bot(nbus: Bus, stack: dict[str, str]) -> None:
    """A `messages` job posts the earlier turns as context; a `bot` job takes the bot's model and prompt."""
    async with Client(stack["base"], stack["ann"]) as ann:
        messages = [
            {"role": "system", "content": "Be terse."},
            {"role": "user", "content": "Name a colour."},
            {"role": "assistant", "content": "Blue."},
            {"role": "user", "content": "Another?"},
        ]
        job = await submit(ann, messages=messages, model="demo")
        body = await poll(ann, job["job_id"])
        assert body["status"] == "done" and body["input"] == "Another?"
        events = await chat_events(nbus, job["chat_id"])
        request = await _request_of(nbus, job["chat_id"], job["job_id"])
        posted = {
            e.message_id: (e.role, e.content) for e in events if hasattr(e, "content") and hasattr(e, "role")
        }
        assert [posted[i] for i in request.context] == [
            ("user", "Name a colour."),
            ("assistant", "Blue."),
            ("user", "Another?"),
        ]
        assert events[0].system_prompt == "Be terse." and events[0].origin == "jobs"  # type: ignore[union-attr]

        bot = {
            "name": "Sage",
            "model": "demo",
            "system_prompt": "You are a sage.",
            "params": SHORT,
            "history": 1,
        }
        status, made = await ann.call("POST", "/v1/bots", json=bot)
        assert status == 201
        job = await submit(ann, messages=messages[1:], bot=made["bot_id"])
        assert (await poll(ann, job["job_id"]))["status"] == "done"
        created = (await chat_events(nbus, job["chat_id"]))[0]
        assert created.system_prompt == "You are a sage." and created.model == "demo"  # type: ignore[union-attr]
        request = await _request_of(nbus, job["chat_id"], job["job_id"])
        assert len(request.context) == 1 and request.context[0] == request.message_id  # its history: 1 turn
    async with Client(stack["base"], stack["bob"]) as bob:  # ann's private bot is not bob's to use
        status, body = await bob.call("POST", "/v1/jobs", json={"input": "x", "bot": made["bot_id"]})
        assert status == 404, body


async def test_bad_input_is_a_400_naming_the_field(stack: dict[str, str]) -> None:
    cases = [
        ({}, "input"),
        ({"input": "x", "messages": [{"role": "user", "content": "y"}]}, "input"),
        ({"input": ""}, "input"),
        ({"input": "x", "model": "demo", "bot": "b1"}, "bot"),
        ({"input": "x", "deadline_seconds": 0}, "deadline_seconds"),
        ({"input": "x", "deadline_seconds": 86401}, "deadline_seconds"),
        ({"input": "x", "max_attempts": 11}, "max_attempts"),
        ({"input": "x", "session_id": "no spaces"}, "session_id"),
        ({"input": "x", "session_id": "x" * 129}, "session_id"),
        ({"input": "x", "callback_url": "ftp://example.com/x"}, "callback_url"),
        ({"input": "x", "colour": "red"}, "colour"),
        ({"input": 5}, "input"),
        ({"messages": []}, "messages"),
        (
            {"messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}]},
            "messages[1]",
        ),
        ({"messages": [{"role": "robot", "content": "a"}]}, "messages[0].role"),
        ({"input": "x", "params": {"temperature": -1}}, "params.temperature"),
    ]
    async with Client(stack["base"], stack["ann"]) as ann:
        for body, field in cases:
            status, answer = await ann.call("POST", "/v1/jobs", json=body)
            assert status == 400 and answer["message"].startswith(f"{field}:"), (body, answer)
        status, answer = await ann.call("POST", "/v1/jobs", json={"input": "x", "model": "nobody-serves"})
        assert (status, answer["error"]) == (409, "model_unavailable")
        await submit(ann, input="x", session_id="prompted", system_prompt="Be kind.")
        status, answer = await ann.call(
            "POST", "/v1/jobs", json={"input": "y", "session_id": "prompted", "system_prompt": "Be rude."}
        )
        assert (status, answer["error"]) == (409, "session_exists_with_other_prompt")
        await submit(ann, input="z", session_id="prompted", system_prompt="Be kind.")  # the same: fine
        await submit(ann, input="z", session_id="prompted")  # none: the session's
        other = [{"role": "system", "content": "Be rude."}, {"role": "user", "content": "y"}]
        body = {"messages": other, "session_id": "prompted"}
        status, answer = await ann.call("POST", "/v1/jobs", json=body)
        assert (status, answer["error"]) == (409, "session_exists_with_other_prompt")
        for job_id in ("nodash", "c1-r2-r3", "c1-", "-r1", "c1-r1"):
            status, answer = await ann.call("GET", f"/v1/jobs/{job_id}")
            assert status == 404 and answer["error"] == "not_found", job_id


async def test_cancel_a_queued_and_a_running_job(nbus: Bus, tmp_path: Path, demo_model_dir: Path) -> None:
    """With one slot, a long job runs and the next waits: cancelling the queued one skips it, the running
    one stops; both read `cancelled`; a cancel after the end is a 409."""
    await add_user(nbus.js, "ann")
    key = (await issue_key(nbus.js, "ann"))[1]
    settings = ApiSettings(default_model="demo")
    async with in_process_stack(nbus, tmp_path / "read.duckdb", demo_model_dir, settings, capacity=1) as (
        base,
        _,
    ):
        async with Client(base, key) as ann:
            running = await submit(ann, input="Talk a long time.", model="demo", params=LONG)
            assert (await poll(ann, running["job_id"], frozenset({"processing"})))["status"] == "processing"
            queued = await submit(ann, input="Wait your turn.", model="demo", params=LONG)
            late = await submit(ann, input="Quick, please.", model="demo", deadline_seconds=1)
            await asyncio.sleep(0.5)
            assert (await ann.call("GET", f"/v1/jobs/{queued['job_id']}"))[1]["status"] == "queued"
            await asyncio.sleep(0.7)  # past the late job's deadline, still queued behind the long one
            _, expired = await ann.call("GET", f"/v1/jobs/{late['job_id']}")
            assert expired["status"] == "expired" and expired["error"]["code"] == "expired"
            assert expired["deadline_at"] and expired["attempts"] == []
            await wait_caught_up(nbus)
            _, listed = await ann.call("GET", "/v1/jobs?status=expired")
            assert [j["job_id"] for j in listed["items"]] == [late["job_id"]]
            _, listed = await ann.call("GET", "/v1/jobs?status=queued")
            assert [j["job_id"] for j in listed["items"]] == [queued["job_id"]]
            status, answer = await ann.call("POST", f"/v1/jobs/{queued['job_id']}/cancel")
            assert (status, answer) == (202, {"job_id": queued["job_id"], "status": "queued"})
            status, answer = await ann.call("POST", f"/v1/jobs/{running['job_id']}/cancel")
            assert (status, answer["status"]) == (202, "processing")
            stopped = await poll(ann, running["job_id"], frozenset({"cancelled"}))
            assert stopped["status"] == "cancelled" and stopped["attempts"][0]["outcome"] == "cancelled"
            assert stopped["usage"]["completion_tokens"] < 3000
            skipped = await poll(ann, queued["job_id"], frozenset({"cancelled"}))
            assert skipped["status"] == "cancelled" and skipped["usage"]["completion_tokens"] == 0
            status, answer = await ann.call("POST", f"/v1/jobs/{running['job_id']}/cancel")
            assert (status, answer["error"]) == (409, "job_finished")


async def test_two_first_jobs_of_a_session_at_once_make_one_chat(api: Api) -> None:
    """The session's chat is created with a fenced `chat.created`: the loser of the race posts into it."""
    await serve_model(api.nbus)
    body = {"input": "hi", "model": "demo", "session_id": "race"}
    answers = await asyncio.gather(*(api.call("POST", "/v1/jobs", json=body) for _ in range(4)))
    assert {status for status, _ in answers} == {202}
    chat_ids = {job["chat_id"] for _, job in answers}
    assert len(chat_ids) == 1
    events = await chat_events(api.nbus, chat_ids.pop())
    assert sum(isinstance(e, ChatCreated) for e in events) == 1
    assert sum(isinstance(e, ReplyRequested) for e in events) == 4


async def test_an_erased_session_is_not_made_again(api: Api) -> None:
    """A session whose chat was erased answers 409 `session_erased`, and nothing follows its tombstone."""
    await serve_model(api.nbus)
    body = {"input": "hi", "model": "demo", "session_id": "gone"}
    status, job = await api.call("POST", "/v1/jobs", json=body)
    assert status == 202
    assert (await api.call("POST", f"/v1/chats/{job['chat_id']}/erase"))[0] == 200
    status, answer = await api.call("POST", "/v1/jobs", json=body)
    assert (status, answer["error"]) == (409, "session_erased")
    assert [type(e).__name__ for e in await chat_events(api.nbus, job["chat_id"])] == ["ChatErased"]


async def test_a_callback_url_is_checked_at_submit(api: Api) -> None:
    """A callback the API can already see is refused (not http(s), credentials, a literal address that is
    not public) is a 400 naming `callback_url`; one from a caller without a webhook secret is a 409
    `no_webhook_secret` (nothing could verify its signature); with a secret, a named host is accepted."""
    await serve_model(api.nbus)
    hook = "https://hooks.example.com/x"
    ask = {"input": "x", "model": "demo"}
    refused = [
        "http://127.0.0.1:5678/x",
        "http://[::1]/x",
        "http://10.0.0.5/x",
        "http://169.254.169.254/latest/meta-data",
        "file:///etc/passwd",
        "https://user:pw@hooks.example.com/x",
        "http://[::1/x",
        "https:///x",
    ]
    for url in refused:  # judged before the secret (ann has none yet)
        status, answer = await api.call("POST", "/v1/jobs", json={**ask, "callback_url": url})
        assert status == 400 and answer["message"].startswith("callback_url:"), (url, answer)
    status, answer = await api.call("POST", "/v1/jobs", json={**ask, "callback_url": hook})
    assert (status, answer["error"]) == (409, "no_webhook_secret")
    assert "POST /v1/me/webhook-secret" in answer["message"]
    assert (await api.call("POST", "/v1/me/webhook-secret"))[0] == 201
    status, job = await api.call("POST", "/v1/jobs", json={**ask, "callback_url": hook})
    assert status == 202, job
    status, body = await api.call("GET", f"/v1/jobs/{job['job_id']}")
    assert status == 200 and body["callback_url"] == hook
    status, answer = await api.call("POST", "/v1/jobs", "bob", json={**ask, "callback_url": hook})
    assert (status, answer["error"]) == (409, "no_webhook_secret")  # a secret is the caller's own
