"""llama.cpp through llama-cpp-python's low-level (ctypes) API: a GGUF model with one context, a batch
buffer, per-request sampler chains, and text to token ids and back.

The context, batch and samplers are used from one thread only (the engine's decode loop); tokenizing and
detokenizing read only the vocabulary, which llama.cpp allows from any thread. ctypes releases the GIL
while llama_decode runs, so the worker's event loop keeps going during a step.
"""

from __future__ import annotations

import ctypes
import logging
from dataclasses import dataclass
from typing import Any

import llama_cpp
import numpy as np


class LlamaError(RuntimeError):
    """llama.cpp refused: the file does not load, a context cannot be made, or a decode failed."""


@dataclass(frozen=True)
class ContextSize:
    """How big the llama.cpp context is: `sequences` replies of `sequence_tokens` each, in steps of at
    most `batch_tokens`, on `threads` (one token per sequence) and `batch_threads` (prompts).
    `flash_attention`: llama.cpp's fused attention kernel."""

    sequences: int
    sequence_tokens: int
    batch_tokens: int
    threads: int
    batch_threads: int
    flash_attention: bool = True


def _quiet() -> None:
    """llama.cpp's own log goes to stderr through llama-cpp-python's logger: errors only, unless the
    application set that logger's level itself."""
    logger = logging.getLogger("llama-cpp-python")
    if logger.level == logging.NOTSET:
        logger.setLevel(logging.ERROR)


class LlamaModel:
    """One GGUF model loaded into one llama.cpp context with a KV stream per sequence."""

    def __init__(self, path: str, size: ContextSize) -> None:
        _quiet()
        llama_cpp.llama_backend_init()
        self.size = size
        model_params = llama_cpp.llama_model_default_params()
        self._model = llama_cpp.llama_model_load_from_file(path.encode(), model_params)
        if not self._model:
            raise LlamaError(f"llama.cpp cannot load {path}")
        self._vocab = llama_cpp.llama_model_get_vocab(self._model)
        self.n_vocab = int(llama_cpp.llama_vocab_n_tokens(self._vocab))
        self.train_context = int(llama_cpp.llama_model_n_ctx_train(self._model))
        params = llama_cpp.llama_context_default_params()
        per_sequence = min(size.sequence_tokens, self.train_context or size.sequence_tokens)
        params.n_ctx = size.sequences * per_sequence
        params.n_batch = params.n_ubatch = size.batch_tokens
        params.n_seq_max = size.sequences
        params.n_threads, params.n_threads_batch = size.threads, size.batch_threads
        # A KV stream of sequence_tokens per sequence: they never crowd each other. One buffer for all
        # (kv_unified) was slower with 16 replies at once (bench/llama_engine.py, README).
        params.kv_unified = False
        params.no_perf = True
        params.flash_attn_type = (
            llama_cpp.LLAMA_FLASH_ATTN_TYPE_ENABLED
            if size.flash_attention
            else llama_cpp.LLAMA_FLASH_ATTN_TYPE_DISABLED
        )
        self._ctx = llama_cpp.llama_init_from_model(self._model, params)
        if not self._ctx:
            llama_cpp.llama_model_free(self._model)
            raise LlamaError(f"llama.cpp cannot make a context of {params.n_ctx} tokens for {path}")
        self._memory = llama_cpp.llama_get_memory(self._ctx)
        # The most tokens (prompt and reply) one sequence holds: llama.cpp may round the context up.
        self.sequence_tokens = min(llama_cpp.llama_n_ctx(self._ctx) // size.sequences, per_sequence)
        n = size.batch_tokens
        self._batch = llama_cpp.llama_batch_init(n, 0, 1)
        self._tokens = np.ctypeslib.as_array(self._batch.token, shape=(n,))
        self._positions = np.ctypeslib.as_array(self._batch.pos, shape=(n,))
        self._seq_counts = np.ctypeslib.as_array(self._batch.n_seq_id, shape=(n,))
        self._logits = np.ctypeslib.as_array(self._batch.logits, shape=(n,))
        self._seq_ids = [self._batch.seq_id[i] for i in range(n)]
        self.batch_used = 0
        self.eog_ids = frozenset(
            t for t in range(self.n_vocab) if llama_cpp.llama_vocab_is_eog(self._vocab, t)
        )

    def close(self) -> None:
        """Free the batch, the context and the model (once)."""
        if self._ctx:
            llama_cpp.llama_batch_free(self._batch)
            llama_cpp.llama_free(self._ctx)
            llama_cpp.llama_model_free(self._model)
            self._ctx = self._model = None

    # The decode loop's side: fill a batch, decode it, sample, forget a finished sequence.

    def add(self, seq_id: int, tokens: list[int], position: int, logits: bool) -> int:
        """Append a sequence's tokens (from `position` on) to the batch; returns the batch row of the last
        one, whose logits are kept when `logits`."""
        start, end = self.batch_used, self.batch_used + len(tokens)
        self._tokens[start:end] = tokens
        self._positions[start:end] = np.arange(position, position + len(tokens))
        self._seq_counts[start:end] = 1
        self._logits[start:end] = 0
        self._logits[end - 1] = logits
        for row in range(start, end):
            self._seq_ids[row][0] = seq_id
        self.batch_used = end
        return end - 1

    def decode(self) -> None:
        """Run the batch through the model (and empty it); llama.cpp's code is in the error."""
        self._batch.n_tokens, self.batch_used = self.batch_used, 0
        code = llama_cpp.llama_decode(self._ctx, self._batch)
        if code != 0:
            raise LlamaError(f"llama_decode returned {code}")

    def sampler(self, temperature: float, top_k: int, top_p: float, seed: int | None) -> Any:
        """A sampler chain of one request: greedy when temperature <= 0, else top-k, top-p, temperature
        and a draw from its own generator, seeded by `seed` (None: a random seed)."""
        chain = llama_cpp.llama_sampler_chain_init(llama_cpp.llama_sampler_chain_default_params())
        steps = []
        if temperature <= 0.0:
            steps.append(llama_cpp.llama_sampler_init_greedy())
        else:
            if top_k > 0:
                steps.append(llama_cpp.llama_sampler_init_top_k(top_k))
            if top_p < 1.0:
                steps.append(llama_cpp.llama_sampler_init_top_p(top_p, 1))
            steps.append(llama_cpp.llama_sampler_init_temp(temperature))
            # LLAMA_DEFAULT_SEED (0xFFFFFFFF) asks llama.cpp for a random seed: a given seed never maps to it.
            draw_seed = llama_cpp.LLAMA_DEFAULT_SEED if seed is None else seed % llama_cpp.LLAMA_DEFAULT_SEED
            steps.append(llama_cpp.llama_sampler_init_dist(draw_seed))
        for step in steps:
            llama_cpp.llama_sampler_chain_add(chain, step)  # the chain owns (and frees) its steps
        return chain

    def sample(self, sampler: Any, row: int) -> int:
        """The next token of the sequence whose logits are at batch `row` of the last decode."""
        return int(llama_cpp.llama_sampler_sample(sampler, self._ctx, row))

    @staticmethod
    def free_sampler(sampler: Any) -> None:
        llama_cpp.llama_sampler_free(sampler)

    def forget(self, seq_id: int) -> None:
        """Drop a sequence's KV cells, so that its slot starts empty for the next request."""
        llama_cpp.llama_memory_seq_rm(self._memory, seq_id, -1, -1)

    # Text: any thread.

    def tokenize(self, text: str, add_special: bool) -> list[int]:
        """Token ids of `text`; special tokens written in it (`<|im_start|>`) are parsed as such."""
        data = text.encode()
        capacity = len(data) + 8
        while True:
            buffer = (llama_cpp.llama_token * capacity)()
            count = llama_cpp.llama_tokenize(
                self._vocab, data, len(data), buffer, capacity, add_special, True
            )
            if count >= 0:
                return list(buffer[:count])
            capacity = -count

    def detokenize(self, ids: list[int], skip_special: bool) -> str:
        """The text of token ids; an incomplete UTF-8 sequence at the end becomes U+FFFD."""
        if not ids:
            return ""
        tokens = (llama_cpp.llama_token * len(ids))(*ids)
        capacity = 8 * len(ids) + 16
        while True:
            buffer = ctypes.create_string_buffer(capacity)
            count = llama_cpp.llama_detokenize(
                self._vocab, tokens, len(ids), buffer, capacity, False, not skip_special
            )
            if count >= 0:
                return buffer.raw[:count].decode("utf-8", errors="replace")
            capacity = -count

    def piece(self, token: int) -> str:
        """The text of one token, special tokens included (`<|im_end|>`)."""
        return self.detokenize([token], skip_special=False)

    def chat_template(self) -> str | None:
        """The GGUF file's `tokenizer.chat_template`, if it has one."""
        template = llama_cpp.llama_model_chat_template(self._model, None)
        return template.decode() if template else None

    def special_token(self, which: str) -> int | None:
        """The id of the vocabulary's "bos" or "eos" token, None when it has none."""
        token = int(getattr(llama_cpp, f"llama_vocab_{which}")(self._vocab))
        return None if token == llama_cpp.LLAMA_TOKEN_NULL else token

    def adds_bos(self) -> bool:
        """Whether the vocabulary wants a BOS token before a text."""
        return bool(llama_cpp.llama_vocab_get_add_bos(self._vocab))
