"""The audit trail of a chat, from the log: the admin route and `chatbus admin audit chat`."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys

from tests.apihelp import Api, serve_model
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
