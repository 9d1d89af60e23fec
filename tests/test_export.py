"""Exports from the log: SFT lines, DPO pairs, chats as JSON/TSV; imports: chatbus JSON and ChatGPT."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

import bus
from logtools.arena_votes import set_excluded
from logtools.export import (
    ExportFilter,
    chats_json,
    chats_tsv,
    embedded_refs,
    hash_ref,
    preference_rows,
    read_log,
    sft_rows,
    write_rows,
)
from logtools.import_chatgpt import import_chatgpt
from logtools.importer import ImportError_, import_chatbus
from services.cli.app import app
from tests.apihelp import Api
from tests.arena_log import whole_battle
from tests.logs import CHATGPT, complete_reply, make_story
from tests.stack import ROOT

ROLES = {"system", "user", "assistant"}


def _check_sft_line(line: dict[str, Any]) -> None:
    """The OpenAI chat fine-tuning format: messages with known roles, ending with the assistant."""
    messages = line["messages"]
    assert messages and all(m["role"] in ROLES for m in messages)
    assert messages[-1]["role"] == "assistant" and isinstance(messages[-1]["content"], str)
    for m in messages:
        if isinstance(m["content"], list):
            assert all(p["type"] in ("text", "image_url") for p in m["content"])
        else:
            assert isinstance(m["content"], str)


async def test_sft_and_preferences_follow_the_tree_ratings_and_consent(api: Api, tmp_path: Path) -> None:
    ann = await make_story(api, "ann")
    bob = await make_story(api, "bob")
    await api.call("PUT", "/v1/me/consent", "ann", json={"allowed": True})
    hidden = (await api.new_chat("ann", model="demo"))["chat_id"]
    _, posted = await api.call("POST", f"/v1/chats/{hidden}/messages", json={"content": "deleted later"})
    await complete_reply(api, hidden, posted["reply_id"], "never exported")
    await api.call("DELETE", f"/v1/chats/{hidden}")
    log = await read_log(api.nbus)

    active = list(sft_rows(log, ExportFilter(), "active", hash_ref))
    assert [r.chat_id for r in active] == [ann["chat"]]  # bob never consented; the deleted chat is out
    messages = active[0].messages
    assert [m["role"] for m in messages] == ["system", "user", "assistant", "user", "assistant"]
    assert messages[2]["content"] == "answer B"  # the regenerated reply is on the active path
    assert messages[3]["content"] == [
        {"type": "image_url", "image_url": {"url": f"sha256:{ann['image']}"}},
        {"type": "text", "text": "and this?"},
    ]
    out = tmp_path / "sft.jsonl"
    assert write_rows(iter(active), out, "jsonl") == 1
    for text in out.read_text().splitlines():
        line = json.loads(text)
        _check_sft_line(line)
        assert line["metadata"]["reply_id"] == ann["r2"] and line["metadata"]["model"] == "other"

    everyone = ExportFilter(consent_only=False)
    assert {r.chat_id for r in sft_rows(log, everyone, "active", hash_ref)} == {ann["chat"], bob["chat"]}
    assert [
        r.chat_id for r in sft_rows(log, ExportFilter(consent_only=False, user="bob"), "active", hash_ref)
    ] == [bob["chat"]]
    assert (
        list(sft_rows(log, ExportFilter(model="demo"), "active", hash_ref)) == []
    )  # its last reply is `other`
    rated = list(sft_rows(log, ExportFilter(), "rated", hash_ref))
    assert sorted((r.reply_id, r.rating) for r in rated) == sorted(
        [(ann["r1"], "up"), (ann["r1b"], "down"), (ann["r2"], "up")]
    )
    up_only = list(sft_rows(log, ExportFilter(min_rating="up"), "rated", hash_ref))
    assert {r.reply_id for r in up_only} == {ann["r1"], ann["r2"]}
    path_to_r1 = next(r for r in rated if r.reply_id == ann["r1"]).messages
    assert [m["content"] for m in path_to_r1] == ["Be brief.", "ann: question", "answer A"]

    pairs = list(preference_rows(log, ExportFilter(), hash_ref))
    assert len(pairs) == 1
    pair = pairs[0]
    assert pair.prompt == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "ann: question"},
    ]
    assert pair.chosen == [{"role": "assistant", "content": "answer A"}]
    assert pair.rejected == [{"role": "assistant", "content": "answer B"}] and pair.chosen != pair.rejected
    out = tmp_path / "pairs.parquet"
    assert write_rows(iter(pairs), out, "parquet") == 1
    table = pq.read_table(out).to_pylist()
    assert json.loads(table[0]["prompt"]) == pair.prompt and table[0]["chosen_reply_id"] == ann["r1"]

    embedded = list(
        sft_rows(log, ExportFilter(), "active", await embedded_refs(api.nbus, log, ExportFilter()))
    )
    assert embedded[0].messages[3]["content"][0]["image_url"]["url"].startswith("data:image/png;base64,")


async def test_the_export_command_writes_jsonl_and_parquet(api: Api, nats_url: str, tmp_path: Path) -> None:
    await make_story(api, "ann")
    await api.call("PUT", "/v1/me/consent", "ann", json={"allowed": True})
    for name in ("sft.jsonl", "sft.parquet"):
        cmd = [
            sys.executable,
            "-m",
            "services.cli",
            "admin",
            "export",
            "sft",
            "--out",
            str(tmp_path / name),
            "--nats",
            nats_url,
        ]
        done = await asyncio.to_thread(
            subprocess.run, cmd, cwd=ROOT, capture_output=True, text=True, timeout=120
        )
        assert done.returncode == 0 and "wrote 1 rows" in done.stderr, done.stderr
    assert json.loads((tmp_path / "sft.jsonl").read_text())["messages"][0] == {
        "role": "system",
        "content": "Be brief.",
    }
    assert pq.read_table(tmp_path / "sft.parquet").num_rows == 1
    cmd = [
        sys.executable,
        "-m",
        "services.cli",
        "admin",
        "export",
        "sft",
        "--out",
        "x.jsonl",
        "--min-rating",
        "5",
        "--nats",
        nats_url,
    ]
    bad = await asyncio.to_thread(
        subprocess.run, cmd, cwd=tmp_path, capture_output=True, text=True, timeout=60
    )
    assert bad.returncode == 2 and "--min-rating" in bad.stderr


async def test_arena_votes_are_preference_pairs_of_consenting_voters_not_excluded(
    api: Api, nats_url: str, tmp_path: Path
) -> None:
    for user in ("ann", "bob"):
        await api.call("PUT", "/v1/me/consent", user, json={"allowed": True})  # root never consents
    battles = [
        ("ann", "A", "which is bigger, 2 or 3?"),
        ("ann", "B", "name a colour"),
        ("ann", "tie", "say hi"),
        ("ann", "both_bad", "say bye"),
        ("bob", "A", "bob asks"),
        ("root", "A", "root asks"),
    ]
    for voter, vote, prompt in battles:
        events = whole_battle(
            voter, "alpha", "beta", vote, prompt, (f"alpha on {prompt}", f"beta on {prompt}")
        )
        await bus.append_events(api.nbus.js, events)
    await set_excluded(api.nbus.js, "bob", True, "spam", "root")
    log = await read_log(api.nbus)
    pairs = [p for p in preference_rows(log, ExportFilter(), hash_ref) if p.source == "arena"]
    winners = {p.prompt[-1]["content"]: (p.chosen[0]["content"], p.rejected[0]["content"]) for p in pairs}
    assert winners == {
        "which is bigger, 2 or 3?": ("alpha on which is bigger, 2 or 3?", "beta on which is bigger, 2 or 3?"),
        "name a colour": ("beta on name a colour", "alpha on name a colour"),  # B won
    }  # ties and both-bad left out; bob excluded; root never consented
    assert {(p.chosen_model, p.rejected_model) for p in pairs} == {("alpha", "beta"), ("beta", "alpha")}
    with_ties = [
        p for p in preference_rows(log, ExportFilter(), hash_ref, arena_ties=True) if p.source == "arena"
    ]
    marked = {p.prompt[-1]["content"]: (p.tie, p.both_bad, p.chosen_model) for p in with_ties}
    assert marked == {
        "which is bigger, 2 or 3?": (False, False, "alpha"),
        "name a colour": (False, False, "beta"),
        "say hi": (True, False, "alpha"),  # written once, A's answer as chosen
        "say bye": (False, True, "alpha"),
    }
    await set_excluded(api.nbus.js, "bob", False, "", "root")  # bob's votes count again
    log = await read_log(api.nbus)
    assert "bob asks" in {p.prompt[-1]["content"] for p in preference_rows(log, ExportFilter(), hash_ref)}
    out = tmp_path / "pairs.jsonl"
    args = ["admin", "export", "preferences", "--out", str(out), "--arena-ties", "--nats", nats_url]
    done = await asyncio.to_thread(CliRunner().invoke, app, args)
    assert done.exit_code == 0, done.output
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    tie = next(line for line in lines if line["prompt"][-1]["content"] == "say hi")
    assert tie["tie"] is True and "both_bad" not in tie and tie["metadata"]["source"] == "arena"
    plain = next(line for line in lines if line["prompt"][-1]["content"] == "bob asks")
    assert "tie" not in plain and plain["metadata"]["chosen_model"] == "alpha"


async def test_chats_round_trip_through_json_and_read_as_tsv(api: Api) -> None:
    story = await make_story(api, "ann")
    log = await read_log(api.nbus)
    document = json.loads(json.dumps(chats_json(log, ExportFilter(user="ann", consent_only=False))))
    assert [c["chat_id"] for c in document["chats"]] == [story["chat"]]
    tsv = chats_tsv(log, ExportFilter(user="ann", consent_only=False)).splitlines()
    assert tsv[0].split("\t")[-1] == "content" and len(tsv) == 1 + 2 + 3  # header, 2 messages, 3 replies
    with pytest.raises(ImportError_, match=f"chats.0..events.0.: chat {story['chat']} exists in the log"):
        await import_chatbus(api.nbus, document, keep_ids=True, user="ann")
    copied = await import_chatbus(api.nbus, document, keep_ids=False, user="ann")
    (new_chat,) = copied.chats
    assert new_chat != story["chat"]
    original = await _active_contents(api, story["chat"], "ann")
    assert await _active_contents(api, new_chat, "ann") == original
    assert original == ["ann: question", "answer B", "and this?", "answer C"]
    # A copy for someone else may not show ann's image: only images its user uploaded.
    with pytest.raises(ImportError_, match=f"image {story['image']} was not uploaded by root"):
        await import_chatbus(api.nbus, document, keep_ids=False, user="root")


async def _active_contents(api: Api, chat_id: str, user: str) -> list[str]:
    """The texts along the chat's active path, once the read model has every event of the chat."""
    last = await bus.last_msg(api.nbus.js, "CHAT", f"chat.{chat_id}.>")
    assert last is not None
    status, listed = await api.call("GET", f"/v1/chats/{chat_id}/messages?min_seq={last.seq}", user)
    assert status == 200, listed
    texts = {m["message_id"]: m["content"] for m in listed["messages"]}
    texts.update({r["reply_id"]: r["text"] for r in listed["replies"]})
    return [texts[n["node_id"]] for n in listed["active_path"]]


async def test_a_chatgpt_export_imports_into_a_chat_that_renders(api: Api) -> None:
    report = await import_chatgpt(api.nbus, CHATGPT, "ann")
    chat_id, sums = report.chats
    assert await _active_contents(api, chat_id, "ann") == ["Plan 2 days", "Day 1: Alfama"]  # current_node
    # A tool chain is one reply: the code call and the tool's output are not answers of their own.
    assert await _active_contents(api, sums, "ann") == [
        "What is 2+2? Use python.",
        "It prints 4.\n\nSo 2+2 = 4.",
    ]
    status, listed = await api.call("GET", f"/v1/chats/{chat_id}/messages")
    assert listed["active_path"][1]["siblings"] and len(listed["active_path"][1]["siblings"]) == 2
    assert {r["model"] for r in listed["replies"]} == {"gpt-4o"}
    status, chat = await api.call("GET", f"/v1/chats/{chat_id}")
    assert status == 200 and chat["title"] == "Trip to Lisbon"
