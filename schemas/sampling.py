"""Sampling parameters shared by reply requests and the API."""

from __future__ import annotations

from typing import Annotated

import msgspec

MAX_NEW_TOKENS_LIMIT = 4096
MAX_STOP_SEQUENCES = 4
MAX_STOP_CHARS = 64
StopText = Annotated[str, msgspec.Meta(min_length=1, max_length=MAX_STOP_CHARS)]


class SamplingParams(msgspec.Struct, frozen=True, kw_only=True):
    """How a reply is sampled: carried in `reply.requested` and honoured by the worker.

    `temperature` 0 is greedy decoding. `stop`: the reply ends before the first of these texts (which is
    not part of it). `seed`: the same seed, prompt and parameters give the same text.
    """

    max_new_tokens: Annotated[int, msgspec.Meta(ge=1, le=MAX_NEW_TOKENS_LIMIT)] = 256
    temperature: Annotated[float, msgspec.Meta(ge=0.0, le=5.0)] = 0.7
    top_p: Annotated[float, msgspec.Meta(gt=0.0, le=1.0)] = 0.95
    top_k: Annotated[int, msgspec.Meta(ge=1, le=1000)] = 50
    ignore_eos: bool = False
    stop: Annotated[list[StopText], msgspec.Meta(max_length=MAX_STOP_SEQUENCES)] = []
    seed: Annotated[int, msgspec.Meta(ge=0, le=2**63 - 1)] | None = None
