"""How a reply's tokens are handed from the engine's thread to the worker: a person's reply streams its
first token at once and then small chunks; a batch line's reply goes in one large chunk."""

from __future__ import annotations

from services.llm_worker.coalesce import BATCH_CHUNK_TOKENS, Chunk, reply_coalescer
from services.llm_worker.engine import EngineOutput
from services.llm_worker.settings import WorkerSettings

SETTINGS = WorkerSettings(model="unused", alias="demo")


def run(batch: bool, tokens: int) -> list[Chunk]:
    chunks: list[Chunk] = []
    coalescer = reply_coalescer(SETTINGS, batch, chunks.append, lambda: 1)
    for n in range(1, tokens + 1):
        last = n == tokens
        coalescer.on_output(EngineOutput("r", [n], last, "length" if last else None, None, 5, n))
    return chunks


def test_a_persons_reply_streams_its_first_token_at_once_then_chunks() -> None:
    chunks = run(batch=False, tokens=16)
    assert chunks[0].token_ids == [1]  # the first token alone: time to first token
    assert len(chunks) >= 3
    assert all(len(c.token_ids) <= SETTINGS.coalesce_tokens for c in chunks)
    assert [t for c in chunks for t in c.token_ids] == list(range(1, 17))
    assert chunks[-1].last.finished


def test_a_batch_line_goes_in_one_chunk_with_its_end() -> None:
    chunks = run(batch=True, tokens=16)
    assert [c.token_ids for c in chunks] == [list(range(1, 17))]
    assert chunks[0].last.finished


def test_a_long_batch_line_goes_in_large_chunks() -> None:
    chunks = run(batch=True, tokens=3 * BATCH_CHUNK_TOKENS)
    assert [len(c.token_ids) for c in chunks] == [BATCH_CHUNK_TOKENS] * 3
    assert [t for c in chunks for t in c.token_ids] == list(range(1, 3 * BATCH_CHUNK_TOKENS + 1))
