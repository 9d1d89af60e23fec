"""The text engine: a small thread-safe Engine over transformers' continuous batching, with no NATS."""

from __future__ import annotations

import copy
import logging
import threading
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from typing import Any

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, GenerationConfig
from transformers.generation.continuous_batching.continuous_api import OutputRouter
from transformers.generation.continuous_batching.requests import GenerationOutput, RequestStatus

from services.llm_worker.engine import (
    ChatMessage,
    EngineConfig,
    EngineOutput,
    GenerationParams,
    OutputCallback,
    Prompt,
    PromptTooLong,
    load_model,
    text_messages,
)
from services.llm_worker.engine_choice import gpu_kv_blocks, kv_block_bytes
from services.llm_worker.priority import PRIORITY_SCHEDULER, PriorityScheduler
from services.llm_worker.sampling import (
    SEED_KWARG,
    enable_seeded_sampling,
    use_fast_sampling,
    use_fast_warpers,
)

log = logging.getLogger(__name__)


def kv_block_bytes_of(model: Any, page_size: int) -> int:
    """Bytes of one KV-cache block of `model` (its layers, KV heads, head size and dtype)."""
    text = model.config.get_text_config()
    heads = int(getattr(text, "num_key_value_heads", None) or text.num_attention_heads)
    head_dim = int(getattr(text, "head_dim", None) or text.hidden_size // text.num_attention_heads)
    return kv_block_bytes(int(text.num_hidden_layers), heads, head_dim, page_size, model.dtype.itemsize)


def sampling_generation_config(base: GenerationConfig | None, defaults: GenerationParams) -> GenerationConfig:
    """Return a sampling GenerationConfig whose warpers exist, so per-request temperature/top-k/top-p work."""
    config = copy.deepcopy(base) if base is not None else GenerationConfig()
    # Per-request processors are only created when the base value is "active": temperature != 1.0, top_k set,
    # top_p < 1.0. Requests override these values through logit_processor_kwargs.
    config.do_sample = True
    config.temperature = defaults.temperature if defaults.temperature not in (0.0, 1.0) else 0.7
    config.top_k = defaults.top_k if defaults.top_k > 0 else 50
    config.top_p = defaults.top_p if defaults.top_p < 1.0 else 0.95
    config.max_new_tokens = defaults.max_new_tokens
    return config


def sampling_kwargs(params: GenerationParams, vocab_size: int) -> dict[str, Any]:
    """Map GenerationParams to the per-request logits processor kwargs of the manager."""
    seed = {} if params.seed is None else {SEED_KWARG: int(params.seed)}
    if params.temperature <= 0.0:  # greedy: the warpers divide by temperature, so use top_k=1 instead
        return {"temperature": 1.0, "top_k": 1, "top_p": 1.0, **seed}
    top_k = params.top_k if 0 < params.top_k <= vocab_size else vocab_size
    warpers = {"temperature": float(params.temperature), "top_k": int(top_k), "top_p": float(params.top_p)}
    return {**warpers, **seed}


class _CallbackRouter(OutputRouter):
    """Output router that hands every manager output straight to a callback on the generation thread."""

    def __init__(self, callback: Callable[[GenerationOutput], None]) -> None:
        super().__init__()
        self._callback = callback

    def deliver(self, output: GenerationOutput) -> None:
        self._callback(output)

    def deliver_batch(self, outputs: list[GenerationOutput]) -> None:
        for output in outputs:
            self._callback(output)


@dataclass
class _Request:
    on_output: OutputCallback
    prompt_tokens: int
    eos_ids: frozenset[int]
    sent: int = 0


class ContinuousBatchingEngine:
    """Engine over transformers' ContinuousBatchingManager; on_output runs on the generation thread."""

    supports_images = False

    def __init__(self, model: Any, tokenizer: Any, config: EngineConfig | None = None) -> None:
        self.config = config or EngineConfig()
        self.tokenizer = tokenizer
        self.model = model
        defaults = GenerationParams()
        self.generation_config = sampling_generation_config(model.generation_config, defaults)
        eos = self.generation_config.eos_token_id
        if eos is None:
            eos = tokenizer.eos_token_id
        self.eos_ids = frozenset([eos] if isinstance(eos, int) else (eos or []))
        text_config = model.config.get_text_config()
        self.vocab_size = int(text_config.vocab_size)
        self.max_context = int(getattr(text_config, "max_position_embeddings", 0) or 1 << 30)
        self._stopping = False
        self._requests: dict[str, _Request] = {}
        # Requests submitted as background work (batch lines): the scheduler serves people first.
        self._background: set[str] = set()
        # Re-entrant so that on_output may call cancel()/submit(); held while calling on_output so that a
        # request's outputs are strictly ordered and nothing follows its final output.
        self._lock = threading.RLock()
        self._manager: Any = None
        self.steps_on_threads: Counter[int] = Counter()  # generation steps run on each torch thread count

    @classmethod
    def from_pretrained(cls, path: str, config: EngineConfig | None = None) -> ContinuousBatchingEngine:
        """Load tokenizer and model from a local directory (never from the hub)."""
        config = config or EngineConfig()
        model = load_model(AutoModelForCausalLM, path, config)
        if config.num_blocks is None and model.device.type == "cuda":
            free, _total = torch.cuda.mem_get_info(model.device)
            config = replace(
                config, num_blocks=gpu_kv_blocks(free, kv_block_bytes_of(model, config.page_size))
            )
            log.info(
                "KV cache: %d blocks of %d tokens in %.1f GiB free",
                config.num_blocks,
                config.page_size,
                free / 2**30,
            )
        return cls(model, AutoTokenizer.from_pretrained(path, local_files_only=True), config)

    def build_prompt(self, messages: list[ChatMessage], images: Mapping[str, Any] | None = None) -> Prompt:
        """Render messages with the chat template (plus the assistant header); a text model sees no images."""
        ids = self.tokenizer.apply_chat_template(
            text_messages(messages), add_generation_prompt=True, tokenize=True, return_dict=False
        )
        return Prompt(input_ids=[int(i) for i in ids])

    def decode(self, ids: list[int]) -> str:
        """Decode token ids to text, dropping special tokens."""
        return self.tokenizer.decode(ids, skip_special_tokens=True)

    def start(self) -> None:
        """Create the manager and start its generation thread."""
        if self._manager is not None:
            return
        self._stopping = False
        cb_config = self.config.to_cb_config()
        if self.config.priority:
            cb_config.scheduler_type = PRIORITY_SCHEDULER
        manager = self.model.init_continuous_batching(
            generation_config=self.generation_config, continuous_batching_config=cb_config
        )
        _share_background(manager, self._background)
        use_fast_warpers(manager.logit_processor)
        enable_seeded_sampling(manager.logit_processor)
        # The batch processor picks the router up in start(), so outputs reach us on the generation thread
        # without the manager's asyncio handler or its shared queue (which would need one more thread hop).
        manager.output_router = _CallbackRouter(self._on_generation_output)
        _tune_steps(manager, self.config, self.steps_on_threads)
        manager.start()
        self._manager = manager

    def stop(self) -> None:
        """Stop the generation thread; unfinished requests end with finish_reason "error"."""
        manager, self._manager = self._manager, None
        if manager is None:
            return
        self._stopping = True
        manager.stop(block=True, hard_stop=True)
        manager.destroy()
        with self._lock:
            leftovers = list(self._requests)
        for request_id in leftovers:
            self._finish(request_id, [], "error", "engine stopped", None)

    def alive(self) -> bool:
        """Whether the generation thread runs (False before start, after stop, or once it died)."""
        manager = self._manager
        if manager is None or not manager.is_running():
            return False
        status = manager.background_thread_status  # a dying thread fails its requests before it ends
        return status.fatal_error is None and status.local_status == status.DONT_STOP

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
        request (a batch line) gives way to foreground ones in the scheduler (priority.py)."""
        input_ids = prompt.input_ids
        if self._manager is None:
            raise RuntimeError("engine is not started")
        if not input_ids:
            raise ValueError("input_ids must not be empty")
        max_new = min(params.max_new_tokens, self.max_context - len(input_ids))
        if max_new < 1:
            raise PromptTooLong(
                f"prompt of {len(input_ids)} tokens leaves no room in a {self.max_context} context"
            )
        eos_ids = frozenset() if params.ignore_eos else self.eos_ids
        with self._lock:
            if request_id in self._requests:
                raise ValueError(f"request {request_id!r} is already active")
            self._requests[request_id] = _Request(on_output, len(input_ids), eos_ids)
            if background:
                self._background.add(request_id)
        try:
            accepted = self._manager.add_request(
                input_ids=list(input_ids),
                request_id=request_id,
                max_new_tokens=max_new,
                streaming=True,
                eos_token_id=-1 if params.ignore_eos else sorted(self.eos_ids),
                **sampling_kwargs(params, self.vocab_size),
            )
        except BaseException:
            with self._lock:
                self._requests.pop(request_id, None)
                self._background.discard(request_id)
            raise
        if accepted is None:
            self._finish(request_id, [], "error", "engine is not accepting requests", None)

    def cancel(self, request_id: str) -> None:
        """Stop a request now: its final output (finish_reason "cancelled") is sent before this returns."""
        with self._lock:
            if request_id not in self._requests:
                return
            self._finish(request_id, [], "cancelled", None, None)
        if self._manager is not None:
            self._manager.cancel_request(request_id)

    def active(self) -> int:
        """Number of submitted requests that have not had their final output yet."""
        with self._lock:
            return len(self._requests)

    def _on_generation_output(self, output: GenerationOutput) -> None:
        with self._lock:
            request = self._requests.get(output.request_id)
            if request is None:  # cancelled, or a late output after stop()
                return
            tokens = output.generated_tokens
            delta = tokens[request.sent :]
            if output.status == RequestStatus.FAILED:
                error = "engine stopped" if self._stopping else output.error or "generation failed"
                self._finish(output.request_id, delta, "error", error, len(tokens))
            elif output.is_finished():
                stopped = bool(tokens) and tokens[-1] in request.eos_ids
                if stopped:
                    delta = delta[:-1]  # the stop token is not content
                self._finish(output.request_id, delta, "stop" if stopped else "length", None, len(tokens))
            elif delta:
                request.sent = len(tokens)
                request.on_output(
                    EngineOutput(
                        output.request_id, delta, False, None, None, request.prompt_tokens, len(tokens)
                    )
                )

    def _finish(
        self, request_id: str, delta: list[int], reason: str, error: str | None, completion: int | None
    ) -> None:
        with self._lock:
            request = self._requests.pop(request_id, None)
            self._background.discard(request_id)
            if request is None:
                return
            count = request.sent + len(delta) if completion is None else completion
            request.on_output(
                EngineOutput(request_id, delta, True, reason, error, request.prompt_tokens, count)
            )


def _share_background(manager: Any, background: set[str]) -> None:
    """Hand the engine's background request ids to the priority scheduler the manager builds (on its
    generation thread, before the first step)."""
    create = manager._create_batch_processor

    def create_with_background() -> Any:
        processor = create()
        if isinstance(processor.scheduler, PriorityScheduler):
            processor.scheduler.background = background
        return processor

    manager._create_batch_processor = create_with_background


def _tune_steps(manager: Any, config: EngineConfig, counts: Counter[int]) -> None:
    """Before each generation step of `manager`: pick its thread count by its size (see EngineConfig), and
    on the first one give the step's sampler the fast CPU path (the model runner exists only by then).

    torch's thread count belongs to the thread that sets it once set there, so it is set on the generation
    thread, just before the step, and only when it changes.
    """
    step = manager._generation_step
    switch = bool(config.small_step_threads) and config.num_threads != config.small_step_threads
    large = config.num_threads or torch.get_num_threads()
    state = {"threads": 0, "sampler": False}

    def tuned_step() -> None:
        processor = manager.batch_processor
        if not state["sampler"]:
            use_fast_sampling(processor.model_runner)
            state["sampler"] = True
        if switch:
            size = getattr(processor.inputs_and_outputs, "num_q_tokens", config.small_step_tokens)
            wanted = config.small_step_threads if size < config.small_step_tokens else large
            if wanted != state["threads"]:
                torch.set_num_threads(wanted)
                state["threads"] = wanted
        counts[torch.get_num_threads()] += 1
        step()

    manager._generation_step = tuned_step
