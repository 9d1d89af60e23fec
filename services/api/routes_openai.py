"""OpenAI-compatible chat completions: a front door to the same thing as every chat, events in the log.

A completion appends what a chat appends (`chat.created` with origin "openai", one `message.posted`
per input message, `reply.requested`), so audit, replay, export and limits cover API traffic too, and
the reply is generated (and kept) even if the client or this API replica goes away mid-stream.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import logging
import re
import time
from dataclasses import dataclass

import msgspec
from aiohttp import web

import bus
import schemas
from schemas.chat import (
    ChatCreated,
    MessagePosted,
    ReplyCancelled,
    ReplyCompleted,
    ReplyFailed,
    ReplyRequested,
)
from schemas.chat_state import context_ids, fold
from schemas.ids import is_valid_id, new_id
from schemas.openai import (
    ChatCompletion,
    ChatCompletionChunk,
    ChatCompletionRequest,
    Choice,
    ChunkChoice,
    Delta,
    ImagePart,
    InputMessage,
    OpenAIError,
    OpenAIErrorDetail,
    OutputMessage,
    TextPart,
    Usage,
)
from schemas.sampling import SamplingParams
from schemas.tokens import TokenDelta
from services.api.auth import principal_of
from services.api.errors import ApiError, json_response
from services.api.keys import BUS, CLOSING, MODEL_DEFAULTS, SETTINGS
from services.api.reply_watch import ReplyWatch
from services.api.routes_images import fetch_image, image_limit, store_image

log = logging.getLogger(__name__)
CHAT_ID_HEADER = "X-Chatbus-Chat-Id"
REPLY_ID_HEADER = "X-Chatbus-Reply-Id"
# How often a wait for the reply checks that the client is still there.
CLIENT_CHECK_SECONDS = 0.25
MAX_TITLE_CHARS = 80

_encoder = msgspec.json.Encoder()
_where = re.compile(r"at `\$\.?([^`]*)`")
_field = re.compile(r"field `([^`]+)`")
_data_url = re.compile(r"data:(image/[a-z0-9.+-]+)?(;[^,]*)?,", re.IGNORECASE)


def _bad(message: str, param: str | None = None, code: str = "invalid_request_error") -> ApiError:
    return ApiError(400, code, message, param=param)


async def _read_request(request: web.Request) -> ChatCompletionRequest:
    """Decode the body; a wrong field names itself in `param`, as OpenAI's errors do."""
    raw = await request.read()
    try:
        return msgspec.json.decode(raw, type=ChatCompletionRequest)
    except msgspec.ValidationError as exc:
        text = str(exc)
        where = _where.search(text)
        param = where.group(1) if where and where.group(1) else None
        named = _field.search(text)
        if named and ("unknown field" in text or "missing required field" in text):
            param = f"{param}.{named.group(1)}" if param else named.group(1)
            if "unknown field" in text:
                text = f"`{param}` is not supported by chatbus (or misspelt); leave it out"
        raise _bad(text, param) from None
    except msgspec.DecodeError as exc:
        raise _bad(f"the body is not valid JSON: {exc}") from None


def _check_supported(body: ChatCompletionRequest) -> None:
    """Refuse what chatbus does not do, rather than ignore it."""
    if body.n not in (None, 1):
        raise _bad("only n=1 is supported: ask again for more choices", "n")
    for name in ("frequency_penalty", "presence_penalty"):
        if getattr(body, name) not in (None, 0, 0.0):
            raise _bad(f"{name} is not supported (only 0)", name)
    if body.logprobs:
        raise _bad("logprobs are not supported", "logprobs")
    if not is_valid_id(body.model):
        raise ApiError(404, "model_not_found", f"The model `{body.model}` does not exist", param="model")


def sampling_of(body: ChatCompletionRequest, defaults: SamplingParams) -> SamplingParams:
    """The request's sampling: what it names, the model's defaults for the rest."""
    stop = [body.stop] if isinstance(body.stop, str) else list(body.stop or [])
    values = msgspec.structs.asdict(defaults)
    given = {
        "max_new_tokens": body.max_completion_tokens or body.max_tokens,
        "temperature": body.temperature,
        "top_p": body.top_p,
        "seed": None if body.seed is None else body.seed % 2**63,
        "ignore_eos": body.ignore_eos,
    }
    values.update({k: v for k, v in given.items() if v is not None})
    values["stop"] = [s for s in stop if s] if body.stop is not None else values["stop"]
    return SamplingParams(**values)


@dataclass
class Turn:
    """An input message as chatbus stores it: role, text and the images it carries (by hash)."""

    role: str
    content: str
    images: list[str]


async def _turns(request: web.Request, messages: list[InputMessage]) -> tuple[str, list[Turn]]:
    """The system prompt (the leading system/developer messages) and the other messages, images stored."""
    limit = request.app[SETTINGS].max_message_chars
    system: list[str] = []
    turns: list[Turn] = []
    for i, message in enumerate(messages):
        text, images = await _content(request, message, i)
        if len(text) > limit:
            raise _bad(f"messages[{i}] has {len(text)} characters; the limit is {limit}", f"messages[{i}]")
        role = "system" if message.role == "developer" else message.role
        if role == "system" and not turns:
            system.append(text)
        else:
            turns.append(Turn(role=role, content=text, images=images))
    if not turns:
        raise _bad("messages must hold at least one user or assistant message", "messages")
    return "\n\n".join(system), turns


async def _content(request: web.Request, message: InputMessage, i: int) -> tuple[str, list[str]]:
    """A message's text (parts joined by newlines) and its images, stored and named by hash."""
    if message.content is None or isinstance(message.content, str):
        return message.content or "", []
    texts, images = [], []
    for j, part in enumerate(message.content):
        match part:
            case TextPart():
                texts.append(part.text)
            case ImagePart():
                if message.role != "user":
                    raise _bad("only user messages may carry images", f"messages[{i}].content[{j}]")
                images.append(await _image(request, part.image_url.url, f"messages[{i}].content[{j}]"))
    return "\n".join(texts), list(dict.fromkeys(images))


async def _image(request: web.Request, url: str, param: str) -> str:
    """Store an image part (a data URL's bytes, or a URL fetched by the image store): its sha256."""
    try:
        if url[:5].lower() == "data:":
            header = _data_url.match(url)
            if header is None or (header.group(2) or "").lower() != ";base64":
                raise _bad("an image data URL must be data:image/<type>;base64,<bytes>", param)
            try:
                data = base64.b64decode(url[header.end() :], validate=True)
            except (binascii.Error, ValueError):
                raise _bad("the image data URL is not valid base64", param) from None
            if len(data) > image_limit(request):
                raise ApiError(
                    413, "too_large", f"the image is over {image_limit(request)} bytes", param=param
                )
            return (await store_image(request, data, (header.group(1) or "").lower())).sha256
        if url[:7].lower() == "http://" or url[:8].lower() == "https://":
            return (await fetch_image(request, url)).sha256
    except ApiError as exc:
        exc.param = exc.param or param
        raise
    raise _bad("an image URL must be a data: URL or an http(s) address", param)


def _events(
    user_id: str, body: ChatCompletionRequest, system: str, turns: list[Turn], params: SamplingParams
) -> tuple[ChatCreated, list[MessagePosted], ReplyRequested]:
    """The events of a completion: a chat of origin "openai", its messages in a line, the reply request."""
    now = schemas.now()
    chat_id = new_id("c")
    first_user = next((t.content for t in turns if t.role == "user" and t.content), "API completion")
    created = ChatCreated(
        event_id=new_id("e"),
        chat_id=chat_id,
        at=now,
        owner_id=user_id,
        title=" ".join(first_user.split())[:MAX_TITLE_CHARS] or "API completion",
        model=body.model,
        system_prompt=system,
        origin="openai",
        end_user=body.user or "",
    )
    posted: list[MessagePosted] = []
    parent: str | None = None
    for turn in turns:
        message = MessagePosted(
            event_id=new_id("e"),
            chat_id=chat_id,
            at=now,
            message_id=new_id("m"),
            author_id=user_id,
            role=turn.role,  # type: ignore[arg-type]
            content=turn.content,
            parent_id=parent,
            images=turn.images,
        )
        posted.append(message)
        parent = message.message_id
    reply = ReplyRequested(
        event_id=new_id("e"),
        chat_id=chat_id,
        at=now,
        reply_id=new_id("r"),
        message_id=posted[-1].message_id,
        model=body.model,
        params=params,
        context=context_ids(fold(chat_id, enumerate(posted, 1)), posted[-1].message_id),  # every message
        requested_by=user_id,
    )
    return created, posted, reply


async def chat_completions(request: web.Request) -> web.StreamResponse:
    """POST /v1/chat/completions: a completion streamed as SSE chunks, or one chat.completion."""
    principal = principal_of(request)
    body = await _read_request(request)
    _check_supported(body)
    js = request.app[BUS].js
    defaults = await request.app[MODEL_DEFAULTS].of(body.model)
    if defaults is None:
        raise ApiError(
            404,
            "model_not_found",
            f"The model `{body.model}` does not exist or no worker serves it now; see GET /v1/models",
            param="model",
        )
    params = sampling_of(body, defaults)
    system, turns = await _turns(request, body.messages)
    created, posted, reply = _events(principal.user_id, body, system, turns, params)
    watch = ReplyWatch(request.app[BUS], reply.chat_id, reply.reply_id)
    await watch.start()  # before the request is appended: nothing of the reply can be missed
    try:
        await bus.append_event(js, created, expected_subject_seq=0)
        await bus.append_events(js, [*posted, reply])
        completion = _Completion(request, watch, reply, int(time.time()))
        if body.stream:
            include_usage = bool(body.stream_options and body.stream_options.include_usage)
            return await completion.stream(include_usage)
        return await completion.whole()
    finally:
        await watch.stop()


class ClientGone(Exception):
    """The HTTP client closed its connection before the reply ended."""


class _Completion:
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
