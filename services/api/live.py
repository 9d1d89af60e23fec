"""Watch a chat live over WebSocket or SSE: its CHAT events and TOKENS deltas, resumable by sequence."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import msgspec
from aiohttp import WSCloseCode, WSMsgType, web

import bus
from bus import JetStream, StoredMsg
from identity.accounts import authenticate
from identity.sessions import COOKIE, find_session
from schemas.streams import CHAT, TOKENS
from schemas.subjects import ANY, REPLY_ENDS, one_chat, parse_reply_subject, reply_tokens
from services.api.access import chat_access
from services.api.auth import bearer_key, session_of
from services.api.errors import ApiError
from services.api.inputs import query_int
from services.api.keys import BUS, CLOSING, SETTINGS, SOCKETS

log = logging.getLogger(__name__)
SSE_KEEPALIVE_SECONDS = 15.0
WS_HEARTBEAT_SECONDS = 25.0
_PING = ("ping", '{"kind":"ping"}', '{"kind": "ping"}')
_PONG = '{"kind":"pong"}'

MAX_SEQ = 2**63 - 1  # JetStream sequences are uint64; nats-server refuses larger start sequences
_SEQ = re.compile(r"[0-9]{1,18}")


class LiveFrame(msgspec.Struct, frozen=True, kw_only=True):
    """One server frame: kind `event` (CHAT, seq = CHAT sequence) or `tokens` (seq = TOKENS sequence)."""

    kind: str
    seq: int
    event: Any


_encoder = msgspec.json.Encoder()
Send = Callable[[list[bytes]], Awaitable[None]]


@dataclass
class Position:
    """The last CHAT and TOKENS sequences sent; an SSE event id is `<chat_seq>:<token_seq>`."""

    chat_seq: int
    token_seq: int

    def event_id(self) -> str:
        """The SSE id a client sends back as Last-Event-ID."""
        return f"{self.chat_seq}:{self.token_seq}"


# How long an end event waits for its reply's deltas to go out first (they are already stored).
DELTAS_FIRST_SECONDS = 2.0


class ChatFeed:
    """Two ordered consumers of one chat, CHAT and TOKENS, each from the position's seq + 1."""

    def __init__(self, js: JetStream, chat_id: str, position: Position) -> None:
        self.js = js
        self.chat_id = chat_id
        self.position = position
        self.tokens_sent = asyncio.Condition()
        self.chat = bus.Follower(js, CHAT.name, [one_chat(chat_id)], start_seq=position.chat_seq + 1)
        self.tokens = bus.Follower(
            js, TOKENS.name, [reply_tokens(chat_id, ANY)], start_seq=position.token_seq + 1
        )
        self.tasks: list[asyncio.Task[None]] = []

    async def start(self) -> None:
        """Create both consumers; they buffer until `pump` forwards."""
        try:
            await asyncio.gather(self.chat.start(), self.tokens.start())
        except BaseException:
            await self.stop()
            raise

    def pump(self, send: Send, frame: Callable[[str, StoredMsg], bytes | None]) -> list[asyncio.Task[None]]:
        """Forward each arriving batch of both consumers through `send`, in their own tasks."""
        self.tasks = [
            asyncio.create_task(self._forward(self.chat, "event", send, frame)),
            asyncio.create_task(self._forward(self.tokens, "tokens", send, frame)),
        ]
        return self.tasks

    async def _forward(
        self, follower: bus.Follower, kind: str, send: Send, frame: Callable[[str, StoredMsg], bytes | None]
    ) -> None:
        while True:
            await follower.wait()
            msgs = follower.take()
            if kind == "event":
                await self._deltas_first(msgs)
            frames = [f for msg in msgs if (f := frame(kind, msg)) is not None]
            if frames:
                await send(frames)
            if kind == "tokens":
                async with self.tokens_sent:
                    self.tokens_sent.notify_all()

    async def _deltas_first(self, msgs: list[StoredMsg]) -> None:
        """Before a reply's end event goes out, send every delta of it (the worker stored them first).

        The two consumers run independently; without this a client that stops reading at
        `reply.completed` could miss the last deltas still on their way.
        """
        for msg in msgs:
            reply = parse_reply_subject(msg.subject)
            if reply is None or reply.kind not in REPLY_ENDS:  # after an end, no delta of the reply follows
                continue
            last = await bus.last_msg(self.js, TOKENS.name, reply_tokens(self.chat_id, reply.reply_id))
            if last is None or self.position.token_seq >= last.seq:
                continue
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(DELTAS_FIRST_SECONDS), self.tokens_sent:
                    await self.tokens_sent.wait_for(functools.partial(self._sent_through, last.seq))

    def _sent_through(self, seq: int) -> bool:
        return self.position.token_seq >= seq

    async def stop(self) -> None:
        """Stop forwarding and delete both consumers."""
        for task in self.tasks:
            task.cancel()
        for task in self.tasks:
            with contextlib.suppress(BaseException):
                await task
        await asyncio.gather(self.chat.stop(), self.tokens.stop())


def encode_frame(position: Position, kind: str, msg: StoredMsg) -> bytes | None:
    """The JSON frame of a stored message (and advance the position), or None if unreadable."""
    event = bus.decode_one(msg.subject, msg.data, where=f"{msg.stream} seq {msg.seq}")
    if event is None:  # unreadable or misfiled (logged): the client never sees it
        return None
    if kind == "event":
        position.chat_seq = msg.seq
    else:
        position.token_seq = msg.seq
    return _encoder.encode(LiveFrame(kind=kind, seq=msg.seq, event=event))


def start_position(request: web.Request, last_event_id: bool) -> Position:
    """From `after_chat_seq`/`after_token_seq`, or (SSE) a `Last-Event-ID: <chat_seq>:<token_seq>` header."""
    header = request.headers.get("Last-Event-ID", "").strip() if last_event_id else ""
    if header:
        chat, sep, token = header.partition(":")
        if not (sep and _SEQ.fullmatch(chat) and _SEQ.fullmatch(token)):
            raise ApiError(400, "bad_parameter", "Last-Event-ID must be <chat_seq>:<token_seq>")
        return Position(chat_seq=int(chat), token_seq=int(token))
    return Position(
        chat_seq=query_int(request, "after_chat_seq", 0, high=MAX_SEQ),
        token_seq=query_int(request, "after_token_seq", 0, high=MAX_SEQ),
    )


def check_origin(request: web.Request) -> None:
    """A browser session's WebSocket must come from this site's own pages (no cross-site hijacking)."""
    if session_of(request) is None:
        return  # API keys are not sent by browsers on their own
    scheme = "https" if request.secure or request.headers.get("X-Forwarded-Proto", "") == "https" else "http"
    expected = f"{scheme}://{request.host}"
    if request.headers.get("Origin") != expected:
        raise ApiError(403, "bad_origin", f"a session's live feed must be opened from {expected}")


async def watch_ws(request: web.Request) -> web.StreamResponse:
    """WebSocket: JSON frames of the chat's events and token deltas after the given sequences."""
    check_origin(request)
    access = await chat_access(request, write=False)
    position = start_position(request, last_event_id=False)
    ws = web.WebSocketResponse(
        max_msg_size=request.app[SETTINGS].ws_max_frame_bytes, heartbeat=WS_HEARTBEAT_SECONDS, compress=False
    )
    if not ws.can_prepare(request).ok:
        raise ApiError(400, "not_websocket", "this route speaks WebSocket; send an Upgrade request")
    feed = ChatFeed(request.app[BUS].js, access.chat_id, position)
    await feed.start()
    sockets = request.app[SOCKETS]
    try:
        await ws.prepare(request)
        sockets.add(ws)

        async def send(frames: list[bytes]) -> None:
            for data in frames:
                await ws.send_frame(data, WSMsgType.TEXT)

        pumps = feed.pump(send, lambda kind, msg: encode_frame(position, kind, msg))
        feed.tasks.append(asyncio.create_task(_close_on_failure(pumps, ws)))
        feed.tasks.append(asyncio.create_task(_close_when_denied(request, ws)))
        async for msg in ws:
            # Clients only ever need to ping; anything else is ignored.
            if msg.type == WSMsgType.TEXT and msg.data.strip() in _PING:
                await ws.send_str(_PONG)
    finally:
        sockets.discard(ws)
        await feed.stop()
    return ws


async def _until_denied(request: web.Request) -> None:
    """Return once the caller's key is revoked or the chat is gone: an open feed must not outlive access."""
    js = request.app[BUS].js
    session = session_of(request)
    while True:
        await asyncio.sleep(request.app[SETTINGS].access_recheck_seconds)
        key = bearer_key(request)
        try:
            if session is not None:
                if await find_session(js, request.cookies.get(COOKIE)) is None:
                    return  # logged out
            elif key is None or await authenticate(js, key) is None:
                return
            await chat_access(request, write=False)
        except ApiError:
            return
        except bus.BusError:
            continue  # NATS is briefly away: keep serving, check again later


async def _close_when_denied(request: web.Request, ws: web.WebSocketResponse) -> None:
    await _until_denied(request)
    if not ws.closed:
        await ws.close(code=WSCloseCode.POLICY_VIOLATION, message=b"access revoked")


async def _close_on_failure(pumps: list[asyncio.Task[None]], ws: web.WebSocketResponse) -> None:
    """Close the socket with 1011 when forwarding fails (the bus went away), so the client reconnects."""
    done, _ = await asyncio.wait(pumps, return_when=asyncio.FIRST_EXCEPTION)
    exc = next((t.exception() for t in done if not t.cancelled() and t.exception()), None)
    if exc is not None and not ws.closed:
        if not isinstance(exc, ConnectionResetError):
            log.warning("live feed failed: %r", exc)
        await ws.close(code=WSCloseCode.INTERNAL_ERROR, message=b"feed failed")


async def watch_sse(request: web.Request) -> web.StreamResponse:
    """Server-sent events: the same frames as the WebSocket, each with `id: <chat_seq>:<token_seq>`."""
    access = await chat_access(request, write=False)
    position = start_position(request, last_event_id=True)
    feed = ChatFeed(request.app[BUS].js, access.chat_id, position)
    await feed.start()
    response = web.StreamResponse(
        headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
    )
    closing = asyncio.create_task(request.app[CLOSING].wait())
    denied = asyncio.create_task(_until_denied(request))
    try:
        await response.prepare(request)
        await response.write(b"retry: 1000\n\n")

        def frame(kind: str, msg: StoredMsg) -> bytes | None:
            data = encode_frame(position, kind, msg)
            return None if data is None else b"id: %s\ndata: %s\n\n" % (position.event_id().encode(), data)

        async def send(frames: list[bytes]) -> None:
            await response.write(b"".join(frames))

        pumps = feed.pump(send, frame)
        while True:
            done, _ = await asyncio.wait(
                [*pumps, closing, denied], timeout=SSE_KEEPALIVE_SECONDS, return_when=asyncio.FIRST_COMPLETED
            )
            if done:
                break
            await response.write(b": keepalive\n\n")
    except ConnectionResetError:
        pass  # the client went away
    finally:
        closing.cancel()
        denied.cancel()
        await feed.stop()
    return response
