"""An OpenAI chat completion request in chatbus's terms: read and checked, its sampling, its messages
(images stored, named by hash), and the events that request the reply."""

from __future__ import annotations

import base64
import binascii
import re
from dataclasses import dataclass
from typing import TypeVar

import msgspec
from aiohttp import web

import schemas
from schemas.chat import ChatCreated, MessagePosted, ReplyRequested
from schemas.chat_state import context_ids, fold
from schemas.ids import is_valid_id, new_id
from schemas.openai import ChatCompletionRequest, ImagePart, InputMessage, TextPart
from schemas.sampling import SamplingParams
from services.api.errors import ApiError
from services.api.inputs import require_json
from services.api.keys import SETTINGS
from services.api.routes_images import fetch_image, image_limit, store_image

MAX_TITLE_CHARS = 80
T = TypeVar("T")


_where = re.compile(r"at `\$\.?([^`]*)`")


_field = re.compile(r"field `([^`]+)`")


_data_url = re.compile(r"data:(image/[a-z0-9.+-]+)?(;[^,]*)?,", re.IGNORECASE)


def _bad(message: str, param: str | None = None, code: str = "invalid_request_error") -> ApiError:
    return ApiError(400, code, message, param=param)


async def read_request(request: web.Request) -> ChatCompletionRequest:
    """Decode the body; a wrong field names itself in `param`, as OpenAI's errors do."""
    require_json(request)
    return decode_naming_field(await request.read(), ChatCompletionRequest)


def decode_naming_field(raw: bytes, kind: type[T], code: str = "invalid_request_error") -> T:
    """Decode a JSON body into `kind`; a wrong field is a 400 whose `param` names it (`messages[0].role`)."""
    try:
        return msgspec.json.decode(raw, type=kind)
    except msgspec.ValidationError as exc:
        text = str(exc)
        where = _where.search(text)
        param = where.group(1) if where and where.group(1) else None
        named = _field.search(text)
        if named and ("unknown field" in text or "missing required field" in text):
            param = f"{param}.{named.group(1)}" if param else named.group(1)
            if "unknown field" in text:
                text = f"`{param}` is not supported by chatbus (or misspelt); leave it out"
        raise _bad(text, param, code) from None
    except msgspec.DecodeError as exc:
        raise _bad(f"the body is not valid JSON: {exc}", None, code) from None


def check_supported(body: ChatCompletionRequest) -> None:
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


async def read_turns(request: web.Request, messages: list[InputMessage]) -> tuple[str, list[Turn]]:
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


def completion_events(
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
