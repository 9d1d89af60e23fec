"""The read model of chats with bots and side-by-side chats: the live projector (folding in batches that
load what earlier ones stored) and a replay show the same transcript with its speakers, the same
participants, floor and choices."""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path
from typing import Any

import bus
from bus import Bus
from schemas.bot import BotSpec
from schemas.chat import (
    ChoiceMade,
    Floor,
    FloorPaused,
    FloorSet,
    MessagePosted,
    ParticipantJoined,
    ParticipantMuted,
    ReplyCompleted,
    ReplyRequested,
)
from schemas.queries import Checkpoints, CheckpointsAnswer, GetChat, ListMessages
from services.projector import dump_read_model, replay, run_projector
from services.projector.queries import get_chat, list_messages
from services.projector.store import Store
from tests.logs import at_second, created

C, S = "party1", "sbs1"  # a chat with two bots, a side-by-side chat


def _e(chat_id: str, i: int) -> dict[str, Any]:
    return {"event_id": f"{chat_id}-e{i}", "chat_id": chat_id, "at": at_second(i)}


def _turn(chat_id: str, i: int, reply_id: str, after: str, speaker: str, model: str = "demo") -> list[Any]:
    """A reply requested after `after` and completed."""
    return [
        ReplyRequested(
            **_e(chat_id, i),
            reply_id=reply_id,
            message_id=after,
            model=model,
            requested_by="conductor" if speaker else "ann",
            speaker=speaker,
        ),
        ReplyCompleted(
            **_e(chat_id, i + 1),
            reply_id=reply_id,
            attempt=1,
            worker_id="w",
            model=model,
            text=f"text of {reply_id}",
            prompt_tokens=1,
            completion_tokens=1,
            finish_reason="stop",
            speaker=speaker,
        ),
    ]


def _party_start() -> list[Any]:
    def joined(i: int, pid: str, name: str) -> ParticipantJoined:
        return ParticipantJoined(
            **_e(C, i), participant_id=pid, bot=BotSpec(name=name, model="demo"), by="ann"
        )

    return [
        created(C),
        joined(1, "p1", "Zen Sage"),
        joined(2, "p2", "Jester"),
        FloorSet(**_e(C, 3), floor=Floor(policy="round_robin"), by="ann"),
        MessagePosted(
            **_e(C, 4), message_id="m1", author_id="ann", content="hi", parent_id=None, author_name="ann"
        ),
    ]


def _party_rest() -> list[Any]:
    return [
        *_turn(C, 10, "r1", "m1", "p1"),
        *_turn(C, 12, "r2", "r1", "p2"),
        FloorPaused(**_e(C, 14), by="ann"),
        ParticipantMuted(**_e(C, 15), participant_id="p2", by="ann"),
        MessagePosted(
            **_e(C, 16), message_id="m2", author_id="ann", content="and?", parent_id="r2", author_name="ann"
        ),
        *_turn(C, 17, "r3", "m2", "p1"),
    ]


def _side_by_side() -> list[Any]:
    return [
        created(S),
        MessagePosted(**_e(S, 1), message_id="sm", author_id="ann", content="which?", author_name="ann"),
        *_turn(S, 2, "sa", "sm", "", "demo"),
        *_turn(S, 4, "sb", "sm", "", "demo2"),
        ChoiceMade(**_e(S, 6), message_id="sm", reply_id="sb", rejected=["sa"], by="ann"),
    ]


async def _append(nbus: Bus, events: list[Any]) -> int:
    seq = 0
    for event in events:
        seq = (await bus.append_event(nbus.js, event)).seq
    return seq


async def _applied(nbus: Bus, seq: int) -> None:
    for _ in range(300):
        with contextlib.suppress(bus.ServiceError):
            answer = await bus.call(nbus.nc, "projector.status", Checkpoints(), CheckpointsAnswer, timeout=1)
            if answer.applied.get("CHAT", 0) >= seq:
                return
        await asyncio.sleep(0.05)
    raise TimeoutError(f"projector never reached CHAT {seq}")


def _transcript(path: Path, chat_id: str) -> tuple[list[tuple[str, str, Any]], Any]:
    """The active path as (node, speaker name, chosen) and the chat, read from a read-model file."""
    store = Store.open(path)
    try:
        cur = store.reader()
        page = list_messages(cur, ListMessages(chat_id=chat_id))
        chat = get_chat(cur, GetChat(chat_id=chat_id)).chat
    finally:
        store.close()
    rows = {row.message_id: (row.speaker_name, None) for row in page.messages}
    rows.update({row.reply_id: (row.speaker_name, row.chosen) for row in page.replies})
    return [(node.node_id, *rows[node.node_id]) for node in page.active_path], chat


async def test_live_and_replayed_read_models_show_the_same_transcript_with_speakers(
    nbus: Bus, tmp_path: Path
) -> None:
    live = tmp_path / "live.duckdb"
    stop = asyncio.Event()
    task = asyncio.create_task(run_projector(nbus, live, stop))
    try:
        await _applied(nbus, await _append(nbus, _party_start()))  # later batches load these rows back
        await _applied(nbus, await _append(nbus, _party_rest()))
        await _applied(nbus, await _append(nbus, _side_by_side()))
    finally:
        stop.set()
        await asyncio.wait_for(task, 15)
    await replay(nbus, tmp_path / "replayed.duckdb")
    assert dump_read_model(live) == dump_read_model(tmp_path / "replayed.duckdb")

    for path in (live, tmp_path / "replayed.duckdb"):
        party, chat = _transcript(path, C)
        assert party == [
            ("m1", "ann", None),
            ("r1", "Zen Sage", None),
            ("r2", "Jester", None),
            ("m2", "ann", None),
            ("r3", "Zen Sage", None),
        ]
        assert chat is not None
        assert [(p.name, p.muted, p.has_left) for p in chat.participants] == [
            ("Zen Sage", False, False),
            ("Jester", True, False),
        ]
        assert chat.floor is not None and chat.floor.paused and chat.floor.policy == "round_robin"
        side, chat = _transcript(path, S)
        assert side == [("sm", "ann", None), ("sb", "demo2", True)]
        assert chat is not None and chat.floor is None and chat.participants == []
