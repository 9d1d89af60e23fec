"""Worker settings: which model, under which alias, how many replies at once."""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass, field

import msgspec

from schemas.ids import new_id
from schemas.sampling import SamplingParams
from services.llm_worker.model_config import DEFAULT_ALIAS, ModelEntry

ENV_VARS: tuple[tuple[str, str], ...] = (
    (
        "CHATBUS_MODELS_CONFIG",
        "The model config (TOML, one `[models.<alias>]` table each) that `chatbus up` and `chatbus worker` "
        "read (default: `<data dir>/models.toml` if it exists, else SmolLM2-135M-Instruct and the demo "
        "vision model).",
    ),
    (
        "CHATBUS_MODEL_CACHE",
        "Where GGUF files are converted to (once, by sha256) and demo models built (default "
        "`<data dir>/models`).",
    ),
    (
        "CHATBUS_WORKER_MODEL",
        "What the worker loads: a model directory, a .gguf file or a built-in name; overrides the config's "
        "`source` (default: the config's, else `smollm2-135m-instruct`).",
    ),
    (
        "CHATBUS_WORKER_ALIAS",
        "Model alias the worker serves; clients ask for this name (default `smollm2-135m`).",
    ),
    ("CHATBUS_WORKER_CAPACITY", "Replies generated at once by one worker (continuous batching), default 16."),
    (
        "CHATBUS_WORKER_ACK_WAIT",
        "Seconds without a heartbeat before a reply goes to another worker, default 30.",
    ),
    (
        "CHATBUS_WORKER_THREADS",
        "torch CPU threads of the worker's big steps (prompts, many replies at once); default 0 = all cores.",
    ),
    (
        "CHATBUS_WORKER_SMALL_STEP_THREADS",
        "torch CPU threads of a step of fewer than 8 tokens (decoding a few replies); default 1, "
        "0 = the same as CHATBUS_WORKER_THREADS.",
    ),
    ("CHATBUS_WORKER_KV_BLOCKS", "KV-cache blocks of the engine (default 256: 16 replies of ~500 tokens)."),
    ("CHATBUS_WORKER_KV_PAGE_SIZE", "Tokens per KV-cache block (default 32)."),
    ("CHATBUS_WORKER_MAX_BATCH_TOKENS", "Tokens one engine step may process (default 512)."),
    ("CHATBUS_WORKER_DEVICE", "Device of the worker's model: auto, cpu, cuda, cuda:N or mps (default auto)."),
    (
        "CHATBUS_WORKER_DTYPE",
        "Weights' dtype: auto (float32 on a CPU, bfloat16 or float16 on a GPU), float32, bfloat16, float16.",
    ),
    (
        "CHATBUS_WORKER_MAX_IMAGES",
        "Images a vision model sees per reply: the chat's newest (default 4); the rest are noted as ignored.",
    ),
)


@dataclass
class WorkerSettings:
    """What one worker process serves and how."""

    model: str
    alias: str = DEFAULT_ALIAS
    capacity: int = 16
    ack_wait: float = 30.0
    max_deliver: int = 5
    heartbeat_every: float = 5.0
    # A token delta is published when this many tokens or this many seconds have gathered.
    coalesce_tokens: int = 8
    coalesce_seconds: float = 0.08
    threads: int = 0
    small_step_threads: int = 1
    kv_blocks: int = 256
    kv_page_size: int = 32
    max_batch_tokens: int = 512
    max_images: int = 4
    device: str = "auto"
    dtype: str = "auto"
    images: bool | None = None  # the config says the model must (True) or must not (False) see images
    model_cache: str = ""  # where GGUF conversions and demo models live ("": `<data dir>/models`)
    # Sampling a request gets when it names none (the model config's `[models.X.sampling]`).
    defaults: SamplingParams = field(default_factory=SamplingParams)
    worker_id: str = field(default_factory=lambda: new_id("w"))
    host: str = field(default_factory=socket.gethostname)

    @classmethod
    def from_env(cls, entry: ModelEntry | None = None, **overrides: object) -> WorkerSettings:
        """Settings from a model config entry, then CHATBUS_WORKER_* variables, then explicit overrides
        (None means unset)."""
        values: dict[str, object] = {"model": "smollm2-135m-instruct"}
        if entry is not None:
            engine = {k: v for k, v in msgspec.structs.asdict(entry.engine).items() if v is not None}
            values.update(model=entry.source, images=entry.images, defaults=entry.sampling.params(), **engine)
        for name, (variable, kind) in _ENV.items():
            raw = os.environ.get(variable)
            if raw:
                values[name] = kind(raw)
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)  # type: ignore[arg-type]


# Each setting an environment variable overrides, and how its text is read.
_ENV: dict[str, tuple[str, type]] = {
    "model": ("CHATBUS_WORKER_MODEL", str),
    "alias": ("CHATBUS_WORKER_ALIAS", str),
    "capacity": ("CHATBUS_WORKER_CAPACITY", int),
    "ack_wait": ("CHATBUS_WORKER_ACK_WAIT", float),
    "threads": ("CHATBUS_WORKER_THREADS", int),
    "small_step_threads": ("CHATBUS_WORKER_SMALL_STEP_THREADS", int),
    "kv_blocks": ("CHATBUS_WORKER_KV_BLOCKS", int),
    "kv_page_size": ("CHATBUS_WORKER_KV_PAGE_SIZE", int),
    "max_batch_tokens": ("CHATBUS_WORKER_MAX_BATCH_TOKENS", int),
    "max_images": ("CHATBUS_WORKER_MAX_IMAGES", int),
    "device": ("CHATBUS_WORKER_DEVICE", str),
    "dtype": ("CHATBUS_WORKER_DTYPE", str),
    "model_cache": ("CHATBUS_MODEL_CACHE", str),
}
