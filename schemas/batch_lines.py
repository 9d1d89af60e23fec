"""A batch's input, line by line: OpenAI's batch line envelope (`{custom_id, method, url, body}`) or a
plain prompt a line, read into checked `PlanLine`s (what the object store `batch_inputs` keeps).

Only the envelope is read here; a line's `body` is a chat completion request, read by the same parser as
POST /v1/chat/completions (services/api/openai_request.py).
"""

from __future__ import annotations

from typing import Annotated

import msgspec

from schemas.sampling import SamplingParams

MAX_CUSTOM_ID_CHARS = 256
MAX_LISTED_ERRORS = 20  # a refused batch names at most this many lines
CHAT_COMPLETIONS_URL = "/v1/chat/completions"


class LineError(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """One line at fault: its number (1-based, in the input), its custom_id, the field and what is wrong."""

    line: int
    message: str
    custom_id: str | None = None
    param: str | None = None


class LineEnvelope(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """A JSONL input line: the request `body` and the caller's name for it."""

    custom_id: Annotated[str, msgspec.Meta(min_length=1, max_length=MAX_CUSTOM_ID_CHARS)]
    method: str | None = None  # "POST", if given
    url: str | None = None  # "/v1/chat/completions", if given
    body: msgspec.Raw


class PlanTurn(msgspec.Struct, frozen=True, kw_only=True, array_like=True):
    """A message of a line's conversation."""

    role: str
    content: str


class PlanLine(msgspec.Struct, frozen=True, kw_only=True):
    """A checked line: what its job asks (model resolved, sampling clamped); `index` is 0-based."""

    index: int
    custom_id: str
    model: str
    params: SamplingParams
    system_prompt: str = ""
    turns: list[PlanTurn]


def numbered_lines(raw: bytes) -> list[tuple[int, bytes]]:
    """The non-blank lines of an input with their 1-based line numbers."""
    return [(i, line) for i, line in enumerate(raw.split(b"\n"), 1) if line.strip()]


def looks_like_jsonl(raw: bytes) -> bool:
    """Whether an input is JSONL (its first non-blank line is a JSON object) rather than plain prompts."""
    lines = numbered_lines(raw[:65536])
    return bool(lines) and lines[0][1].lstrip().startswith(b"{")


_envelope = msgspec.json.Decoder(LineEnvelope)


def read_envelope(number: int, line: bytes) -> LineEnvelope | LineError:
    """A JSONL line's envelope, or what is wrong with it (not JSON, no custom_id, another method or url)."""
    try:
        envelope = _envelope.decode(line)
    except msgspec.ValidationError as exc:
        custom_id = _custom_id(line)
        return LineError(line=number, custom_id=custom_id, message=str(exc))
    except msgspec.DecodeError as exc:
        return LineError(line=number, message=f"not a JSON object: {exc}")
    if envelope.method is not None and envelope.method != "POST":
        return _wrong(number, envelope, "method", "must be POST")
    if envelope.url is not None and envelope.url != CHAT_COMPLETIONS_URL:
        return _wrong(number, envelope, "url", f"must be {CHAT_COMPLETIONS_URL}")
    return envelope


def _wrong(number: int, envelope: LineEnvelope, param: str, message: str) -> LineError:
    return LineError(line=number, custom_id=envelope.custom_id, param=param, message=f"{param} {message}")


def _custom_id(line: bytes) -> str | None:
    """The line's custom_id if it has a readable one (to name the line in an error)."""
    try:
        value = msgspec.json.decode(line)
    except msgspec.DecodeError:
        return None
    custom_id = value.get("custom_id") if isinstance(value, dict) else None
    return custom_id[:MAX_CUSTOM_ID_CHARS] if isinstance(custom_id, str) else None


def plain_custom_id(number: int) -> str:
    """The custom_id of a plain-text line: `line-<n>`, its 1-based line number in the input."""
    return f"line-{number}"


_plan_encoder = msgspec.json.Encoder()
_plan_decoder = msgspec.json.Decoder(PlanLine)


def encode_plan(lines: list[PlanLine]) -> bytes:
    """A batch's checked lines as JSONL (one PlanLine a line)."""
    return b"\n".join(_plan_encoder.encode(line) for line in lines)


def decode_plan(data: bytes) -> list[PlanLine]:
    """A batch's checked lines from their JSONL."""
    return [_plan_decoder.decode(line) for line in data.split(b"\n") if line]
