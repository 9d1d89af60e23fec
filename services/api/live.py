"""Watch a chat live over WebSocket or SSE: its CHAT events and TOKENS deltas, resumable by sequence."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import re
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from typing import Any

import msgspec
from aiohttp import WSCloseCode, WSMsgType, web

import bus
from bus import JetStream, StoredMsg
from identity.accounts import Principal, authenticate
from identity.sessions import COOKIE, find_session
from schemas.blind import BlindFeed
from schemas.chat import ChatEvent
from schemas.streams import CHAT, TOKENS
from schemas.subjects import ANY, REPLY_ENDS, one_chat, parse_reply_subject, reply_tokens
from services.api.access import chat_access
from services.api.auth import (
    PRINCIPAL,
    bearer_key,
    from_our_pages,
    own_origin,
    principal_of,
    proxy_principal_now,
    session_of,
    via_proxy,
)
from services.api.blind_reads import battle_blind
from services.api.errors import ApiError
from services.api.feed_limits import (
    SLOW_READER_CLOSE,
    SLOW_READER_REASON,
    SLOW_READER_SSE,
    BoundedFollower,
    FeedBudget,
    within_grace,
)
from services.api.inputs import query_int
from services.api.keys import BUS, CLOSING, FEEDS, SETTINGS, SOCKETS

log = logging.getLogger(__name__)
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
    """Two ordered consumers of one chat, CHAT and TOKENS, each from the position's seq + 1.

    What they received and the client has not taken yet is held within `budget_bytes`; past it the
    feed stops buffering and `budget.exceeded` is set: the caller drops the feed.
    """

    def __init__(self, js: JetStream, chat_id: str, position: Position, budget_bytes: int) -> None:
        self.js = js
        self.chat_id = chat_id
        self.position = position
        self.budget = FeedBudget(budget_bytes)
        self.tokens_sent = asyncio.Condition()
        self.chat = BoundedFollower(js, CHAT.name, [one_chat(chat_id)], position.chat_seq + 1, self.budget)
        self.tokens = BoundedFollower(
            js, TOKENS.name, [reply_tokens(chat_id, ANY)], position.token_seq + 1, self.budget
        )
        self.pumps: list[asyncio.Task[None]] = []
        self.tasks: list[asyncio.Task[None]] = []  # the caller's, stopped with the feed

    async def start(self) -> None:
        """Create both consumers; they buffer until `pump` forwards."""
        try:
            await asyncio.gather(self.chat.start(), self.tokens.start())
        except BaseException:
            await self.stop()
            raise

    def pump(self, send: Send, frame: Callable[[str, StoredMsg], bytes | None]) -> list[asyncio.Task[None]]:
        """Forward each arriving batch of both consumers through `send`, in their own tasks."""
        self.pumps = [
            asyncio.create_task(self._forward(self.chat, "event", send, frame)),
            asyncio.create_task(self._forward(self.tokens, "tokens", send, frame)),
        ]
        return list(self.pumps)

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
            self.budget.give_back(msgs)
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

    async def stop_reading(self) -> None:
        """Stop forwarding and delete both consumers; the caller's tasks go on."""
        await _cancel(self.pumps)
        await asyncio.gather(self.chat.stop(), self.tokens.stop())

    async def stop(self) -> None:
        """Stop forwarding and the caller's tasks, and delete both consumers."""
        await _cancel([*self.pumps, *self.tasks])
        await asyncio.gather(self.chat.stop(), self.tokens.stop())


async def _cancel(tasks: list[asyncio.Task[None]]) -> None:
    mine = asyncio.current_task()
    tasks = [task for task in tasks if task is not mine]
    for task in tasks:
        task.cancel()
    for task in tasks:
        with contextlib.suppress(BaseException):
            await task


def encode_frame(position: Position, kind: str, msg: StoredMsg, view: BlindFeed) -> bytes | None:
    """The JSON frame of a stored message as the reader may see it (`view`: blind until an arena battle's
    vote), advancing the position; None if unreadable."""
    event = bus.decode_one(msg.subject, msg.data, where=f"{msg.stream} seq {msg.seq}")
    if event is None:  # unreadable or misfiled (logged): the client never sees it
        return None
    if kind == "event":
        position.chat_seq = msg.seq
    else:
        position.token_seq = msg.seq
    seen = view.see(event) if isinstance(event, ChatEvent) else event
    return _encoder.encode(LiveFrame(kind=kind, seq=msg.seq, event=seen))


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
    """A feed opened on browser credentials (a session cookie, or the trusted proxy's login) must come
    from this site's own pages: no cross-site WebSocket hijacking."""
    if session_of(request) is None and not via_proxy(request):
        return  # API keys are not sent by browsers on their own
    if not from_our_pages(request):
        expected = own_origin(request)
        raise ApiError(403, "bad_origin", f"a browser's live feed must be opened from {expected}")


@contextlib.contextmanager
def counted_feed(request: web.Request) -> Iterator[None]:
    """Hold one of the caller's live feeds for the block; 429 when the user or key has its cap open."""
    principal = principal_of(request)
    feeds = request.app[FEEDS]
    refused = feeds.claim(principal)
    if refused is not None:
        raise ApiError(429, "too_many_feeds", refused, {"Retry-After": "5"})
    try:
        yield
    finally:
        feeds.release(principal)


async def watch_ws(request: web.Request) -> web.StreamResponse:
    """WebSocket: JSON frames of the chat's events and token deltas after the given sequences."""
    check_origin(request)
    access = await chat_access(request, write=False)
    position = start_position(request, last_event_id=False)
    view = BlindFeed(await battle_blind(request, access.chat))
    settings = request.app[SETTINGS]
    ws = web.WebSocketResponse(
        max_msg_size=settings.ws_max_frame_bytes, heartbeat=WS_HEARTBEAT_SECONDS, compress=False
    )
    if not ws.can_prepare(request).ok:
        raise ApiError(400, "not_websocket", "this route speaks WebSocket; send an Upgrade request")
    with counted_feed(request):
        feed = ChatFeed(request.app[BUS].js, access.chat_id, position, settings.feed_buffer_bytes)
        await feed.start()
        sockets = request.app[SOCKETS]
        try:
            await ws.prepare(request)
            sockets.add(ws)

            async def send(frames: list[bytes]) -> None:
                for data in frames:
                    await ws.send_frame(data, WSMsgType.TEXT)

            pumps = feed.pump(send, lambda kind, msg: encode_frame(position, kind, msg, view))
            feed.tasks.append(asyncio.create_task(_close_on_failure(pumps, ws)))
            feed.tasks.append(asyncio.create_task(_close_when_denied(request, ws)))
            feed.tasks.append(reading := asyncio.create_task(_answer_pings(ws)))
            feed.tasks.append(slow := asyncio.create_task(feed.budget.until_exceeded()))
            await asyncio.wait([reading, slow], return_when=asyncio.FIRST_COMPLETED)
            if slow.done():
                # Closed from here, with no receive() waiting: aiohttp then waits for the client's
                # close frame instead of cutting the connection under the client's reply.
                await _cancel([reading])
                await feed.stop_reading()
                await within_grace(request, ws.close(code=SLOW_READER_CLOSE, message=SLOW_READER_REASON))
        finally:
            sockets.discard(ws)
            await feed.stop()
    return ws


async def _until_denied(request: web.Request) -> None:
    """Return once the caller's access is gone: key revoked, logged out, proxy user erased, chat deleted.

    An open feed must not outlive access; each check reads the caller's credential again, the way
    the request was authenticated (the principal is refreshed, so a demoted admin loses other chats).
    """
    js = request.app[BUS].js
    session = session_of(request)
    while True:
        await asyncio.sleep(request.app[SETTINGS].access_recheck_seconds)
        key = bearer_key(request)
        try:
            if session is not None:
                if await find_session(js, request.cookies.get(COOKIE)) is None:
                    return  # logged out
            else:
                now = await (proxy_principal_now(request) if via_proxy(request) else _key_principal(js, key))
                if now is None:
                    return
                request[PRINCIPAL] = now
            await chat_access(request, write=False)
        except ApiError:
            return
        except bus.BusError:
            continue  # NATS is briefly away: keep serving, check again later


async def _key_principal(js: JetStream, key: str | None) -> Principal | None:
    return None if key is None else await authenticate(js, key)


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


async def _answer_pings(ws: web.WebSocketResponse) -> None:
    """Read the client's frames until it closes: clients only ever need to ping; the rest is ignored."""
    async for msg in ws:
        if msg.type == WSMsgType.TEXT and msg.data.strip() in _PING:
            await ws.send_str(_PONG)


async def _heartbeats(response: web.StreamResponse, seconds: float) -> None:
    """An SSE comment line every `seconds`: proxies keep the stream open and clients see it is alive."""
    while True:
        await asyncio.sleep(seconds)
        await response.write(b": heartbeat\n\n")


async def watch_sse(request: web.Request) -> web.StreamResponse:
    """Server-sent events: the same frames as the WebSocket, each with `id: <chat_seq>:<token_seq>`."""
    access = await chat_access(request, write=False)
    position = start_position(request, last_event_id=True)
    view = BlindFeed(await battle_blind(request, access.chat))
    settings = request.app[SETTINGS]
    with counted_feed(request):
        feed = ChatFeed(request.app[BUS].js, access.chat_id, position, settings.feed_buffer_bytes)
        await feed.start()
        response = web.StreamResponse(
            headers={
                "Content-Type": "text/event-stream",
                "Cache-Control": "no-cache",
                "X-Accel-Buffering": "no",
            }
        )
        waits = [
            slow := asyncio.create_task(feed.budget.until_exceeded()),
            asyncio.create_task(request.app[CLOSING].wait()),
            asyncio.create_task(_until_denied(request)),
        ]
        try:
            await response.prepare(request)
            await response.write(b"retry: 1000\n\n")

            def frame(kind: str, msg: StoredMsg) -> bytes | None:
                # Encoding and writing a batch happen with no await between: the id is what the client has.
                data = encode_frame(position, kind, msg, view)
                return (
                    None if data is None else b"id: %s\ndata: %s\n\n" % (position.event_id().encode(), data)
                )

            async def send(frames: list[bytes]) -> None:
                await response.write(b"".join(frames))

            waits += feed.pump(send, frame)
            waits.append(asyncio.create_task(_heartbeats(response, settings.sse_heartbeat_seconds)))
            await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
            if slow.done():
                await feed.stop_reading()
                await within_grace(request, response.write(SLOW_READER_SSE))
        except ConnectionResetError:
            pass  # the client went away
        finally:
            for task in waits:
                task.cancel()
            await feed.stop()
    return response
