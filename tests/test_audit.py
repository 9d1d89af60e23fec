"""The audit trail of a chat, from the log: the admin route and `chatbus admin audit chat`."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys

import schemas
from logtools.audit import audit_entries
from schemas.chat import ChatCreated, MessagePosted, ReplyCompleted, ReplyRequested
from tests.apihelp import Api, serve_model
from tests.seat_chats import DEBATE, HOT_PROMPT, compare_chat, party_chat
from tests.stack import ROOT


async def _a_busy_chat(api: Api) -> tuple[str, dict[str, str]]:
    await serve_model(api.nbus)
    c = (await api.new_chat(model="demo", title="audited"))["chat_id"]
    _, posted = await api.call(
        "POST",
        f"/v1/chats/{c}/messages",
        json={"content": "hello", "params": {"temperature": 0.3, "top_k": 7}},
    )
    await api.call("PUT", f"/v1/chats/{c}/replies/{posted['reply_id']}/feedback", json={"rating": "up"})
    await api.call("PATCH", f"/v1/chats/{c}", json={"title": "renamed"})
    return c, posted


async def test_an_admin_reads_who_did_what_with_which_model_and_parameters(api: Api) -> None:
    c, posted = await _a_busy_chat(api)
    status, trail = await api.call("GET", f"/v1/admin/chats/{c}/audit", "root")
    assert status == 200 and trail["chat_id"] == c
    types = [e["type"] for e in trail["entries"]]
    assert types == [
        "chat.created",
        "chat.message.posted",
        "chat.reply.requested",
        "chat.feedback.given",
        "chat.renamed",
    ]
    seqs = [e["seq"] for e in trail["entries"]]
    assert seqs == sorted(seqs)
    requested = trail["entries"][2]
    assert (requested["who"], requested["model"]) == ("ann", "demo")
    assert requested["params"]["temperature"] == 0.3 and requested["params"]["top_k"] == 7
    assert requested["event"]["reply_id"] == posted["reply_id"]
    assert "hello" in trail["entries"][1]["what"]
    assert (await api.call("GET", f"/v1/admin/chats/{c}/audit", "ann"))[0] == 403
    assert (await api.call("GET", "/v1/admin/chats/nosuch/audit", "root"))[0] == 404


async def test_the_cli_prints_the_same_trail(api: Api, nats_url: str) -> None:
    c, _ = await _a_busy_chat(api)
    cmd = [sys.executable, "-m", "services.cli", "admin", "audit", "chat", c, "--json", "--nats", nats_url]
    done = await asyncio.to_thread(subprocess.run, cmd, cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    lines = [json.loads(line) for line in done.stdout.splitlines()]
    assert [e["type"] for e in lines][:3] == ["chat.created", "chat.message.posted", "chat.reply.requested"]
    table = await asyncio.to_thread(
        subprocess.run, cmd[:-3] + ["--nats", nats_url], cwd=ROOT, capture_output=True, text=True, timeout=60,
        env={"COLUMNS": "200", "PATH": "/usr/bin:/bin"},
    )  # fmt: skip
    assert table.returncode == 0 and "temperature=0.3" in table.stdout and "renamed" in table.stdout
    missing = await asyncio.to_thread(
        subprocess.run, [*cmd[:6], "nosuchchat", "--nats", nats_url], cwd=ROOT, capture_output=True, text=True
    )
    assert missing.returncode == 1 and "No events" in missing.stderr


async def test_a_party_chat_shows_speakers_what_each_bot_saw_and_the_floor(api: Api, nats_url: str) -> None:
    party = await party_chat(api.nbus, "ann")
    status, trail = await api.call("GET", f"/v1/admin/chats/{party.chat_id}/audit", "root")
    assert status == 200
    entries = trail["entries"]
    turn = ["chat.reply.requested", "chat.reply.completed"]
    assert [e["type"] for e in entries] == [
        "chat.created",
        "chat.participant.joined",
        "chat.participant.joined",
        "chat.floor.set",
        "chat.message.posted",
        *turn,
        *turn,
        "chat.floor.paused",
        "chat.floor.resumed",
        "chat.floor.next",
        *turn,
        *turn,
        "chat.feedback.given",
        "chat.feedback.given",
        "chat.branch.selected",
        "chat.participant.muted",
    ]
    whats = [e["what"] for e in entries]
    assert whats[1].startswith("Zen Sage joined") and "sees last 1 turns" in whats[2]
    assert entries[2]["model"] == "other"
    assert whats[3].startswith("floor set: round_robin, 2 round(s)")
    assert whats[9:12] == ["paused, cancelling the running reply", "resumed", "named Zen Sage to speak next"]
    assert whats[-1] == "Hot Head muted"
    assert entries[4]["speaker"] == "Ann" and entries[4]["seen"] == []
    hot = entries[7]  # Hot Head's request: what its model was given, from its seat
    assert (hot["who"], hot["model"], hot["speaker"]) == ("conductor", "other", "Hot Head")
    assert "from Hot Head's seat" in hot["what"]
    assert hot["seen"] == [
        {"role": "system", "content": f"{HOT_PROMPT}\n\n{DEBATE}", "images": [], "ids": []},
        {"role": "user", "content": "Zen Sage: Tea, surely.", "images": [], "ids": [party.id("r1")]},
    ]
    assert [e["speaker"] for e in entries[12:16]] == ["Zen Sage"] * 4
    assert entries[12]["seen"][-1] == {
        "role": "user",
        "content": "Hot Head: Coffee!",
        "images": [],
        "ids": [party.id("r2")],
    }

    fruit = await compare_chat(api.nbus, "ann")
    _, trail = await api.call("GET", f"/v1/admin/chats/{fruit.chat_id}/audit", "root")
    chose = [e for e in trail["entries"] if e["type"] == "chat.choice.made"]
    assert [e["what"] for e in chose][-1] == (
        f"chose {fruit.id('ra')} for {fruit.id('m1')} over {fruit.id('rb')}, {fruit.id('rc')}"
    )
    assert "side by side: demo, other, third" in trail["entries"][0]["what"]
    assert trail["entries"][2]["seen"][1] == {  # one-model replies: no names, the chat's own prompt
        "role": "user",
        "content": "Name a fruit.",
        "images": [],
        "ids": [fruit.id("m1")],
    }

    cmd = [sys.executable, "-m", "services.cli", "admin", "audit", "chat", party.chat_id, "--nats", nats_url]
    table = await asyncio.to_thread(
        subprocess.run, cmd, cwd=ROOT, capture_output=True, text=True, timeout=60,
        env={"COLUMNS": "250", "PATH": "/usr/bin:/bin"},
    )  # fmt: skip
    assert table.returncode == 0, table.stderr
    assert "saw:" in table.stdout and "Hot Head: Coffee!" in table.stdout
    assert "named Zen Sage to speak next" in table.stdout and "Hot Head muted" in table.stdout


def test_a_completion_says_how_many_seen_turns_the_worker_dropped() -> None:
    base = {"chat_id": "c1", "at": schemas.now()}
    events = [
        ChatCreated(event_id="e1", **base, owner_id="ann", title="t", model="demo"),
        MessagePosted(event_id="e2", **base, message_id="m1", author_id="ann", content="long"),
        MessagePosted(event_id="e3", **base, message_id="m2", author_id="ann", content="short"),
        ReplyRequested(
            event_id="e4", **base, reply_id="r1", message_id="m2", model="demo", context=["m1", "m2"],
            requested_by="ann",
        ),
        ReplyCompleted(
            event_id="e5", **base, reply_id="r1", attempt=1, worker_id="w", model="demo", text="ok",
            prompt_tokens=9, completion_tokens=1, finish_reason="stop", context_dropped=["m1"],
        ),
    ]  # fmt: skip
    entries = audit_entries((seq, schemas.encode(e)) for seq, e in enumerate(events, 1))
    assert [t.ids for t in entries[3].seen] == [["m1"], ["m2"]] and entries[3].speaker == "demo"
    assert entries[4].what.endswith("(1 context turn(s) dropped to fit)")
