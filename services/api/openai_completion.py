"""One OpenAI completion's answer: a requested reply followed to its end, sent as one chat.completion
or as server-sent chunks; a client that leaves cancels its reply."""

from __future__ import annotations

import asyncio
import contextlib
import logging

import msgspec
from aiohttp import web

import bus
import schemas
from schemas.chat import ReplyCancelled, ReplyCompleted, ReplyFailed, ReplyRequested
from schemas.ids import new_id
from schemas.openai import (
    ChatCompletion,
    ChatCompletionChunk,
    Choice,
    ChunkChoice,
    Delta,
    OpenAIError,
    OpenAIErrorDetail,
    OutputMessage,
    Usage,
)
from schemas.tokens import TokenDelta
from services.api.errors import ApiError, json_response
from services.api.keys import BUS, CLOSING
from services.api.reply_watch import ReplyWatch

log = logging.getLogger(__name__)


CHAT_ID_HEADER = "X-Chatbus-Chat-Id"


REPLY_ID_HEADER = "X-Chatbus-Reply-Id"


# How often a wait for the reply checks that the client is still there.
CLIENT_CHECK_SECONDS = 0.25


_encoder = msgspec.json.Encoder()


class ClientGone(Exception):
    """The HTTP client closed its connection before the reply ended."""


class Completion:
    """Follows one requested reply to its end for one HTTP response."""

    def __init__(self, request: web.Request, watch: ReplyWatch, reply: ReplyRequested, created: int) -> None:
        self.request = request
        self.watch = watch
        self.reply = reply
        self.created = created
        self.id = f"chatcmpl-{reply.reply_id}"
        self.headers = {CHAT_ID_HEADER: reply.chat_id, REPLY_ID_HEADER: reply.reply_id}

    async def whole(self) -> web.StreamResponse:
        """Wait for the end event; answer with one chat.completion."""
        try:
            while True:
                event = await self._next()
                if isinstance(event, ReplyCompleted):
                    answer = ChatCompletion(
                        id=self.id,
                        created=self.created,
                        model=self.reply.model,
                        choices=[
                            Choice(message=OutputMessage(content=event.text), finish_reason=_finish(event))
                        ],
                        usage=_usage(event),
                    )
                    return json_response(answer, headers=self.headers)
                if isinstance(event, ReplyFailed):
                    raise _failure(event)
        except ClientGone:
            await self._cancel()
            return web.Response(status=499)
        except asyncio.CancelledError:  # aiohttp cancels the handler when the client goes, if so set up
            await self._cancel()
            raise

    async def stream(self, include_usage: bool) -> web.StreamResponse:
        """Send OpenAI chunks as server-sent events, then `data: [DONE]`."""
        response = web.StreamResponse(
            headers={
                **self.headers,
                "Content-Type": "text/event-stream",
                "Cache-Control": "no-cache",
                "X-Accel-Buffering": "no",
            }
        )
        await response.prepare(self.request)
        sent = ""  # the text sent so far, of `attempt`
        attempt, text = 0, ""  # the attempt whose deltas we follow, and its text so far
        try:
            await self._send(response, Delta(role="assistant", content=""))
            while True:
                event = await self._next()
                if isinstance(event, TokenDelta):
                    if event.attempt < attempt:
                        continue
                    if event.attempt > attempt:  # another worker took the reply over: it starts afresh
                        attempt, text = event.attempt, ""
                    text += event.text
                    if not text.startswith(sent[: len(text)]):
                        return await self._fail(response, "the reply was restarted by another worker")
                    if len(text) > len(sent):
                        await self._send(response, Delta(content=text[len(sent) :]))
                        sent = text
                elif isinstance(event, ReplyCompleted):
                    if not event.text.startswith(sent):
                        return await self._fail(response, "the reply was restarted by another worker")
                    if len(event.text) > len(sent):  # a delta we did not hear: the log has the whole text
                        await self._send(response, Delta(content=event.text[len(sent) :]))
                    await self._send(response, Delta(), _finish(event))
                    if include_usage:
                        await self._write(response, self._chunk([], _usage(event)))
                    await response.write(b"data: [DONE]\n\n")
                    return response
                elif isinstance(event, ReplyFailed):
                    fault = _failure(event)
                    kind = "invalid_request_error" if fault.status == 400 else "server_error"
                    return await self._fail(response, fault.message, kind, fault.code)
        except (ClientGone, ConnectionResetError):
            await self._cancel()
            return response
        except asyncio.CancelledError:
            await self._cancel()
            raise

    async def _next(self) -> schemas.Event:
        """The reply's next event; ClientGone as soon as the client has closed its connection."""
        while True:
            with contextlib.suppress(TimeoutError):
                return await self.watch.next(CLIENT_CHECK_SECONDS)
            transport = self.request.transport
            if transport is None or transport.is_closing():
                raise ClientGone

    async def _cancel(self) -> None:
        """The client left: cancel the reply so its worker frees the slot (not when this API shuts down)."""
        if self.request.app[CLOSING].is_set():
            return
        event = ReplyCancelled(
            event_id=new_id("e"),
            chat_id=self.reply.chat_id,
            at=schemas.now(),
            reply_id=self.reply.reply_id,
            by=self.reply.requested_by,
        )
        try:
            await bus.append_event(self.request.app[BUS].js, event)
        except bus.BusError as exc:
            log.warning("could not cancel reply %s after its client left: %s", self.reply.reply_id, exc)

    def _chunk(self, choices: list[ChunkChoice], usage: Usage | None = None) -> ChatCompletionChunk:
        return ChatCompletionChunk(
            id=self.id, created=self.created, model=self.reply.model, choices=choices, usage=usage
        )

    async def _send(self, response: web.StreamResponse, delta: Delta, finish: str | None = None) -> None:
        await self._write(response, self._chunk([ChunkChoice(delta=delta, finish_reason=finish)]))

    async def _write(self, response: web.StreamResponse, body: object) -> None:
        await response.write(b"data: " + _encoder.encode(body) + b"\n\n")

    async def _fail(
        self, response: web.StreamResponse, message: str, kind: str = "server_error", code: str | None = None
    ) -> web.StreamResponse:
        """End a stream with an error event (the SDKs raise it), telling where the reply lives on."""
        where = f"{message}; the chat is {self.reply.chat_id} (GET /v1/chats/{self.reply.chat_id}/messages)"
        detail = OpenAIErrorDetail(message=where, type=kind, code=code)
        await self._write(response, OpenAIError(error=detail))
        return response


# Failures caused by the request itself: a 400 with OpenAI's code; the rest are the server's (500).
_REQUEST_FAULTS = {"context_length_exceeded", "invalid_prompt"}


def _failure(event: ReplyFailed) -> ApiError:
    if event.code in _REQUEST_FAULTS:
        return ApiError(400, event.code, event.error, param="messages")
    return ApiError(500, event.code or "server_error", f"the model failed: {event.error}")


def _finish(event: ReplyCompleted) -> str:
    """OpenAI's finish_reason: `length` at max_tokens, else `stop` (a stop text, the end, or a cancel)."""
    return "length" if event.finish_reason == "length" else "stop"


def _usage(event: ReplyCompleted) -> Usage:
    return Usage(
        prompt_tokens=event.prompt_tokens,
        completion_tokens=event.completion_tokens,
        total_tokens=event.prompt_tokens + event.completion_tokens,
    )
