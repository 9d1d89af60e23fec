"""Deleting hides a chat (an admin restores it); erasing purges it from the log, read model and images."""

from __future__ import annotations

import asyncio
import io
from datetime import timedelta
from pathlib import Path

from PIL import Image

import bus
import schemas
from logtools.arena_votes import set_excluded
from logtools.export import ExportFilter, chats_json, read_log
from schemas.chat import ChatErased, ReplyCompleted
from schemas.identity import UserErased
from schemas.ids import new_id
from schemas.subjects import reply_tokens
from schemas.tokens import TokenDelta
from services.image_store.collect import collect_images
from services.projector import dump_read_model, replay
from tests.apihelp import Api, serve_model
from tests.arena_log import whole_battle

SECRET = "the launch code is 0000"


def _png(colour: tuple[int, int, int]) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (12, 12), colour).save(out, "PNG")
    return out.getvalue()


async def _chat_with_everything(
    api: Api, user: str = "ann", colour: tuple[int, int, int] = (3, 2, 1)
) -> tuple[str, str]:
    """A chat with an image, a completed reply, token deltas and a rating; (chat_id, image sha)."""
    await serve_model(api.nbus)
    _, image = await api.call(
        "POST", "/v1/images", user, data=_png(colour), headers={"Content-Type": "image/png"}
    )
    c = (await api.new_chat(user, model="demo", title="private"))["chat_id"]
    _, posted = await api.call(
        "POST", f"/v1/chats/{c}/messages", user, json={"content": SECRET, "images": [image["sha256"]]}
    )
    reply_id = posted["reply_id"]
    delta = TokenDelta(chat_id=c, reply_id=reply_id, attempt=1, index=0, text=SECRET, n_tokens=3)
    await api.nbus.js.publish(reply_tokens(c, reply_id), schemas.encode(delta))
    done = ReplyCompleted(
        event_id=new_id("e"), chat_id=c, at=schemas.now(), reply_id=reply_id, attempt=1, worker_id="w1",
        model="demo", text=f"echo: {SECRET}", prompt_tokens=3, completion_tokens=3, finish_reason="stop",
    )  # fmt: skip
    await bus.append_event(api.nbus.js, done)
    status, _ = await api.call(
        "PUT", f"/v1/chats/{c}/replies/{reply_id}/feedback", user, json={"rating": "up"}
    )
    assert status == 200
    return c, image["sha256"]


async def _image_status(api: Api, sha: str, user: str) -> int:
    async with api.client.get(f"/v1/images/{sha}", headers=api.auth(user)) as resp:
        return resp.status


async def _everything_in(nbus: bus.Bus) -> list[bus.StoredMsg]:
    subjects = {
        "CHAT": ["chat.>"],
        "IDENTITY": ["user.>", "apikey.>"],
        "IMAGE": ["image.>"],
        "TOKENS": ["tokens.>"],
        "BOTS": ["bot.>"],
        "ARENA": ["arena.>"],
    }
    out = []
    for stream, filters in subjects.items():
        out += await bus.read_all(nbus.js, stream, filters)
    return out


async def test_a_deleted_chat_is_hidden_and_an_admin_restores_it(api: Api) -> None:
    c = (await api.new_chat(title="oops"))["chat_id"]
    assert (await api.call("DELETE", f"/v1/chats/{c}"))[0] == 200
    assert (await api.call("GET", f"/v1/chats/{c}"))[0] == 404
    assert (await api.call("DELETE", f"/v1/chats/{c}"))[0] == 404
    assert (await api.call("POST", f"/v1/chats/{c}/restore", "ann"))[0] == 403  # users cannot
    status, restored = await api.call("POST", f"/v1/chats/{c}/restore", "root")
    assert status == 200
    status, chat = await api.call("GET", f"/v1/chats/{c}?min_seq={restored['seq']}")
    assert status == 200 and chat["title"] == "oops" and chat["deleted"] is False
    assert (await api.call("POST", f"/v1/chats/{c}/restore", "root"))[0] == 409  # not deleted
    _, page = await api.call("GET", f"/v1/chats?min_seq={restored['seq']}")
    assert [x["chat_id"] for x in page["items"]] == [c]
    assert (await api.call("DELETE", f"/v1/chats/{c}"))[0] == 200  # and it can be deleted again


async def test_erasing_a_chat_leaves_a_tombstone_and_nothing_else(api: Api, tmp_path: Path) -> None:
    c, sha = await _chat_with_everything(api)
    kept, _ = await _chat_with_everything(api)  # another chat with the same image: it must stay
    status, erased = await api.call("POST", f"/v1/chats/{c}/erase")
    assert status == 200
    remaining = await bus.read_all(api.nbus.js, "CHAT", [f"chat.{c}.>"])
    assert [m.subject for m in remaining] == [f"chat.{c}.erased"]
    assert isinstance(schemas.decode_event(remaining[0].data), ChatErased)
    assert await bus.read_all(api.nbus.js, "TOKENS", [f"tokens.{c}.>"]) == []
    assert (await api.call("GET", f"/v1/chats/{c}"))[0] == 404
    assert await _image_status(api, sha, "ann") == 200  # still in the other chat

    status, _ = await api.call(
        "GET", f"/v1/chats/{kept}/messages?min_seq={erased['seq']}"
    )  # projector caught up
    assert status == 200
    _, page = await api.call("GET", f"/v1/chats?min_seq={erased['seq']}")
    assert [x["chat_id"] for x in page["items"]] == [kept]
    await replay(api.nbus, tmp_path / "replayed.duckdb")
    rows = dump_read_model(tmp_path / "replayed.duckdb")
    assert c not in repr(rows) and kept in repr(rows)

    assert (await api.call("POST", f"/v1/chats/{kept}/erase"))[0] == 200
    # No chat of hers carries it any more: her upload goes with the chats, and the bytes with it.
    assert await _image_status(api, sha, "ann") == 404
    assert await bus.list_objects(api.nbus.js, "images") == []
    assert (await collect_images(api.nbus, by="test", grace=timedelta(0))).purged == []
    assert not [m for m in await _everything_in(api.nbus) if SECRET.encode() in m.data]


async def test_erasing_a_user_removes_every_trace_but_the_tombstone(api: Api, tmp_path: Path) -> None:
    c, sha = await _chat_with_everything(api, "bob")
    his_chat, only_his = await _chat_with_everything(api, "bob", colour=(90, 0, 90))  # nobody else has it
    mine, _ = await _chat_with_everything(api, "ann")
    bot = {"name": "Bob's Muse", "model": "demo", "system_prompt": "You are bob's.", "visibility": "public"}
    assert (await api.call("POST", "/v1/bots", "bob", json=bot))[0] == 201
    job = {"input": SECRET, "model": "demo", "session_id": "bob"}  # a job's session is a chat of his too
    status, his_job = await api.call("POST", "/v1/jobs", "bob", json=job)
    assert status == 202, his_job
    battle = whole_battle("bob", "alpha", "beta", "A", SECRET, ("yes", "no"))
    battle_id = battle[0].chat_id  # type: ignore[union-attr]
    await bus.append_events(api.nbus.js, battle)  # a battle of his, with his vote
    await set_excluded(api.nbus.js, "bob", True, "voted at random", "root")  # and his votes excluded
    await set_excluded(api.nbus.js, "ann", True, "", "root")
    status, erased = await api.call("POST", "/v1/admin/users/bob/erase", "root")
    assert status == 200 and sorted(erased["chats"]) == sorted([c, his_chat, battle_id, his_job["chat_id"]])
    assert len(erased["bots"]) == 1
    assert (await api.call("GET", "/v1/me", "bob"))[0] == 401  # his keys are gone
    # The user id as a value (quoted) or a subject token; ids are random base36 and may contain "bob".
    traces = [m for m in await _everything_in(api.nbus) if b'"bob"' in m.data or ".bob." in f".{m.subject}."]
    assert [m.subject for m in traces] == ["user.bob.erased"], [m.data for m in traces]
    assert isinstance(schemas.decode_event(traces[0].data), UserErased)
    tombstones = [m.subject for m in await bus.read_all(api.nbus.js, "CHAT", [f"chat.{c}.>"])]
    assert tombstones == [f"chat.{c}.erased"]
    assert await _image_status(api, sha, "ann") == 200  # ann's copy of the picture stays
    assert only_his not in {o.name for o in await bus.list_objects(api.nbus.js, "images")}  # released
    await replay(api.nbus, tmp_path / "replayed.duckdb")
    rows = dump_read_model(tmp_path / "replayed.duckdb")
    assert "'bob'" not in repr(rows) and mine in repr(rows)
    log = await read_log(api.nbus)  # what every export reads
    assert c not in log.chats and "bob" not in {chat.created.owner_id for chat in log.chats.values()}
    assert "bob" not in log.consent and log.excluded_voters == {"ann"}  # ann's exclusion stays
    document = chats_json(log, ExportFilter(consent_only=False))
    assert "'bob'" not in repr(document) and SECRET in repr(document)  # ann's chat is still exported
    assert (await api.call("POST", "/v1/admin/users/bob/erase", "root"))[0] == 404
    assert (await api.call("POST", "/v1/admin/users/root/erase", "root"))[0] == 409


async def test_events_after_a_tombstone_change_nothing_live_or_replayed(
    nbus: bus.Bus, tmp_path: Path
) -> None:
    """A straggler (a late post, a worker's late event) after an erasure: the same in every read model."""
    from schemas.chat import ChatCreated, MessagePosted
    from services.projector import run_projector

    def created(c: str) -> ChatCreated:
        return ChatCreated(event_id=new_id("e"), chat_id=c, at=schemas.now(), owner_id="ann", title=c)

    def posted(c: str, text: str) -> MessagePosted:
        return MessagePosted(
            event_id=new_id("e"),
            chat_id=c,
            at=schemas.now(),
            message_id=new_id("m"),
            author_id="ann",
            content=text,
        )

    def erased(c: str) -> ChatErased:
        return ChatErased(event_id=new_id("e"), chat_id=c, at=schemas.now(), by="ann")

    live_db = tmp_path / "live.duckdb"
    stop = asyncio.Event()
    task = asyncio.create_task(run_projector(nbus, live_db, stop, serve_queries=False))
    for event in (created("a"), posted("a", "one"), erased("a"), posted("a", "late, same batch")):
        await bus.append_event(nbus.js, event)
    await asyncio.sleep(1.0)  # the live projector applies those, then sees the next ones in later batches
    for event in (posted("a", "late, next batch"), created("b"), posted("b", "kept")):
        await bus.append_event(nbus.js, event)
    await asyncio.sleep(1.0)
    stop.set()
    await task
    live = dump_read_model(live_db)
    contents = [row[4] for row in live["messages"]]  # (message_id, chat_id, author_id, role, content, ...)
    assert contents == ["kept"] and [row[0] for row in live["chats"]] == ["b"]
    await replay(nbus, tmp_path / "replayed.duckdb")
    assert dump_read_model(tmp_path / "replayed.duckdb") == live
