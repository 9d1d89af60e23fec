"""Logs for tests: chat events one by one, many small chats published fast, and rich chats made
through the API (branches, ratings, images, a ChatGPT import, erasure) for export, replay and the fixture."""

from __future__ import annotations

import asyncio
import io
from datetime import timedelta
from typing import Any

from PIL import Image

import bus
import schemas
from bus import Bus
from logtools.import_chatgpt import import_chatgpt
from schemas.chat import (
    ChatCreated,
    ChatDeleted,
    ChatRenamed,
    MessagePosted,
    ReplyCompleted,
    ReplyFailed,
    ReplyRequested,
    ReplyStarted,
)
from schemas.ids import new_id
from schemas.subjects import subject_of
from tests.apihelp import Api, serve_model

T0 = schemas.now()


def at_second(i: int) -> Any:
    """T0 plus i seconds: the time of the i-th step of a made-up chat."""
    return T0 + timedelta(seconds=i)


def created(chat_id: str, owner: str = "ann", i: int = 0, title: str = "hello") -> ChatCreated:
    """`chat.created` at second i."""
    return ChatCreated(
        event_id=new_id("e"), chat_id=chat_id, at=at_second(i), owner_id=owner, title=title, model="m"
    )


def posted(chat_id: str, message_id: str, i: int, author: str = "ann") -> MessagePosted:
    """`message.posted` at second i."""
    return MessagePosted(
        event_id=new_id("e"),
        chat_id=chat_id,
        at=at_second(i),
        message_id=message_id,
        author_id=author,
        content=f"text of {message_id}",
    )


def requested(chat_id: str, reply_id: str, message_id: str, i: int) -> ReplyRequested:
    """`reply.requested` at second i."""
    return ReplyRequested(
        event_id=new_id("e"),
        chat_id=chat_id,
        at=at_second(i),
        reply_id=reply_id,
        message_id=message_id,
        model="m",
        requested_by="ann",
    )


def started(chat_id: str, reply_id: str, attempt: int, i: int) -> ReplyStarted:
    """`reply.started` at second i."""
    return ReplyStarted(
        event_id=new_id("e"),
        chat_id=chat_id,
        at=at_second(i),
        reply_id=reply_id,
        attempt=attempt,
        worker_id=f"w{attempt}",
        model="m",
    )


def completed(chat_id: str, reply_id: str, attempt: int, i: int, finish: Any = "stop") -> ReplyCompleted:
    """`reply.completed` at second i."""
    return ReplyCompleted(
        event_id=new_id("e"),
        chat_id=chat_id,
        at=at_second(i),
        reply_id=reply_id,
        attempt=attempt,
        worker_id=f"w{attempt}",
        model="m",
        text=f"answer {reply_id}",
        prompt_tokens=7,
        completion_tokens=3,
        finish_reason=finish,
        queue_ms=1.5,
        first_token_ms=20.0,
        generation_ms=90.0,
    )


def chat_life(i: int) -> list[Any]:
    """A small chat: created, renamed, three turns with replies, some failed, every 7th deleted."""
    c = f"chat{i}"
    events: list[Any] = [created(c, f"user{i % 3}", i)]
    for turn in range(3):
        m, r = f"m{i}_{turn}", f"r{i}_{turn}"
        events += [posted(c, m, i + turn), requested(c, r, m, i + turn), started(c, r, 1, i + turn)]
        events.append(
            completed(c, r, 1, i + turn + 1)
            if (i + turn) % 4
            else ReplyFailed(
                event_id=new_id("e"),
                chat_id=c,
                at=at_second(i),
                reply_id=r,
                attempt=1,
                worker_id="w1",
                error="boom",
            )
        )
        if turn == 0:
            events.append(
                ChatRenamed(event_id=new_id("e"), chat_id=c, at=at_second(i + 1), title=f"t{i}", by="x")
            )
    if i % 7 == 0:
        events.append(ChatDeleted(event_id=new_id("e"), chat_id=c, at=at_second(i + 5), by="x"))
    return events


async def publish_fast(nbus: Bus, events: list[Any]) -> None:
    """Publish every event at once (publish_async), each with its event id as Nats-Msg-Id."""
    futures = [
        await nbus.js.publish_async(subject_of(e), schemas.encode(e), headers={"Nats-Msg-Id": e.event_id})
        for e in events
    ]
    await asyncio.gather(*futures)


async def complete_reply(api: Api, chat_id: str, reply_id: str, text: str, model: str = "demo") -> int:
    """Append a worker's `reply.completed` with `text`; its stream sequence."""
    event = ReplyCompleted(
        event_id=new_id("e"), chat_id=chat_id, at=schemas.now(), reply_id=reply_id, attempt=1,
        worker_id="w1", model=model, text=text, prompt_tokens=3, completion_tokens=2, finish_reason="stop",
    )  # fmt: skip
    return (await bus.append_event(api.nbus.js, event)).seq


async def rate(api: Api, user: str, chat_id: str, reply_id: str, rating: str) -> None:
    """PUT the user's rating of a reply over the API."""
    url = f"/v1/chats/{chat_id}/replies/{reply_id}/feedback"
    assert (await api.call("PUT", url, user, json={"rating": rating}))[0] == 200


async def make_story(api: Api, user: str) -> dict[str, str]:
    """A chat with a system prompt, a regenerated first reply (rated up and down), an image turn."""
    await serve_model(api.nbus)
    png = io.BytesIO()
    Image.new("RGB", (8, 8), (5, 6, 7)).save(png, "PNG")
    _, image = await api.call(
        "POST", "/v1/images", user, data=png.getvalue(), headers={"Content-Type": "image/png"}
    )
    c = (await api.new_chat(user, model="demo", system_prompt="Be brief."))["chat_id"]
    _, first = await api.call("POST", f"/v1/chats/{c}/messages", user, json={"content": f"{user}: question"})
    await complete_reply(api, c, first["reply_id"], "answer A")
    _, again = await api.call("POST", f"/v1/chats/{c}/replies/{first['reply_id']}/regenerate", user, json={})
    await complete_reply(api, c, again["reply_id"], "answer B")
    await rate(api, user, c, first["reply_id"], "up")
    await rate(api, user, c, again["reply_id"], "down")
    body = {"content": "and this?", "images": [image["sha256"]]}
    _, second = await api.call("POST", f"/v1/chats/{c}/messages", user, json=body)
    await complete_reply(api, c, second["reply_id"], "answer C", model="other")
    await rate(api, user, c, second["reply_id"], "up")
    return {
        "chat": c,
        "r1": first["reply_id"],
        "r1b": again["reply_id"],
        "r2": second["reply_id"],
        "image": image["sha256"],
    }


def _node(
    node_id: str, role: str | None, text: str, parent: str | None, children: list[str], recipient: str = "all"
) -> dict[str, Any]:
    message = None
    if role is not None:
        message = {
            "author": {"role": role},
            "content": {"content_type": "text", "parts": [text]},
            "create_time": 1700000001.0,
            "metadata": {"model_slug": "gpt-4o"} if role == "assistant" else {},
            "recipient": recipient,
        }
    return {"id": node_id, "message": message, "parent": parent, "children": children}


CHATGPT = [
    {
        "title": "Trip to Lisbon",
        "create_time": 1700000000.0,
        "current_node": "a1",
        "mapping": {
            "root": _node("root", None, "", None, ["sys"]),
            "sys": _node("sys", "system", "", "root", ["u1"]),
            "u1": _node("u1", "user", "Plan 2 days", "sys", ["a1", "a2"]),
            "a1": _node("a1", "assistant", "Day 1: Alfama", "u1", []),
            "a2": _node("a2", "assistant", "Day 1: Belém", "u1", []),
        },
    },
    {
        "title": "Sums",
        "create_time": 1700000100.0,
        "current_node": "a3",
        "mapping": {
            "u": _node("u", "user", "What is 2+2? Use python.", None, ["call"]),
            "call": _node("call", "assistant", "print(2+2)", "u", ["out"], recipient="python"),
            "out": _node("out", "tool", "4", "call", ["a1"]),
            "a1": _node("a1", "assistant", "It prints 4.", "out", ["t2"]),
            "t2": _node("t2", "tool", "(checked)", "a1", ["a3"]),
            "a3": _node("a3", "assistant", "So 2+2 = 4.", "t2", []),
        },
    },
]


async def rich_log(api: Api) -> None:
    """Branches, ratings, images, renames, a deleted and restored chat, an erased chat, consent."""
    ann = await make_story(api, "ann")
    await make_story(api, "bob")
    c = ann["chat"]
    _, listed = await api.call("GET", f"/v1/chats/{c}/messages")
    second = listed["messages"][-1]["message_id"]
    _, edited = await api.call("POST", f"/v1/chats/{c}/messages/{second}/edit", json={"content": "edited"})
    await api.call("POST", f"/v1/chats/{c}/replies/{edited['reply_id']}/cancel")
    await api.call("POST", f"/v1/chats/{c}/branch", json={"node_id": ann["r2"]})
    await import_chatgpt(api.nbus, CHATGPT, "bob")
    await api.call("PUT", "/v1/me/consent", "ann", json={"allowed": True})
    gone = (await api.new_chat("ann", model="demo"))["chat_id"]
    _, sent = await api.call("POST", f"/v1/chats/{gone}/messages", json={"content": "bye"})
    await complete_reply(api, gone, sent["reply_id"], "bye too")
    await api.call("POST", f"/v1/chats/{gone}/erase")
    back = (await api.new_chat("bob", title="back"))["chat_id"]
    await api.call("DELETE", f"/v1/chats/{back}", "bob")
    await api.call("POST", f"/v1/chats/{back}/restore", "root")
    await api.call("PATCH", f"/v1/chats/{back}", "bob", json={"title": "back again"})
