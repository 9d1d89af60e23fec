"""Schema evolution: a frozen stream recorded from version-1 events must replay to the same read model.

`tests/fixtures/log-v1.jsonl` holds raw CHAT and IDENTITY messages (subject + the JSON bytes) as
this version wrote them; `tests/fixtures/view-v1.json` is what the read model said about them
(chats, their trees, replies, ratings, users), in terms that survive new columns. A later version
must replay the same bytes to the same view: new fields need defaults, an incompatible change is a
new tag plus an upcaster (see the README's "Schema evolution").

Re-record only on purpose: `CHATBUS_RECORD_FIXTURE=1 pytest tests/test_fixture_stream.py`.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import msgspec
import pytest

import bus
from bus import Bus
from schemas.queries import ListChats, ListMessages
from services.projector import replay
from services.projector.queries import list_chats, list_messages
from services.projector.store import Store
from tests.apihelp import Api, serve_model
from tests.logs import rich_log

FIXTURES = Path(__file__).parent / "fixtures"
LOG = FIXTURES / "log-v1.jsonl"
VIEW = FIXTURES / "view-v1.json"
STREAMS = {"CHAT": ["chat.>"], "IDENTITY": ["user.>", "apikey.>"]}


def view_of(db: Path) -> dict[str, Any]:
    """What the read model says, in terms that survive schema growth (no column lists, no row order)."""
    store = Store.open(db)
    try:
        cur = store.reader()
        users = cur.execute("SELECT user_id, role, training_consent FROM users ORDER BY user_id").fetchall()
        out: dict[str, Any] = {"users": [list(u) for u in users], "chats": {}}
        for user_id, _, _ in users:
            page = list_chats(cur, ListChats(user_id=user_id, limit=200, include_deleted=True))
            for chat in page.items:
                listed = list_messages(cur, ListMessages(chat_id=chat.chat_id, user_id=user_id))
                out["chats"][chat.chat_id] = {
                    "owner": chat.owner_id,
                    "title": chat.title,
                    "deleted": chat.deleted,
                    "messages": sorted(
                        [m.message_id, m.content, m.images, m.edit_of, m.parent_id] for m in listed.messages
                    ),
                    "replies": sorted(
                        [r.reply_id, r.message_id, r.status, r.model, r.text, r.finish_reason]
                        for r in listed.replies
                    ),
                    "active_path": [[n.node_id, n.siblings] for n in listed.active_path],
                    "ratings": sorted([r.reply_id, r.rating, r.tags] for r in listed.ratings),
                }
        return out
    finally:
        store.close()


@pytest.mark.skipif(
    os.environ.get("CHATBUS_RECORD_FIXTURE") != "1", reason="records the fixture on purpose only"
)
async def test_record_the_fixture(api: Api, tmp_path: Path) -> None:
    await serve_model(api.nbus)
    await rich_log(api)
    FIXTURES.mkdir(exist_ok=True)
    with LOG.open("w") as handle:
        for stream, filters in STREAMS.items():
            for msg in await bus.read_all(api.nbus.js, stream, filters):
                record = {"stream": stream, "subject": msg.subject, "data": msg.data.decode()}
                handle.write(json.dumps(record, ensure_ascii=False) + "\n")
    await replay(api.nbus, tmp_path / "recorded.duckdb")
    VIEW.write_text(json.dumps(view_of(tmp_path / "recorded.duckdb"), indent=1, ensure_ascii=False) + "\n")


async def test_the_frozen_version_1_stream_replays_to_the_same_read_model(nbus: Bus, tmp_path: Path) -> None:
    records = [json.loads(line) for line in LOG.read_text().splitlines()]
    assert len(records) > 40 and {r["stream"] for r in records} == set(STREAMS)
    for i, record in enumerate(records):
        await bus.append_raw(nbus.js, record["subject"], record["data"].encode(), msg_id=f"fixture-{i}")
    await replay(nbus, tmp_path / "replayed.duckdb")
    expected = json.loads(VIEW.read_text())
    got = json.loads(msgspec.json.encode(view_of(tmp_path / "replayed.duckdb")))
    assert got["users"] == expected["users"]
    assert got["chats"].keys() == expected["chats"].keys()
    for chat_id, chat in expected["chats"].items():
        assert got["chats"][chat_id] == chat, chat_id
