"""`chatbus admin replay`: up to a sequence or a time, and --check against the live read model."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path

import duckdb

import bus
import schemas
from identity.accounts import add_user
from schemas.chat import ChatCreated, ReplyRetrying, ReplyStarted
from schemas.ids import new_id
from schemas.queries import Checkpoints, CheckpointsAnswer
from services.projector import dump_read_model, replay, run_projector
from tests.apihelp import Api, serve_model
from tests.logs import chat_life, complete_reply, publish_fast, rich_log
from tests.stack import ROOT


def _cli(nats_url: str, *args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, "-m", "services.cli", "admin", "replay", *args, "--nats", nats_url]
    return subprocess.run(
        cmd,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=180,
        env={"COLUMNS": "200", "PATH": "/usr/bin:/bin"},
    )


async def test_check_finds_the_live_read_model_equal_to_the_log(api: Api, nats_url: str) -> None:
    await serve_model(api.nbus)
    await rich_log(api)
    await _a_retried_job(api)
    _, last = await api.call(
        "PATCH", f"/v1/chats/{(await api.new_chat())['chat_id']}", json={"title": "last"}
    )
    await api.call("GET", f"/v1/chats?min_seq={last['seq']}")  # the live projector has it all
    done = await asyncio.to_thread(_cli, nats_url, "--check")
    assert done.returncode == 0, done.stderr
    assert "equals the rebuild" in done.stderr and "replayed" in done.stderr


async def _a_retried_job(api: Api) -> None:
    """A job (the `jobs` table) whose first attempt is retried and whose second is done."""
    _, job = await api.call("POST", "/v1/jobs", json={"input": "hi", "session_id": "s1", "model": "demo"})
    chat_id, reply_id = job["chat_id"], job["job_id"].split("-")[1]
    base = {"chat_id": chat_id, "reply_id": reply_id, "worker_id": "w1"}
    await bus.append_events(
        api.nbus.js,
        [
            ReplyStarted(event_id=new_id("e"), at=schemas.now(), attempt=1, model="demo", **base),
            ReplyRetrying(
                event_id=new_id("e"),
                at=schemas.now(),
                attempt=1,
                code="engine_error",
                error="x",
                retry_in_s=1,
                **base,
            ),
            ReplyStarted(event_id=new_id("e"), at=schemas.now(), attempt=2, model="demo", **base),
        ],
    )
    await complete_reply(api, chat_id, reply_id, "hello")


async def test_check_names_what_differs(nbus: bus.Bus, nats_url: str, tmp_path: Path) -> None:
    """A read model someone changed behind the projector's back: the check says which chat."""
    for chat_id, title in (("c-true", "true title"), ("c-other", "other")):
        event = ChatCreated(
            event_id=new_id("e"), chat_id=chat_id, at=schemas.now(), owner_id="ann", title=title
        )
        await bus.append_event(nbus.js, event)
    db = tmp_path / "live.duckdb"
    stop = asyncio.Event()
    task = asyncio.create_task(run_projector(nbus, db, stop, serve_queries=False))
    await asyncio.sleep(2.0)  # it folds the two events of this account in well under that
    stop.set()
    await task
    assert "c-true" in repr(dump_read_model(db)["chats"])
    con = duckdb.connect(str(db))
    con.execute("UPDATE chats SET title = 'tampered' WHERE chat_id = 'c-true'")
    con.close()
    stop = asyncio.Event()
    live = asyncio.create_task(run_projector(nbus, db, stop))  # the only projector of this account
    try:
        for _ in range(100):
            try:
                await bus.call(nbus.nc, "projector.status", Checkpoints(), CheckpointsAnswer, timeout=0.5)
                break
            except bus.ServiceError:
                await asyncio.sleep(0.05)
        done = await asyncio.to_thread(_cli, nats_url, "--check")
    finally:
        stop.set()
        await live
    assert done.returncode == 1, done.stderr
    assert "chat c-true: rows differ" in done.stderr and "table chats" in done.stderr
    assert "c-other" not in done.stderr


async def test_replay_up_to_a_sequence_or_a_time_shows_the_past(
    api: Api, nats_url: str, tmp_path: Path
) -> None:
    chat_id = (await api.new_chat(title="before"))["chat_id"]
    _, first = await api.call("PATCH", f"/v1/chats/{chat_id}", json={"title": "middle"})
    await asyncio.sleep(1.1)
    from datetime import UTC, datetime

    moment = datetime.now(UTC).isoformat()
    await asyncio.sleep(1.1)
    await add_user(api.nbus.js, "latecomer")  # IDENTITY after the moment: not in the past's read model
    await api.call("PATCH", f"/v1/chats/{chat_id}", json={"title": "after"})
    done = await asyncio.to_thread(
        _cli, nats_url, "--out", str(tmp_path / "at-seq.duckdb"), "--until-seq", str(first["seq"])
    )
    assert done.returncode == 0, done.stderr
    titles = {row[0]: row[2] for row in dump_read_model(tmp_path / "at-seq.duckdb")["chats"]}
    assert titles[chat_id] == "middle"
    users = {row[0] for row in dump_read_model(tmp_path / "at-seq.duckdb")["users"]}
    assert "ann" in users and "latecomer" not in users
    done = await asyncio.to_thread(
        _cli, nats_url, "--out", str(tmp_path / "at-time.duckdb"), "--until-time", moment
    )
    assert done.returncode == 0, done.stderr
    assert {row[0]: row[2] for row in dump_read_model(tmp_path / "at-time.duckdb")["chats"]}[
        chat_id
    ] == "middle"
    done = await asyncio.to_thread(_cli, nats_url, "--out", str(tmp_path / "now.duckdb"))
    assert {row[0]: row[2] for row in dump_read_model(tmp_path / "now.duckdb")["chats"]}[chat_id] == "after"
    assert "rows: users 4" in done.stderr  # the summary
    assert _cli(nats_url, "--out", str(tmp_path / "now.duckdb")).returncode == 2  # never overwrites


async def test_a_replay_killed_midway_leaves_no_read_model_and_runs_again(
    nbus: bus.Bus, nats_url: str, tmp_path: Path
) -> None:
    """`kill -9` during a replay: nothing appears at --out (only the partial file), and the next
    replay cleans up after it and builds the same read model as an uninterrupted one."""
    lives = [event for i in range(10_000) for event in chat_life(i)]
    for start in range(0, len(lives), 5_000):
        await publish_fast(nbus, lives[start : start + 5_000])
    out = tmp_path / "rebuilt.duckdb"
    cmd = [sys.executable, "-m", "services.cli", "admin", "replay", "--out", str(out), "--nats", nats_url]
    env = {"COLUMNS": "200", "PATH": "/usr/bin:/bin"}
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    partial = out.with_name(out.name + ".partial")
    for _ in range(600):
        if partial.exists() or proc.poll() is not None:
            break
        await asyncio.sleep(0.02)
    await asyncio.sleep(0.4)  # well inside the replay of 150k events
    proc.kill()
    proc.wait()
    assert proc.returncode == -9, "the replay finished before it was killed: give it more events"
    assert not out.exists() and partial.exists()
    done = await asyncio.to_thread(_cli, nats_url, "--out", str(out))
    assert done.returncode == 0, done.stderr
    assert not partial.exists()
    await replay(nbus, tmp_path / "uninterrupted.duckdb")
    assert dump_read_model(out) == dump_read_model(tmp_path / "uninterrupted.duckdb")
    assert len(dump_read_model(out)["replies"]) == 30_000
