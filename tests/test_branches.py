"""Branching, server-side: regenerate, edit, choose the active branch; the tree lives in the events.

Runs the API over HTTP with the in-process projector (the `api` fixture of tests/conftest.py); a worker's
completion is appended as the worker would append it, so contexts can be checked exactly.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import bus
import schemas
from schemas.chat import BranchSelected, MessagePosted, ReplyCompleted, ReplyRequested
from schemas.ids import new_id
from schemas.queries import ListMessages
from schemas.tree import build_tree
from services.projector import replay
from services.projector.queries import list_messages
from services.projector.store import Store
from tests.apihelp import Api, chat_events, serve_model


async def _complete(api: Api, chat_id: str, reply_id: str, text: str) -> int:
    event = ReplyCompleted(
        event_id=new_id("e"),
        chat_id=chat_id,
        at=schemas.now(),
        reply_id=reply_id,
        attempt=1,
        worker_id="w1",
        model="demo",
        text=text,
        prompt_tokens=3,
        completion_tokens=2,
        finish_reason="stop",
    )
    return (await bus.append_event(api.nbus.js, event)).seq


async def _requests(api: Api, chat_id: str) -> dict[str, ReplyRequested]:
    return {e.reply_id: e for e in await chat_events(api.nbus, chat_id) if isinstance(e, ReplyRequested)}


async def _path(api: Api, chat_id: str, seq: int) -> list[dict[str, Any]]:
    status, listed = await api.call("GET", f"/v1/chats/{chat_id}/messages?min_seq={seq}")
    assert status == 200, listed
    return listed["active_path"]


def _ids(path: list[dict[str, Any]]) -> list[str]:
    return [node["node_id"] for node in path]


async def test_regenerations_and_an_edit_build_a_tree_that_replays(api: Api, tmp_path: Path) -> None:
    await serve_model(api.nbus)
    c = (await api.new_chat(model="demo"))["chat_id"]
    _, first = await api.call("POST", f"/v1/chats/{c}/messages", json={"content": "one"})
    m1, r1 = first["message_id"], first["reply_id"]
    await _complete(api, c, r1, "reply one")
    _, second = await api.call("POST", f"/v1/chats/{c}/messages", json={"content": "two"})
    m2, r2 = second["message_id"], second["reply_id"]
    assert (await _requests(api, c))[r2].context == [m1, r1, m2]

    # Two regenerations of the first reply: siblings under m1, each seeing only m1.
    status, again = await api.call(
        "POST", f"/v1/chats/{c}/replies/{r1}/regenerate", json={"params": {"temperature": 0.2}}
    )
    assert status == 202 and again["message_id"] == m1
    r1b = again["reply_id"]
    _, third = await api.call("POST", f"/v1/chats/{c}/replies/{r1}/regenerate", json={})
    r1c = third["reply_id"]
    requests = await _requests(api, c)
    assert requests[r1b].context == [m1] and requests[r1b].params.temperature == 0.2
    path = await _path(api, c, third["seq"])
    assert _ids(path) == [m1, r1c]
    assert path[1]["siblings"] == [r1, r1b, r1c] and path[1]["kind"] == "reply"

    # Edit the second message: a sibling of m2 under r1; the path to it becomes active again.
    await _complete(api, c, r1b, "reply one b")
    status, edited = await api.call(
        "POST", f"/v1/chats/{c}/messages/{m2}/edit", json={"content": "two, edited"}
    )
    assert status == 202, edited
    m2e, r2e = edited["message_id"], edited["reply_id"]
    assert (await _requests(api, c))[r2e].context == [m1, r1, m2e]
    posted = {e.message_id: e for e in await chat_events(api.nbus, c) if isinstance(e, MessagePosted)}
    assert (posted[m2e].edit_of, posted[m2e].parent_id) == (m2, r1)
    path = await _path(api, c, edited["seq"])
    assert _ids(path) == [m1, r1, m2e, r2e]
    assert path[2]["siblings"] == [m2, m2e]

    # Choose another branch: the path to r1b; a new message continues from there.
    status, chosen = await api.call("POST", f"/v1/chats/{c}/branch", json={"node_id": r1b})
    assert status == 200
    assert _ids(await _path(api, c, chosen["seq"])) == [m1, r1b]
    _, fourth = await api.call("POST", f"/v1/chats/{c}/messages", json={"content": "three"})
    assert (await _requests(api, c))[fourth["reply_id"]].context == [m1, r1b, fourth["message_id"]]
    path = await _path(api, c, fourth["seq"])
    assert _ids(path) == [m1, r1b, fourth["message_id"], fourth["reply_id"]]

    # The same tree from the log alone, and the read model replays to the same rows.
    events = [
        (m.seq, schemas.decode_event(m.data))
        for m in await bus.read_all(api.nbus.js, "CHAT", [f"chat.{c}.>"])
    ]
    tree = build_tree([(seq, e) for seq, e in events if not isinstance(e, ReplyCompleted)])  # type: ignore[misc]
    assert tree.active_path() == _ids(path)
    assert sum(isinstance(e, BranchSelected) for _, e in events) == 1
    await replay(api.nbus, tmp_path / "replayed.duckdb")
    store = Store.open(tmp_path / "replayed.duckdb")
    try:
        rebuilt = list_messages(store.reader(), ListMessages(chat_id=c, user_id="ann"))
    finally:
        store.close()
    assert [(n.node_id, n.siblings) for n in rebuilt.active_path] == [
        (n["node_id"], n["siblings"]) for n in path
    ]
    assert len(rebuilt.messages) == 4 and len(rebuilt.replies) == 6


async def test_branch_routes_refuse_what_is_not_in_the_chat(api: Api) -> None:
    await serve_model(api.nbus)
    c = (await api.new_chat(model="demo"))["chat_id"]
    other = (await api.new_chat(model="demo"))["chat_id"]
    _, posted = await api.call("POST", f"/v1/chats/{other}/messages", json={"content": "x"})
    cases = [
        (f"/v1/chats/{c}/replies/{posted['reply_id']}/regenerate", {}, 404),
        (f"/v1/chats/{c}/messages/{posted['message_id']}/edit", {"content": "y"}, 404),
        (f"/v1/chats/{c}/branch", {"node_id": posted["message_id"]}, 404),
        (f"/v1/chats/{c}/branch", {"node_id": "bad id"}, 422),
        (f"/v1/chats/{c}/branch", {}, 422),
        (
            f"/v1/chats/{other}/messages/{posted['reply_id']}/edit",
            {"content": "y"},
            404,
        ),  # a reply is no message
        (f"/v1/chats/{other}/replies/{posted['reply_id']}/regenerate", {"model": "nope"}, 409),
    ]
    for path, body, expected in cases:
        status, answer = await api.call("POST", path, json=body)
        assert status == expected, (path, answer)
    assert len(await chat_events(api.nbus, c)) == 1


def test_messages_without_a_parent_follow_the_active_leaf_and_root_edits_fork_at_the_root() -> None:
    from schemas.sampling import SamplingParams
    from schemas.tree import ChatTree

    def message(mid: str, parent: str | None = None, edit_of: str | None = None) -> MessagePosted:
        return MessagePosted(
            event_id=mid, chat_id="c", at=schemas.now(), message_id=mid, author_id="a", content=mid,
            parent_id=parent, edit_of=edit_of,
        )  # fmt: skip

    def reply(rid: str, mid: str) -> ReplyRequested:
        return ReplyRequested(
            event_id=rid, chat_id="c", at=schemas.now(), reply_id=rid, message_id=mid, model="m",
            params=SamplingParams(), requested_by="a",
        )  # fmt: skip

    tree = ChatTree()
    for seq, event in enumerate([message("m1"), reply("r1", "m1"), message("m2"), reply("r2", "m2")], 1):
        tree.apply(seq, event)
    assert tree.active_path() == ["m1", "r1", "m2", "r2"]  # appended before branches existed
    tree.apply(5, message("m1e", None, edit_of="m1"))
    assert tree.active_path() == ["m1e"] and tree.siblings("m1e") == ["m1", "m1e"]
    tree.apply(6, BranchSelected(event_id="s", chat_id="c", at=schemas.now(), node_id="r2", by="a"))
    assert tree.active_path() == ["m1", "r1", "m2", "r2"] and tree.leaf() == "r2"
    tree.apply(7, message("m3"))  # no parent: after the leaf
    assert tree.path_to("m3") == ["m1", "r1", "m2", "r2", "m3"]
