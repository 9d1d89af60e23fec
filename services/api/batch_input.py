"""A batch's input read and checked line by line, before anything is stored (docs/batches.md).

Each JSONL line's `body` is read by the parser of POST /v1/chat/completions (services/api/openai_request.py:
the same fields, caps and wording); a plain-text input is one user prompt a line. Every line is checked
(its envelope, its body, its model: served now, its sampling within the model's cap) and the first lines
at fault are named in one 400; only a wholly good input becomes the checked plan.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

import msgspec
from aiohttp import web

from schemas.api_batches import InvalidBatch, InvalidBatchDetail
from schemas.batch_lines import (
    MAX_LISTED_ERRORS,
    LineError,
    PlanLine,
    PlanTurn,
    numbered_lines,
    plain_custom_id,
    read_envelope,
)
from schemas.openai import ChatCompletionRequest, ImagePart, InputMessage
from schemas.presence import WorkerPresence
from services.api.errors import ApiError, json_response
from services.api.keys import BUS, SETTINGS
from services.api.openai_request import check_supported, decode_naming_field, read_turns, sampling_of
from services.api.presence import Served, live_workers, served_from

JSONL_TYPES = frozenset({"application/jsonl", "application/x-ndjson", "text/jsonl"})
PLAIN_TYPES = frozenset({"text/plain"})
MAX_BATCH_MODELS = 16  # distinct models one batch may name (each resolved once, from one presence read)
NO_RETRY = {"x-should-retry": "false"}  # the openai SDKs retry a 409 unless told not to


class BatchRefused(Exception):
    """The input has bad lines: answered with `InvalidBatch` (400, or 409 for models nobody serves)."""

    def __init__(self, status: int, code: str, message: str, lines: list[LineError]) -> None:
        super().__init__(message)
        self.status, self.code, self.message, self.lines = status, code, message, lines

    def response(self) -> web.Response:
        """The JSON answer naming the lines at fault."""
        detail = InvalidBatchDetail(
            code=self.code, message=self.message, lines=self.lines[:MAX_LISTED_ERRORS]
        )
        headers = NO_RETRY if self.status == 409 else None
        return json_response(InvalidBatch(error=detail), status=self.status, headers=headers)


async def read_limited(request: web.Request) -> bytes:
    """The raw body, at most CHATBUS_BATCH_MAX_BYTES (413 past it; the API's own body cap does not apply)."""
    limit = request.app[SETTINGS].batch_max_bytes
    if request.content_length is not None and request.content_length > limit:
        raise _too_large(limit)
    chunks, size = [], 0
    seconds = request.app[SETTINGS].upload_seconds
    try:
        async with asyncio.timeout(seconds):
            async for chunk in request.content.iter_chunked(1 << 16):
                size += len(chunk)
                if size > limit:
                    raise _too_large(limit)
                chunks.append(chunk)
    except TimeoutError:
        raise ApiError(408, "timeout", f"the body did not arrive within {seconds:g} s") from None
    return b"".join(chunks)


def _too_large(limit: int) -> ApiError:
    return ApiError(
        413, "too_large", f"a batch input may hold at most {limit} bytes (CHATBUS_BATCH_MAX_BYTES)"
    )


@dataclass
class Checked:
    """Lines checked so far, and the faults found."""

    plan: list[PlanLine] = field(default_factory=list)
    errors: list[LineError] = field(default_factory=list)
    unserved: list[LineError] = field(default_factory=list)
    seen: set[str] = field(default_factory=set)
    workers: list[WorkerPresence] | None = None  # one presence read for the whole batch
    served: dict[str, Served | None] = field(default_factory=dict)  # each model named, resolved once


async def check_input(request: web.Request, raw: bytes, plain: bool, model: str) -> list[PlanLine]:
    """Every line of an input checked and resolved into the batch's plan; BatchRefused names bad lines."""
    lines = numbered_lines(raw)
    limit = request.app[SETTINGS].batch_max_lines
    if not lines:
        raise BatchRefused(400, "invalid_batch", "the input holds no line", [])
    if len(lines) > limit:
        raise BatchRefused(
            400,
            "invalid_batch",
            f"{len(lines)} lines; a batch may hold at most {limit} (CHATBUS_BATCH_MAX_LINES)",
            [LineError(line=lines[limit][0], message="past the last line a batch may hold")],
        )
    checked = Checked()
    for index, (number, text) in enumerate(lines):
        try:
            content = text.decode("utf-8")
        except UnicodeDecodeError as exc:
            checked.errors.append(
                LineError(line=number, message=f"not UTF-8 text: {exc.reason} at byte {exc.start}")
            )
            continue
        if plain:
            body = ChatCompletionRequest(model=model, messages=[InputMessage(role="user", content=content)])
            await _check_line(request, checked, index, number, plain_custom_id(number), body)
            continue
        envelope = read_envelope(number, text)
        if isinstance(envelope, LineError):
            checked.errors.append(envelope)
            continue
        if envelope.custom_id in checked.seen:
            checked.errors.append(_fault(number, envelope.custom_id, "custom_id", "used by an earlier line"))
            continue
        checked.seen.add(envelope.custom_id)
        try:
            body = decode_naming_field(_with_model(envelope.body, model), ChatCompletionRequest)
        except ApiError as exc:
            checked.errors.append(_fault(number, envelope.custom_id, _body_param(exc.param), exc.message))
            continue
        await _check_line(request, checked, index, number, envelope.custom_id, body)
    if checked.errors:
        raise BatchRefused(
            400, "invalid_batch", f"{_count(checked.errors)} at fault; nothing was stored", checked.errors
        )
    if checked.unserved:
        raise BatchRefused(
            409,
            "model_unavailable",
            f"{_count(checked.unserved)} name a model no worker serves now (GET /v1/models); nothing stored",
            checked.unserved,
        )
    return checked.plan


async def _check_line(
    request: web.Request,
    checked: Checked,
    index: int,
    number: int,
    custom_id: str,
    body: ChatCompletionRequest,
) -> None:
    """Check one line's request as POST /v1/chat/completions would, and add it to the plan."""
    try:
        if body.stream:
            raise ApiError(400, "invalid_request_error", "stream: true is not for batches", param="stream")
        check_supported(body)
        for i, message in enumerate(body.messages):
            if isinstance(message.content, list) and any(isinstance(p, ImagePart) for p in message.content):
                raise ApiError(
                    400, "invalid_request_error", "images are not taken in batches", param=f"messages[{i}]"
                )
        served = await _served(request, checked, body.model)
        if served is None:
            checked.unserved.append(
                _fault(number, custom_id, "model", f"no worker serves {body.model!r} now")
            )
            return
        params = sampling_of(body, served.defaults)
        refused = served.refuses(params)
        if refused is not None:
            param = "max_completion_tokens" if body.max_completion_tokens else "max_tokens"
            raise ApiError(400, "invalid_value", f"{param} is too large: {refused}", param=param)
        system, turns = await read_turns(request, body.messages)
    except ApiError as exc:
        checked.errors.append(_fault(number, custom_id, _body_param(exc.param), exc.message))
        return
    checked.plan.append(
        PlanLine(
            index=index,
            custom_id=custom_id,
            model=body.model,
            params=params,
            system_prompt=system,
            turns=[PlanTurn(role=t.role, content=t.content) for t in turns],
        )
    )


async def _served(request: web.Request, checked: Checked, alias: str) -> Served | None:
    """How `alias` is served now, from one presence read per batch (each model resolved once; a batch
    naming more than MAX_BATCH_MODELS models is refused: each would be a KV scan otherwise)."""
    if alias in checked.served:
        return checked.served[alias]
    if len(checked.served) >= MAX_BATCH_MODELS:
        raise ApiError(
            400, "invalid_value", f"a batch may name at most {MAX_BATCH_MODELS} models", param="model"
        )
    if checked.workers is None:
        checked.workers = await live_workers(request.app[BUS].js)
    checked.served[alias] = served = served_from(checked.workers, alias)
    return served


def _with_model(body: msgspec.Raw, model: str) -> bytes:
    """The line's body, with the batch's model where it names none (its own JSON kept otherwise)."""
    raw = bytes(body)
    if not model:
        return raw
    try:
        value = msgspec.json.decode(raw)
    except msgspec.DecodeError:
        return raw  # the body parser says what is wrong with it
    if isinstance(value, dict) and "model" not in value:
        value["model"] = model
        return msgspec.json.encode(value)
    return raw


def _fault(number: int, custom_id: str, param: str | None, message: str) -> LineError:
    return LineError(line=number, custom_id=custom_id, param=param, message=message)


def _body_param(param: str | None) -> str | None:
    return f"body.{param}" if param else "body"


def _count(errors: list[LineError]) -> str:
    shown = ", ".join(str(e.line) for e in errors[:MAX_LISTED_ERRORS])
    return f"{len(errors)} line{'s' if len(errors) > 1 else ''} ({shown})"
