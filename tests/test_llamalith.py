"""Llamalith's routes (`/llamalith/chat/api/...`): the n8n loop over plain HTTP against a real stack (a
real NATS, the projector, a demo transformers worker, the API on a real port): submit, poll the job until
it is `done`, read `result`; a conversation's status; the jobs list by conversation, status and limit."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from bus import Bus
from identity.accounts import add_user, issue_key
from schemas.api_jobs import JobBody
from schemas.api_llamalith import LLAMALITH_STATUS, LLAMALITH_STATUSES
from schemas.chat import ReplyRequested
from schemas.job_status import JOB_STATUSES, JobError, WebhookInfo
from schemas.sampling import SamplingParams
from services.api import ApiSettings
from services.api.routes_llamalith import llamalith_job
from tests.stack import chat_events, in_process_stack

API = "/llamalith/chat/api"
ROW = {
    "id",
    "job_id",
    "conversation_id",
    "session_id",
    "user_input",
    "model",
    "system_prompt",
    "status",
    "result",
    "created_at",
    "processed_at",
    "chatbus_status",
}


@dataclass
class N8n:
    """What an n8n HTTP Request node does: plain HTTP with a Bearer key against a base URL."""

    base: str
    session: aiohttp.ClientSession
    key: str

    async def call(self, method: str, path: str, key: str | None = None, **kw: Any) -> tuple[int, Any]:
        headers = {"Authorization": f"Bearer {key or self.key}"}
        async with self.session.request(method, f"{self.base}{API}{path}", headers=headers, **kw) as resp:
            return resp.status, await resp.json()

    async def poll(self, job_id: str, timeout: float = 120.0) -> dict[str, Any]:
        """The n8n loop: Wait, GET the job, until it has ended."""
        deadline = asyncio.get_running_loop().time() + timeout
        while asyncio.get_running_loop().time() < deadline:
            status, job = await self.call("GET", f"/jobs/{job_id}")
            assert status == 200, job
            if job["status"] in ("done", "error"):
                return job
            await asyncio.sleep(0.2)
        raise AssertionError(f"job {job_id} never ended")

    async def listed(self, query: str, count: int, timeout: float = 30.0) -> list[dict[str, Any]]:
        """GET jobs?query until it lists `count` jobs (the list reads the read model, which lags the log)."""
        deadline = asyncio.get_running_loop().time() + timeout
        while True:
            status, body = await self.call("GET", f"/jobs?{query}")
            assert status == 200, body
            if len(body["jobs"]) >= count or asyncio.get_running_loop().time() > deadline:
                return body["jobs"]
            await asyncio.sleep(0.2)


@pytest.fixture
async def n8n(nbus: Bus, tmp_path: Path, demo_model_dir: Path) -> AsyncIterator[N8n]:
    for user in ("ann", "bob"):
        await add_user(nbus.js, user)
    key = (await issue_key(nbus.js, "ann"))[1]
    settings = ApiSettings(default_model="demo")
    short = SamplingParams(max_new_tokens=16)  # a job's length is not the point (256 tokens each took 13 s)
    db = tmp_path / "read.duckdb"
    async with in_process_stack(nbus, db, demo_model_dir, settings, capacity=4, defaults=short) as (base, _):
        async with aiohttp.ClientSession() as session:
            yield N8n(base, session, key)


async def test_the_n8n_loop_submit_poll_read_and_continue_the_conversation(n8n: N8n, nbus: Bus) -> None:
    status, submitted = await n8n.call("POST", "/submit", json={"user_input": "Say something."})
    assert status == 200, submitted
    assert submitted["status"] == "queued" and submitted["created_new"] is True
    conversation = submitted["conversation_id"]
    assert conversation and submitted["session_id"] == conversation  # a new conversation, named
    job = await n8n.poll(submitted["job_id"])
    assert set(job) == ROW
    assert job["status"] == "done" and job["chatbus_status"] == "done", job
    assert isinstance(job["result"], str) and job["result"]
    assert (job["id"], job["job_id"]) == (submitted["job_id"], submitted["job_id"])
    assert job["conversation_id"] == conversation and job["user_input"] == "Say something."
    assert job["model"] == "demo" and job["processed_at"] is not None

    # The workflow's next run continues the conversation: the second job sees the first turn and answer.
    body = {"user_input": "And again.", "session_id": conversation, "model": "demo"}
    status, second = await n8n.call("POST", "/submit", json=body)
    assert status == 200 and second["conversation_id"] == conversation and second["created_new"] is False
    assert (await n8n.poll(second["job_id"]))["status"] == "done"
    chat_id = second["job_id"].split("-")[0]
    assert chat_id == submitted["job_id"].split("-")[0]  # one chat for the conversation
    requests = [e for e in await chat_events(nbus, chat_id) if isinstance(e, ReplyRequested)]
    assert len(requests) == 2 and len(requests[1].context) == 3  # first question, its answer, the second

    # The conversation's status: its latest answer.
    status, latest = await n8n.call("GET", f"/status/{conversation}")
    assert status == 200
    assert latest["job_id"] == second["job_id"] and latest["status"] == "done"
    assert latest["response"] == (await n8n.call("GET", f"/jobs/{second['job_id']}"))[1]["result"]
    status, nothing = await n8n.call("GET", "/status/no-such-conversation")
    assert (status, nothing) == (200, {"response": None, "job_id": None, "status": None})


async def test_the_jobs_list_by_conversation_status_and_limit(n8n: N8n) -> None:
    jobs = []
    for text in ("one", "two", "three"):
        body = {"user_input": text, "session_id": "conv-list", "system_prompt": "Be brief."}
        status, submitted = await n8n.call("POST", "/submit", json=body)
        assert status == 200, submitted
        jobs.append(await n8n.poll(submitted["job_id"]))
    _, elsewhere = await n8n.call("POST", "/submit", json={"user_input": "other", "session_id": "conv-other"})
    await n8n.poll(elsewhere["job_id"])

    listed = await n8n.listed("conversation_id=conv-list", 3)
    assert [j["id"] for j in listed] == [j["id"] for j in reversed(jobs)]  # newest first
    assert all(set(j) == ROW and j["system_prompt"] == "Be brief." for j in listed)
    assert [j["result"] for j in listed] == [j["result"] for j in reversed(jobs)]
    assert len(await n8n.listed("", 4)) == 4
    done = await n8n.listed("conversation_id=conv-list&status=done", 3)
    assert len(done) == 3 and {j["status"] for j in done} == {"done"}
    assert await n8n.listed("conversation_id=conv-list&status=error", 1, timeout=0) == []
    assert [j["id"] for j in await n8n.listed("conversation_id=conv-list&limit=1", 1)] == [jobs[-1]["id"]]
    for query in ("status=completed", "limit=0", "limit=x"):
        status, refused = await n8n.call("GET", f"/jobs?{query}")
        assert status == 400 and set(refused) == {"error", "message"}, (query, refused)


async def test_bad_submits_are_4xx_naming_llamalith_fields(n8n: N8n) -> None:
    for body, expected, field in (
        ({}, 422, "user_input"),
        ({"user_input": "x", "unknown": 1}, 422, "unknown"),
        ({"user_input": ""}, 400, "user_input"),
        ({"user_input": "x", "session_id": "has spaces"}, 400, "session_id"),
        ({"user_input": "x", "model": "no such/model"}, 400, "model"),
    ):
        status, refused = await n8n.call("POST", "/submit", json=body)
        assert status == expected and field in refused["message"], (body, refused)
    status, refused = await n8n.call("POST", "/submit", json={"user_input": "x", "model": "mistral"})
    assert status == 409 and refused["error"] == "model_unavailable"  # Llamalith's default model name
    status, _ = await n8n.call("POST", "/submit", key="not-a-key", json={"user_input": "x"})
    assert status == 401
    status, _ = await n8n.call("GET", "/jobs/not-a-job-id")
    assert status == 404


def _body(status: str, **changes: Any) -> JobBody:
    at = datetime(2026, 1, 1)
    fields: dict[str, Any] = {
        "job_id": "ca-rb",
        "status": status,
        "model": "demo",
        "session_id": "s",
        "chat_id": "ca",
        "input": "hi",
        "result": None,
        "usage": None,
        "attempts": [],
        "error": None,
        "created_at": at,
        "started_at": None,
        "finished_at": None,
        "deadline_at": None,
        "callback_url": None,
        "webhook": WebhookInfo(),
        **changes,
    }
    return JobBody(**fields)


def test_every_chatbus_status_reads_as_a_llamalith_one() -> None:
    """Llamalith's worker writes queued, processing, done and error, nothing else: an n8n loop that waits
    for done or error must end for every chatbus job (cancelled and expired read `error`, with why)."""
    assert set(LLAMALITH_STATUS) == set(JOB_STATUSES)
    assert set(LLAMALITH_STATUS.values()) == set(LLAMALITH_STATUSES)
    end = datetime(2026, 1, 2)
    expired = _body("expired", finished_at=end, error=JobError(code="expired", message="deadline passed"))
    assert (llamalith_job(expired, "").status, llamalith_job(expired, "").result) == (
        "error",
        "deadline passed",
    )
    cancelled = llamalith_job(_body("cancelled", finished_at=end, result="partial"), "")
    assert (cancelled.status, cancelled.chatbus_status) == ("error", "cancelled")
    assert cancelled.result == "the job was cancelled"  # Llamalith's `result` of a failed job says why
    assert llamalith_job(_body("processing", result="part"), "").result is None  # not an answer yet
    assert llamalith_job(_body("done", result="ok", finished_at=end), "p").result == "ok"
