"""OpenAI-compatible request and response bodies (`/v1/chat/completions`, `/v1/models`).

They follow OpenAI's API reference, so the official SDKs and the tools built on them (n8n, LangChain,
Open WebUI as a client) work unchanged. Requests refuse fields chatbus does not honour, so nothing a
client asks for is silently ignored.
"""

from __future__ import annotations

from typing import Annotated, Literal

import msgspec

from schemas.sampling import MAX_NEW_TOKENS_LIMIT, MAX_STOP_CHARS, MAX_STOP_SEQUENCES

MAX_MESSAGES = 1_000


class ImageUrl(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """An image by URL: `data:image/...;base64,...` or a public http(s) address the server fetches."""

    url: Annotated[str, msgspec.Meta(min_length=1)]
    detail: Literal["auto", "low", "high"] | None = None


class TextPart(
    msgspec.Struct, frozen=True, kw_only=True, tag_field="type", tag="text", forbid_unknown_fields=True
):
    """A text part of a message's content."""

    text: str


class ImagePart(
    msgspec.Struct, frozen=True, kw_only=True, tag_field="type", tag="image_url", forbid_unknown_fields=True
):
    """An image part of a message's content."""

    image_url: ImageUrl


ContentPart = TextPart | ImagePart


class InputMessage(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """One message of the conversation the client sends; `developer` is OpenAI's newer name for `system`."""

    role: Literal["system", "developer", "user", "assistant"]
    content: str | list[ContentPart] | None = None
    name: Annotated[str, msgspec.Meta(max_length=64)] | None = None


class StreamOptions(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """`stream_options`: with `include_usage`, a last chunk carries the token counts."""

    include_usage: bool = False


Stop = Annotated[str, msgspec.Meta(max_length=MAX_STOP_CHARS)]
MaxTokens = Annotated[int, msgspec.Meta(ge=1, le=MAX_NEW_TOKENS_LIMIT)]


class ChatCompletionRequest(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """POST /v1/chat/completions. `n` must be 1; penalties must be 0 (not implemented)."""

    model: Annotated[str, msgspec.Meta(min_length=1, max_length=128)]
    messages: Annotated[list[InputMessage], msgspec.Meta(min_length=1, max_length=MAX_MESSAGES)]
    stream: bool | None = False
    stream_options: StreamOptions | None = None
    max_tokens: MaxTokens | None = None
    max_completion_tokens: MaxTokens | None = None
    temperature: Annotated[float, msgspec.Meta(ge=0.0, le=2.0)] | None = None
    top_p: Annotated[float, msgspec.Meta(gt=0.0, le=1.0)] | None = None
    stop: Stop | Annotated[list[Stop], msgspec.Meta(max_length=MAX_STOP_SEQUENCES)] | None = None
    seed: int | None = None
    n: int | None = None
    user: Annotated[str, msgspec.Meta(max_length=256)] | None = None
    frequency_penalty: float | None = None
    presence_penalty: float | None = None
    logprobs: bool | None = None
    # Not OpenAI's, but vLLM's and llama.cpp's extension: generate max_tokens whatever the model says.
    ignore_eos: bool | None = None


class Usage(msgspec.Struct, frozen=True, kw_only=True):
    """Token counts of one completion."""

    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


class OutputMessage(msgspec.Struct, frozen=True, kw_only=True):
    """The assistant's message in a non-streamed completion."""

    role: str = "assistant"
    content: str


class Choice(msgspec.Struct, frozen=True, kw_only=True):
    """The one choice of a completion (`n` = 1)."""

    index: int = 0
    message: OutputMessage
    finish_reason: str
    logprobs: None = None


class ChatCompletion(msgspec.Struct, frozen=True, kw_only=True):
    """A whole (non-streamed) completion: `object` is `chat.completion`."""

    id: str
    object: str = "chat.completion"
    created: int
    model: str
    choices: list[Choice]
    usage: Usage
    system_fingerprint: str | None = None


class Delta(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """What a chunk adds: the role in the first chunk, then text."""

    role: str | None = None
    content: str | None = None


class ChunkChoice(msgspec.Struct, frozen=True, kw_only=True):
    """The choice of a streamed chunk; `finish_reason` is set in the last one."""

    index: int = 0
    delta: Delta
    finish_reason: str | None = None
    logprobs: None = None


class ChatCompletionChunk(msgspec.Struct, frozen=True, kw_only=True):
    """One server-sent event of a streamed completion: `object` is `chat.completion.chunk`."""

    id: str
    object: str = "chat.completion.chunk"
    created: int
    model: str
    choices: list[ChunkChoice]
    usage: Usage | None = None
    system_fingerprint: str | None = None


class OpenAIErrorDetail(msgspec.Struct, frozen=True, kw_only=True):
    """What went wrong, in OpenAI's words: `type` (e.g. invalid_request_error), `param`, `code`."""

    message: str
    type: str
    param: str | None = None
    code: str | None = None


class OpenAIError(msgspec.Struct, frozen=True, kw_only=True):
    """Every error answer of the OpenAI-compatible routes."""

    error: OpenAIErrorDetail
