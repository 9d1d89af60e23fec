"""Token ids to a reply's text: incremental decoding, cut before the first stop text."""

from __future__ import annotations

from typing import Any

from services.llm_worker.stops import StopMatcher


class IncrementalDecoder:
    """Turns streamed token id deltas into text deltas, holding back incomplete UTF-8 sequences."""

    def __init__(self, tokenizer: Any, skip_special_tokens: bool = True) -> None:
        self.tokenizer = tokenizer
        self.skip_special_tokens = skip_special_tokens
        self._ids: list[int] = []
        self._prefix_offset = 0  # start of the window decoded for context
        self._read_offset = 0  # ids before this index have been emitted as text

    def push(self, new_ids: list[int]) -> str:
        """Add token ids and return the text they complete (possibly empty)."""
        self._ids.extend(new_ids)
        prefix = self._decode(self._ids[self._prefix_offset : self._read_offset])
        full = self._decode(self._ids[self._prefix_offset :])
        if len(full) > len(prefix) and not full.endswith("\ufffd"):
            self._prefix_offset = self._read_offset
            self._read_offset = len(self._ids)
            return full[len(prefix) :]
        return ""

    def flush(self) -> str:
        """Return whatever text is still held back (at the end of a reply)."""
        prefix = self._decode(self._ids[self._prefix_offset : self._read_offset])
        full = self._decode(self._ids[self._prefix_offset :])
        self._prefix_offset = self._read_offset = len(self._ids)
        return full[len(prefix) :]

    def _decode(self, ids: list[int]) -> str:
        return self.tokenizer.decode(ids, skip_special_tokens=self.skip_special_tokens)


class ReplyText:
    """A reply's token chunks as text to stream, cut before the first stop text.

    Without stop texts a chunk is decoded at once. With them it is decoded token by token, so that
    `push` can say how many tokens the reply used: up to and including the token whose text completed
    the stop text (the `completion_tokens` of a reply that ended on one; what followed is discarded).
    """

    def __init__(self, tokenizer: Any, stops: tuple[str, ...]) -> None:
        self.decoder = IncrementalDecoder(tokenizer)
        self.matcher = StopMatcher(stops) if stops else None

    @property
    def stopped(self) -> bool:
        """A stop text was reached: the reply is over."""
        return self.matcher is not None and self.matcher.stopped

    def push(self, token_ids: list[int], finished: bool) -> tuple[str, int]:
        """Text that may be sent now, and how many of token_ids the reply used; `finished` releases all."""
        if self.matcher is None:
            text = self.decoder.push(token_ids) if token_ids else ""
            return text + (self.decoder.flush() if finished else ""), len(token_ids)
        parts: list[str] = []
        for used, token in enumerate(token_ids, 1):
            parts.append(self.matcher.push(self.decoder.push([token])))
            if self.matcher.stopped:
                return "".join(parts), used
        if finished:
            parts.append(self.matcher.push(self.decoder.flush()))
            parts.append(self.matcher.flush())
        return "".join(parts), len(token_ids)
