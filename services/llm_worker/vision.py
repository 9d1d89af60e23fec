"""Vision-language engine: AutoProcessor + AutoModelForImageTextToText, streaming through generate().

transformers' continuous batching takes token ids only, so a vision model generates one request
at a time on its own thread with `model.generate`, streaming through a BaseStreamer; requests
wait their turn in order. The interface is the Engine protocol's, like the text engine's.
"""

from __future__ import annotations

import contextlib
import queue
import threading
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import torch
from transformers import AutoConfig, AutoModelForImageTextToText, AutoProcessor, StoppingCriteria
from transformers.generation.streamers import BaseStreamer
from transformers.models.auto.modeling_auto import MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING_NAMES

from services.llm_worker.engine import (
    ChatMessage,
    EngineConfig,
    EngineOutput,
    GenerationParams,
    OutputCallback,
    Prompt,
    PromptTooLong,
    load_model,
)


def is_vision_model(path: str) -> bool:
    """Whether the model at `path` is a vision-language model (a vision tower and an image-text class)."""
    config = AutoConfig.from_pretrained(path, local_files_only=True)
    return (
        hasattr(config, "vision_config") and config.model_type in MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING_NAMES
    )


def vision_conversation(
    messages: list[ChatMessage], images: Mapping[str, Any]
) -> tuple[list[dict[str, Any]], list[Any], list[str]]:
    """Messages in the multimodal chat format, the pictures in prompt order, and their hashes."""
    conversation: list[dict[str, Any]] = []
    pictures: list[Any] = []
    seen: list[str] = []
    for message in messages:
        parts: list[dict[str, Any]] = []
        for sha in message.get("images", ()):
            if sha in images:
                parts.append({"type": "image"})
                pictures.append(images[sha])
                seen.append(sha)
        if message["content"]:
            parts.append({"type": "text", "text": message["content"]})
        conversation.append({"role": message["role"], "content": parts or message["content"]})
    return conversation, pictures, seen


@dataclass
class _Job:
    request_id: str
    prompt: Prompt
    params: GenerationParams
    max_new_tokens: int
    on_output: OutputCallback
    sent: int = 0
    last_token: int | None = None


class _Stream(BaseStreamer):
    """Hands each new token of one generate() call to the engine (the first put is the prompt)."""

    def __init__(self, engine: VisionEngine, job: _Job) -> None:
        self.engine = engine
        self.job = job
        self.prompt_seen = False

    def put(self, value: torch.Tensor) -> None:
        if not self.prompt_seen:
            self.prompt_seen = True
            return
        self.engine._on_tokens(self.job, [int(t) for t in value.reshape(-1).tolist()])

    def end(self) -> None:
        return None


class _Gone(StoppingCriteria):
    """Stops generate() once the request was cancelled (or the engine stops)."""

    def __init__(self, engine: VisionEngine, request_id: str) -> None:
        self.engine = engine
        self.request_id = request_id

    def __call__(
        self, input_ids: torch.LongTensor, scores: torch.FloatTensor, **kwargs: Any
    ) -> torch.BoolTensor:
        gone = self.engine._stopping or not self.engine._is_active(self.request_id)
        return torch.full((input_ids.shape[0],), gone, dtype=torch.bool)  # type: ignore[return-value]


class VisionEngine:
    """Engine over a vision-language model; on_output runs on the engine's generation thread."""

    supports_images = True
    # Requests a worker should hold at once: one generating, one with its prompt ready behind it.
    max_active = 2

    def __init__(self, model: Any, processor: Any, config: EngineConfig | None = None) -> None:
        self.config = config or EngineConfig()
        self.model = model
        self.processor = processor
        self.tokenizer = processor.tokenizer
        eos = model.generation_config.eos_token_id
        if eos is None:
            eos = self.tokenizer.eos_token_id
        self.eos_ids = frozenset([eos] if isinstance(eos, int) else (eos or []))
        text_config = model.config.get_text_config()
        self.max_context = int(getattr(text_config, "max_position_embeddings", 0) or 1 << 30)
        self._jobs: dict[str, _Job] = {}
        self._lock = threading.RLock()
        self._queue: queue.Queue[_Job | None] = queue.Queue()
        self._thread: threading.Thread | None = None
        self._stopping = False

    @classmethod
    def from_pretrained(cls, path: str, config: EngineConfig | None = None) -> VisionEngine:
        """Load processor and model from a local directory (never from the hub)."""
        config = config or EngineConfig()
        model = load_model(AutoModelForImageTextToText, path, config)
        return cls(model, AutoProcessor.from_pretrained(path, local_files_only=True), config)

    def build_prompt(self, messages: list[ChatMessage], images: Mapping[str, Any] | None = None) -> Prompt:
        """Render messages and their images with the processor's chat template into model inputs."""
        conversation, pictures, seen = vision_conversation(messages, images or {})
        text = self.processor.apply_chat_template(conversation, add_generation_prompt=True, tokenize=False)
        inputs = self.processor(text=text, images=pictures or None, return_tensors="pt")
        # On the model's device, pixel values in its dtype (a no-op on a float32 CPU model).
        inputs = inputs.to(self.model.device, dtype=self.model.dtype)
        return Prompt(
            input_ids=[int(i) for i in inputs["input_ids"][0].tolist()],
            model_inputs=dict(inputs),
            images_seen=tuple(dict.fromkeys(seen)),
        )

    def decode(self, ids: list[int]) -> str:
        """Decode token ids to text, dropping special tokens."""
        return str(self.tokenizer.decode(ids, skip_special_tokens=True))

    def start(self) -> None:
        """Start the generation thread."""
        if self._thread is not None:
            return
        self._stopping = False
        self._queue = queue.Queue()  # no stop sentinel of an earlier run left behind
        self._thread = threading.Thread(target=self._run, name="vision-generate", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop the generation thread; unfinished requests end with finish_reason "error"."""
        thread, self._thread = self._thread, None
        if thread is None:
            return
        self._stopping = True
        self._queue.put(None)
        thread.join(timeout=30)
        with self._lock:
            leftovers = list(self._jobs)
        for request_id in leftovers:
            self._finish(request_id, "error", "engine stopped")

    def alive(self) -> bool:
        """Whether the generation thread runs (False before start, after stop, or once it died)."""
        thread = self._thread
        return thread is not None and thread.is_alive()

    def submit(
        self,
        request_id: str,
        prompt: Prompt,
        params: GenerationParams,
        on_output: OutputCallback,
        *,
        background: bool = False,
    ) -> None:
        """Queue a request; on_output gets token deltas, then exactly one finished output. It generates one
        reply at a time, in order: `background` (a batch line) changes nothing here."""
        if self._thread is None:
            raise RuntimeError("engine is not started")
        if not prompt.input_ids:
            raise ValueError("input_ids must not be empty")
        max_new = min(params.max_new_tokens, self.max_context - len(prompt.input_ids))
        if max_new < 1:
            raise PromptTooLong(
                f"prompt of {len(prompt.input_ids)} tokens leaves no room in a {self.max_context} context"
            )
        job = _Job(request_id, prompt, params, max_new, on_output)
        with self._lock:
            if request_id in self._jobs:
                raise ValueError(f"request {request_id!r} is already active")
            self._jobs[request_id] = job
        self._queue.put(job)

    def cancel(self, request_id: str) -> None:
        """Stop a request now: its final output (finish_reason "cancelled") is sent before this returns."""
        self._finish(request_id, "cancelled", None)

    def active(self) -> int:
        """Number of submitted requests that have not had their final output yet."""
        with self._lock:
            return len(self._jobs)

    def _is_active(self, request_id: str) -> bool:
        with self._lock:
            return request_id in self._jobs

    def _run(self) -> None:
        while True:
            job = self._queue.get()
            if job is None or self._stopping:
                return
            if not self._is_active(job.request_id):
                continue  # cancelled while it waited
            try:
                with torch.inference_mode(), self._seeded(job.params.seed):
                    self.model.generate(**job.prompt.model_inputs, **self._generate_kwargs(job))
            except Exception as exc:  # noqa: BLE001 - one bad request must not stop the engine
                self._finish(job.request_id, "error", f"{type(exc).__name__}: {exc}", job)
                continue
            if self._stopping:  # cut short by stop(): not a whole reply
                self._finish(job.request_id, "error", "engine stopped", job)
                return
            stopped = job.last_token is not None and job.last_token in self.eos_ids
            self._finish(job.request_id, "stop" if stopped else "length", None, job)

    @contextlib.contextmanager
    def _seeded(self, seed: int | None) -> Iterator[None]:
        """With a seed, generate() samples from the torch RNG seeded with it; its state is restored after."""
        if seed is None:
            yield
            return
        # generate() takes no generator: it samples from the global one, which nothing else in a vision worker
        # draws from while this runs (one request at a time).
        devices = [self.model.device] if self.model.device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices):
            torch.manual_seed(seed)
            yield

    def _generate_kwargs(self, job: _Job) -> dict[str, Any]:
        p = job.params
        kwargs: dict[str, Any] = {
            "max_new_tokens": job.max_new_tokens,
            "streamer": _Stream(self, job),
            "stopping_criteria": [_Gone(self, job.request_id)],
            "pad_token_id": self.tokenizer.pad_token_id,
        }
        if p.ignore_eos:
            kwargs["min_new_tokens"] = job.max_new_tokens
        if p.temperature <= 0.0:
            kwargs.update(do_sample=False, temperature=None, top_k=None, top_p=None)
        else:
            kwargs.update(do_sample=True, temperature=p.temperature, top_k=p.top_k or None, top_p=p.top_p)
        return kwargs

    def _on_tokens(self, job: _Job, tokens: list[int]) -> None:
        with self._lock:
            if self._jobs.get(job.request_id) is not job:
                return  # cancelled: nothing follows its final output
            job.last_token = tokens[-1] if tokens else job.last_token
            content = [t for t in tokens if t not in self.eos_ids]
            job.sent += len(tokens)
            if content:
                job.on_output(
                    EngineOutput(
                        job.request_id, content, False, None, None, len(job.prompt.input_ids), job.sent
                    )
                )

    def _finish(self, request_id: str, reason: str, error: str | None, only: _Job | None = None) -> None:
        """Send the request's final output, once; with `only`, just if that job is still the request's."""
        with self._lock:
            job = self._jobs.get(request_id)
            if job is None or (only is not None and job is not only):
                return
            del self._jobs[request_id]
            job.on_output(
                EngineOutput(request_id, [], True, reason, error, len(job.prompt.input_ids), job.sent)
            )
