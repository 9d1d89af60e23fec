"""The llama.cpp engine: many replies in one decode loop over a GGUF model, the way llama.cpp's own server
runs its parallel slots (install it with `make llama`, the optional extra `llama`).

One thread runs the loop. Each reply holds a slot: a llama.cpp sequence id with a KV stream of its own
(`slot_context` tokens). Each step is one llama_batch with the next token of every decoding reply and then
chunks of new prompts, up to `batch_tokens`; one llama_decode computes all of it, and each reply samples
its token from its row with a sampler chain of its own (so a seed gives the same reply whatever shares
the step). A finished reply's KV cells are dropped and its slot taken by the next waiting request.
While a foreground request's prompt is being computed, background replies (batch lines) sit the step out,
as priority.py does for the transformers engine.
"""

from __future__ import annotations

import logging
import os
import threading
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from services.llm_worker.engine import (
    ChatMessage,
    EngineConfig,
    EngineOutput,
    GenerationParams,
    OutputCallback,
    Prompt,
    PromptTooLong,
    text_messages,
)
from services.llm_worker.llama_native import ContextSize, LlamaModel
from services.llm_worker.llama_text import LlamaTokenizer

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class LlamaConfig:
    """Sizing of the llama.cpp engine."""

    # Replies decoded at once, each in its own KV stream of slot_context tokens (prompt and reply). The KV
    # cache is allocated whole at start: SmolLM2-135M takes 23 KB a token (f16), 16 x 2048 tokens 750 MB.
    slots: int = 16
    slot_context: int = 2048  # capped by the model's training context
    batch_tokens: int = 512  # the most tokens one llama_decode takes; longer prompts go in chunks
    threads: int = 0  # llama.cpp threads of a step decoding replies; 0 = all cores
    batch_threads: int | None = None  # threads of a step holding a prompt; None = threads
    priority: bool = True  # a foreground prompt gets steps without background replies
    # "file": the GGUF's tensors as they are; "bfloat16", "float16", "float32": a copy with its quantised
    # tensors widened, made once in the model cache (gguf_float16.py says why: the built-in SmolLM2's Q4_1
    # answers wrongly in llama.cpp). With quantised weights a seed gives the same reply whatever shares its
    # steps; with dense ones only alone or in the same company (their kernels round differently by batch).
    weights: Literal["file", "bfloat16", "float16", "float32"] = "file"
    # llama.cpp's fused attention kernel: with bfloat16 weights, 2 cores, 16 replies at once 1.3x the
    # tokens/s without it, and no slower for one reply (README, "The llama.cpp engine").
    flash_attention: bool = True

    @classmethod
    def from_engine_config(cls, config: EngineConfig, slots: int | None = None) -> LlamaConfig:
        """The llama.cpp sizing matching the transformers engine's settings (threads, batch tokens)."""
        return cls(
            slots=slots or cls.slots,
            batch_tokens=config.max_batch_tokens or cls.batch_tokens,
            threads=config.num_threads or 0,
            priority=config.priority,
        )

    def context_size(self) -> ContextSize:
        if not 1 <= self.slots <= self.batch_tokens:
            raise ValueError(f"slots must be 1..batch_tokens ({self.batch_tokens}), not {self.slots}")
        threads = self.threads or os.cpu_count() or 1
        return ContextSize(
            self.slots,
            self.slot_context,
            self.batch_tokens,
            threads,
            self.batch_threads or threads,
            self.flash_attention,
        )


@dataclass(eq=False)
class _Reply:
    """One request, from submit to its final output; the loop thread alone moves its decoding state."""

    request_id: str
    prompt: list[int]
    params: GenerationParams
    max_new: int
    eos_ids: frozenset[int]
    on_output: OutputCallback
    background: bool
    slot: int = -1  # its llama.cpp sequence id while it holds a slot
    sampler: Any = None
    cached: int = 0  # tokens of it in the KV cache: the position of the next one fed
    next_token: int | None = None  # sampled, not yet fed
    generated: int = 0
    feeding: int = 0  # tokens of it in this step's batch
    row: int = -1  # the batch row of its logits in this step (-1: none)
    done: bool = False  # its final output was sent

    @property
    def prefilling(self) -> bool:
        return self.cached < len(self.prompt)


class LlamaCppEngine:
    """Engine over llama.cpp (Engine protocol); on_output runs on the decode loop's thread."""

    supports_images = False

    def __init__(self, model: LlamaModel, config: LlamaConfig) -> None:
        self.model = model
        self.config = config
        self.tokenizer = LlamaTokenizer(model)
        self.eos_ids = model.eog_ids
        self.max_context = model.sequence_tokens
        # Re-entrant: on_output may call cancel() or submit(); held while calling on_output so that a
        # request's outputs are strictly ordered and nothing follows its final output.
        self._lock = threading.RLock()
        self._wake = threading.Condition(self._lock)
        self._replies: dict[str, _Reply] = {}  # submitted, final output not sent
        self._waiting: deque[_Reply] = deque()  # submitted, no slot yet
        self._slots: list[_Reply | None] = [None] * config.slots  # the loop thread's
        self._thread: threading.Thread | None = None
        self._stopping = False
        self._closed = False
        self.error: str | None = None  # why the loop died
        self.steps = 0  # llama_decode calls
        self.foreground_steps = 0  # steps that left background replies out for a foreground prompt

    @classmethod
    def from_gguf(
        cls,
        path: str | os.PathLike[str],
        config: LlamaConfig | EngineConfig | None = None,
        *,
        slots: int | None = None,
        cache_dir: str | os.PathLike[str] | None = None,
    ) -> LlamaCppEngine:
        """Load a GGUF file; an EngineConfig (the transformers engine's settings) is mapped to a LlamaConfig,
        with `slots` replies at once (the worker's capacity). `cache_dir` (the model cache) holds the
        float16 copy when config.weights is "float16"."""
        if isinstance(config, EngineConfig):
            config = LlamaConfig.from_engine_config(config, slots)
        elif config is None:
            config = LlamaConfig(slots=slots or LlamaConfig.slots)
        if config.weights != "file":
            if cache_dir is None:
                raise ValueError(
                    f"weights = {config.weights!r} needs a cache_dir for the {config.weights} copy"
                )
            from services.llm_worker.gguf_float16 import dense_gguf  # pulls in gguf's writer: only when used

            path = dense_gguf(path, cache_dir, config.weights)
        size = config.context_size()
        log.info(
            "llama.cpp: %s, %d slots of %d tokens, %d/%d threads",
            path,
            size.sequences,
            size.sequence_tokens,
            size.threads,
            size.batch_threads,
        )
        return cls(LlamaModel(str(Path(path)), size), config)

    def build_prompt(self, messages: list[ChatMessage], images: Mapping[str, Any] | None = None) -> Prompt:
        """Render messages with the GGUF file's chat template (plus the assistant header)."""
        text = self.tokenizer.apply_chat_template(text_messages(messages), add_generation_prompt=True)
        return Prompt(input_ids=self.tokenizer.encode(text, add_special_tokens=False))

    def decode(self, ids: list[int]) -> str:
        """Decode token ids to text, dropping special tokens."""
        return self.tokenizer.decode(ids, skip_special_tokens=True)

    def start(self) -> None:
        """Start the decode loop's thread."""
        if self._closed:
            raise RuntimeError("engine was stopped: load a new one")
        if self._thread is not None:
            return
        self._thread = threading.Thread(target=self._run, name="llama-decode", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop the loop and free the model; unfinished requests end with finish_reason "error"."""
        thread = self._thread
        with self._lock:
            self._stopping = True
            self._wake.notify_all()
        if thread is not None:
            thread.join()
        with self._lock:
            for reply in list(self._replies.values()):
                self._finish(reply, [], "error", "engine stopped")
        if not self._closed:
            self._closed = True
            self.model.close()

    def alive(self) -> bool:
        """Whether the decode loop runs (False before start, after stop, or once it died)."""
        thread = self._thread
        return thread is not None and thread.is_alive() and not self._stopping and self.error is None

    def submit(
        self,
        request_id: str,
        prompt: Prompt,
        params: GenerationParams,
        on_output: OutputCallback,
        *,
        background: bool = False,
    ) -> None:
        """Queue a request; on_output gets token deltas, then exactly one finished output. A background
        request (a batch line) waits for a slot behind foreground ones and pauses for their prompts."""
        if not self.alive():
            raise RuntimeError(
                "engine is not started" if self.error is None else f"engine died: {self.error}"
            )
        input_ids = [int(i) for i in prompt.input_ids]
        if not input_ids:
            raise ValueError("input_ids must not be empty")
        max_new = min(params.max_new_tokens, self.max_context - len(input_ids))
        if max_new < 1:
            raise PromptTooLong(
                f"prompt of {len(input_ids)} tokens leaves no room in a {self.max_context} context"
            )
        eos_ids = frozenset() if params.ignore_eos else self.eos_ids
        reply = _Reply(request_id, input_ids, params, max_new, eos_ids, on_output, background)
        with self._lock:
            if request_id in self._replies:
                raise ValueError(f"request {request_id!r} is already active")
            self._replies[request_id] = reply
            self._waiting.append(reply)
            self._wake.notify_all()

    def cancel(self, request_id: str) -> None:
        """Stop a request now: its final output (finish_reason "cancelled") is sent before this returns."""
        with self._lock:
            reply = self._replies.get(request_id)
            if reply is None:
                return
            if reply.slot < 0:
                self._waiting.remove(reply)
            self._finish(reply, [], "cancelled", None)
            self._wake.notify_all()  # the loop frees its slot

    def active(self) -> int:
        """Number of submitted requests that have not had their final output yet."""
        with self._lock:
            return len(self._replies)

    # The decode loop (its own thread).

    def _run(self) -> None:
        try:
            while self._next_step():
                pass
        except Exception as exc:  # a failed decode: every request ends, and alive() says so
            log.exception("llama.cpp decode loop failed")
            with self._lock:
                self.error = str(exc) or type(exc).__name__
                for reply in list(self._replies.values()):
                    self._finish(reply, [], "error", f"llama.cpp: {self.error}")
        finally:
            for slot, held in enumerate(self._slots):
                if held is not None:
                    self._release(slot, held)

    def _next_step(self) -> bool:
        """Run one step; False once stopping."""
        with self._lock:
            while True:
                self._release_finished()
                self._admit()
                if self._stopping:
                    return False
                if any(self._slots):
                    break
                self._wake.wait()
        planned = self._plan()
        self.model.decode()
        self.steps += 1
        sampled = self._sample(planned)
        with self._lock:
            self._deliver(sampled)
        return True

    def _release_finished(self) -> None:
        for slot, reply in enumerate(self._slots):
            if reply is not None and reply.done:
                self._release(slot, reply)

    def _release(self, slot: int, reply: _Reply) -> None:
        self.model.forget(slot)
        if reply.sampler is not None:
            self.model.free_sampler(reply.sampler)
            reply.sampler = None
        self._slots[slot] = None

    def _admit(self) -> None:
        """Waiting requests into free slots: foreground ones first, each kind in order of arrival."""
        free = [slot for slot, reply in enumerate(self._slots) if reply is None]
        if not free or not self._waiting:
            return
        order = sorted(self._waiting, key=lambda r: r.background) if self.config.priority else self._waiting
        for reply in list(order)[: len(free)]:
            self._waiting.remove(reply)
            reply.slot = slot = free.pop(0)
            params = reply.params
            reply.sampler = self.model.sampler(params.temperature, params.top_k, params.top_p, params.seed)
            self._slots[slot] = reply

    def _plan(self) -> list[_Reply]:
        """Fill the batch: the next token of every decoding reply, then prompt chunks, up to batch_tokens."""
        running = [r for r in self._slots if r is not None and not r.done]
        hold_background = self.config.priority and any(r.prefilling and not r.background for r in running)
        if hold_background and any(r.background for r in running):
            self.foreground_steps += 1
        budget = self.config.batch_tokens
        planned: list[_Reply] = []
        for reply in running:
            if reply.prefilling or (hold_background and reply.background) or reply.next_token is None:
                continue
            reply.row = self.model.add(reply.slot, [reply.next_token], reply.cached, True)
            reply.feeding = 1
            budget -= 1
            planned.append(reply)
        for reply in running:
            if budget <= 0:
                break
            if not reply.prefilling or (hold_background and reply.background):
                continue
            chunk = reply.prompt[reply.cached : reply.cached + budget]
            last = reply.cached + len(chunk) == len(reply.prompt)
            row = self.model.add(reply.slot, chunk, reply.cached, last)
            reply.row = row if last else -1
            reply.feeding = len(chunk)
            budget -= len(chunk)
            planned.append(reply)
        return planned

    def _sample(self, planned: list[_Reply]) -> list[tuple[_Reply, int]]:
        """Each planned reply's next token, where the step computed its logits."""
        sampled = []
        for reply in planned:
            reply.cached += reply.feeding
            reply.feeding = 0
            if reply.row >= 0 and not reply.done:
                sampled.append((reply, self.model.sample(reply.sampler, reply.row)))
            reply.row = -1
        return sampled

    def _deliver(self, sampled: list[tuple[_Reply, int]]) -> None:
        for reply, token in sampled:
            if reply.done:  # cancelled during the step
                continue
            if token in reply.eos_ids:
                self._finish(reply, [], "stop", None)
                continue
            reply.generated += 1
            if reply.generated >= reply.max_new:
                self._finish(reply, [token], "length", None)
                continue
            reply.next_token = token
            reply.on_output(
                EngineOutput(reply.request_id, [token], False, None, None, len(reply.prompt), reply.generated)
            )

    def _finish(self, reply: _Reply, delta: list[int], reason: str, error: str | None) -> None:
        """Send a reply's final output (once); the loop frees its slot before its next step."""
        with self._lock:
            if reply.done:
                return
            reply.done = True
            self._replies.pop(reply.request_id, None)
            reply.on_output(
                EngineOutput(reply.request_id, delta, True, reason, error, len(reply.prompt), reply.generated)
            )
