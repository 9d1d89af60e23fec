"""Training exports of chats with several speakers: SFT from a bot's seat, and side-by-side choices as
preference pairs (chats made of real events in the log: tests/seat_chats.py)."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq

from logtools.chat_log import read_chat_state
from logtools.export import (
    ExportFilter,
    chats_json,
    chats_tsv,
    hash_ref,
    preference_rows,
    read_log,
    sft_rows,
    write_rows,
)
from logtools.importer import import_chatbus
from schemas.chat_state import ChatState, Turn
from schemas.seat import speaker_name
from tests.apihelp import Api
from tests.seat_chats import DEBATE, HOT_PROMPT, ZEN_PROMPT, Chat, compare_chat, party_chat
from tests.stack import ROOT

ZEN_SYSTEM = {"role": "system", "content": f"{ZEN_PROMPT}\n\n{DEBATE}"}
ASKED = {"role": "user", "content": "Ann: Tea or coffee?"}


async def _party_log(api: Api) -> tuple[Chat, Chat, Chat]:
    """Ann's party and compare chats (ann consents to training) and bob's party chat (bob does not)."""
    party = await party_chat(api.nbus, "ann")
    fruit = await compare_chat(api.nbus, "ann")
    bobs = await party_chat(api.nbus, "bob")
    assert (await api.call("PUT", "/v1/me/consent", "ann", json={"allowed": True}))[0] == 200
    return party, fruit, bobs


async def test_a_chat_with_bots_is_written_from_each_bots_seat(api: Api, tmp_path: Path) -> None:
    party, fruit, bobs = await _party_log(api)
    log = await read_log(api.nbus)

    zen = list(sft_rows(log, ExportFilter(), "active", hash_ref, seat="zen sage"))
    assert [(r.chat_id, r.reply_id, r.speaker) for r in zen] == [
        (party.chat_id, party.id("r1"), "Zen Sage"),
        (party.chat_id, party.id("r3"), "Zen Sage"),
    ]  # bob's chat: no consent; the compare chat has no seat of that name
    assert zen[0].messages == [ZEN_SYSTEM, ASKED, {"role": "assistant", "content": "Tea, surely."}]
    assert zen[1].messages == [
        ZEN_SYSTEM,
        ASKED,
        {"role": "assistant", "content": "Tea, surely."},
        {"role": "user", "content": "Hot Head: Coffee!"},
        {"role": "assistant", "content": "Still tea."},
    ]
    assert zen[1].model == "demo" and zen[1].rating == "up"

    every_seat = list(sft_rows(log, ExportFilter(user="ann"), "active", hash_ref))
    assert [(r.reply_id, r.speaker) for r in every_seat] == [
        (party.id("r1"), "Zen Sage"),
        (party.id("r2"), "Hot Head"),
        (party.id("r3"), "Zen Sage"),
        (fruit.id("ra"), ""),  # a one-model chat (side by side): its active path, as before
    ]
    hot = every_seat[1]
    assert hot.messages == [  # Hot Head sees one turn, Zen Sage's, named
        {"role": "system", "content": f"{HOT_PROMPT}\n\n{DEBATE}"},
        {"role": "user", "content": "Zen Sage: Tea, surely."},
        {"role": "assistant", "content": "Coffee!"},
    ]
    assert every_seat[3].messages[-2:] == [
        {"role": "user", "content": "Name a fruit."},
        {"role": "assistant", "content": "Apple"},  # the chosen reply is the active branch
    ]

    # The same seat by bot id; rated replies; the model and rating filters; consent.
    rated = list(sft_rows(log, ExportFilter(), "rated", hash_ref, seat="bzen"))
    assert sorted(r.reply_id for r in rated) == sorted([party.id("r3"), party.id("r3b")])
    assert rated[0].messages[:-1] == rated[1].messages[:-1]  # regenerations saw the same chat
    up = list(sft_rows(log, ExportFilter(min_rating="up"), "rated", hash_ref, seat="Zen Sage"))
    assert [r.reply_id for r in up] == [party.id("r3")]
    by_model = sft_rows(log, ExportFilter(model="other"), "active", hash_ref)
    assert [r.reply_id for r in by_model] == [party.id("r2")]
    assert list(sft_rows(log, ExportFilter(), "active", hash_ref, seat="nobody")) == []
    everyone = sft_rows(log, ExportFilter(consent_only=False), "active", hash_ref, seat="Hot Head")
    assert [(r.chat_id, r.reply_id) for r in everyone] == [
        (party.chat_id, party.id("r2")),
        (bobs.chat_id, bobs.id("r2")),
    ]

    out = tmp_path / "zen.parquet"
    assert write_rows(iter(zen), out, "parquet") == 2
    table = pq.read_table(out).to_pylist()
    assert table[1]["speaker"] == "Zen Sage" and json.loads(table[1]["messages"]) == zen[1].messages


async def test_side_by_side_choices_and_seat_ratings_are_preference_pairs(api: Api) -> None:
    party, fruit, _ = await _party_log(api)
    log = await read_log(api.nbus)
    pairs = list(preference_rows(log, ExportFilter(), hash_ref))
    assert [(p.chosen_reply_id, p.rejected_reply_id, p.source) for p in pairs] == [
        (party.id("r3"), party.id("r3b"), "rating"),
        (fruit.id("ra"), fruit.id("rb"), "choice"),  # the later choice replaced the first one
        (fruit.id("ra"), fruit.id("rc"), "choice"),
    ]
    rated, chosen = pairs[0], pairs[1]
    assert rated.prompt == [  # what both answered, from Zen Sage's seat
        ZEN_SYSTEM,
        ASKED,
        {"role": "assistant", "content": "Tea, surely."},
        {"role": "user", "content": "Hot Head: Coffee!"},
    ]
    assert rated.chosen == [{"role": "assistant", "content": "Still tea."}]
    assert rated.rejected == [{"role": "assistant", "content": "Green tea."}]
    assert chosen.prompt == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Name a fruit."},
    ]
    assert (chosen.chosen, chosen.rejected) == (
        [{"role": "assistant", "content": "Apple"}],
        [{"role": "assistant", "content": "Banana"}],
    )
    assert (chosen.chosen_model, chosen.rejected_model) == ("demo", "other")
    only_bob = list(preference_rows(log, ExportFilter(user="bob"), hash_ref))
    assert only_bob == []  # bob never consented
    by_model = list(preference_rows(log, ExportFilter(model="third"), hash_ref))
    assert by_model == []  # a pair needs both of its replies to pass the filter

    tsv = [line.split("\t") for line in chats_tsv(log, ExportFilter(user="ann")).splitlines()]
    speakers = {row[2]: row[7] for row in tsv[1:]}
    assert tsv[0][7] == "speaker"
    assert speakers[party.id("m1")] == "Ann" and speakers[party.id("r2")] == "Hot Head"
    assert speakers[fruit.id("rb")] == "other"


async def test_the_export_command_writes_one_seat(api: Api, nats_url: str, tmp_path: Path) -> None:
    party, _, _ = await _party_log(api)

    def export(*args: str) -> subprocess.CompletedProcess[str]:
        cmd = [sys.executable, "-m", "services.cli", "admin", "export", *args, "--nats", nats_url]
        return subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=120)

    out = tmp_path / "hot.jsonl"
    done = await asyncio.to_thread(export, "sft", "--seat", "HOT HEAD", "--out", str(out))
    assert done.returncode == 0 and "wrote 1 rows" in done.stderr, done.stderr
    (line,) = [json.loads(text) for text in out.read_text().splitlines()]
    assert line["messages"][-1] == {"role": "assistant", "content": "Coffee!"}
    assert line["metadata"]["speaker"] == "Hot Head" and line["metadata"]["reply_id"] == party.id("r2")

    nobody = await asyncio.to_thread(export, "sft", "--seat", "Nobody", "--out", str(tmp_path / "n.jsonl"))
    assert nobody.returncode == 0 and "no reply of a bot named 'Nobody'" in nobody.stderr

    pairs = tmp_path / "pairs.jsonl"
    done = await asyncio.to_thread(export, "preferences", "--out", str(pairs))
    assert done.returncode == 0 and "wrote 3 rows" in done.stderr, done.stderr
    sources = [json.loads(text)["metadata"]["source"] for text in pairs.read_text().splitlines()]
    assert sources == ["rating", "choice", "choice"]


async def test_a_party_chat_round_trips_through_the_chats_export_and_arrives_paused(api: Api) -> None:
    party, fruit, _ = await _party_log(api)
    log = await read_log(api.nbus)
    document = json.loads(json.dumps(chats_json(log, ExportFilter(user="ann", consent_only=False))))
    copied = await import_chatbus(api.nbus, document, keep_ids=False, user="ann")
    assert len(copied.chats) == 2
    originals = {party.chat_id: await read_chat_state(api.nbus.js, party.chat_id)}
    originals[fruit.chat_id] = await read_chat_state(api.nbus.js, fruit.chat_id)
    for new_id_, old_id in zip(copied.chats, [c["chat_id"] for c in document["chats"]], strict=True):
        old, new = originals[old_id], await read_chat_state(api.nbus.js, new_id_)

        def transcript(state: ChatState) -> list[tuple[str, str]]:
            return [(speaker_name(state, n), (state.turn(n) or Turn(role="user", content="")).content)
                    for n in state.tree.active_path()]  # fmt: skip

        assert transcript(new) == transcript(old) and len(transcript(new)) >= 2
        assert [p.name for p in new.participants.values()] == [p.name for p in old.participants.values()]
        assert set(new.participants).isdisjoint(old.participants)  # fresh participant ids, used consistently
        # the import never lets a bot speak in the middle of the imported history: a chat with bots is paused
        assert new.floor.paused == new.has_bots
        assert len(new.choices) == len(old.choices) and all(
            c.reply_id in new.replies for c in new.choices.values()
        )
