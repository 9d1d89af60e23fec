"""Live token deltas of a reply, on `tokens.<chat_id>.<reply_id>` in stream TOKENS (age-limited)."""

from __future__ import annotations

import msgspec


class TokenDelta(msgspec.Struct, frozen=True, kw_only=True, tag_field="type", tag="tokens.delta"):
    """A few newly generated tokens of one attempt at a reply. Subject `tokens.<chat_id>.<reply_id>`.

    `index` counts deltas within the attempt from 0; a client seeing a higher `attempt`
    discards the text of earlier attempts.
    """

    chat_id: str
    reply_id: str
    attempt: int
    index: int
    text: str
    n_tokens: int


TokenEventUnion = TokenDelta
