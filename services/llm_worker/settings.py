"""Worker settings: which model, under which alias, how many replies at once."""

from __future__ import annotations

import socket
from typing import Annotated

import msgspec

from schemas.ids import new_id
from schemas.sampling import MAX_NEW_TOKENS_LIMIT, SamplingParams
from schemas.settings_env import env, env_vars, load
from services.llm_worker.engine_choice import EngineChoice
from services.llm_worker.model_config import (
    DEFAULT_ALIAS,
    DEFAULT_SOURCE,
    Device,
    Dtype,
    EngineName,
    ModelEntry,
    Positive,
    Quantization,
    Threads,
)


class WorkerSettings(msgspec.Struct, frozen=True, kw_only=True):
    """What one worker process serves and how; see ENV_VARS."""

    model: Annotated[
        str,
        env(
            "CHATBUS_WORKER_MODEL",
            "What the worker loads: a model directory, a .gguf file or a built-in name; overrides the "
            "config's `source` (default: the config's, else `smollm2-135m-instruct`).",
            min_length=1,
        ),
    ]
    alias: Annotated[
        str,
        env(
            "CHATBUS_WORKER_ALIAS",
            "Model alias the worker serves; clients ask for this name (default `smollm2-135m`).",
        ),
    ] = DEFAULT_ALIAS
    capacity: Annotated[
        Positive,
        env(
            "CHATBUS_WORKER_CAPACITY",
            "Replies generated at once by one worker (continuous batching), default 16.",
        ),
    ] = 16
    batch_reserve: Annotated[
        int,
        env(
            "CHATBUS_BATCH_RESERVE",
            "Slots of each worker kept for people: batch lines run only while fewer than capacity minus "
            "this are busy (default 1; 0 lets a batch take every slot; a worker of capacity 1 still runs "
            "batch lines when idle).",
            ge=0,
        ),
    ] = 1
    batch_busy_slots: Annotated[
        int,
        env(
            "CHATBUS_BATCH_BUSY_SLOTS",
            "Batch lines a worker runs at once while people are chatting (a person asked within "
            "CHATBUS_BATCH_YIELD_SECONDS): fewer lines make the step a person's first token waits for "
            "shorter (default 0 = half the capacity).",
            ge=0,
        ),
    ] = 0
    batch_yield_seconds: Annotated[
        float,
        env(
            "CHATBUS_BATCH_YIELD_SECONDS",
            "How long after a person's request the batch lane stays at CHATBUS_BATCH_BUSY_SLOTS before it "
            "widens to every slot but the reserve again (default 10; 0: never narrows).",
            ge=0,
        ),
    ] = 10.0
    ack_wait: Annotated[
        float,
        env(
            "CHATBUS_WORKER_ACK_WAIT",
            "Seconds without a heartbeat before a reply goes to another worker, default 30.",
            gt=0,
        ),
    ] = 30.0
    max_deliver: int = 5
    heartbeat_every: float = 5.0
    # A token delta is published when this many tokens or this many seconds have gathered.
    coalesce_tokens: int = 8
    coalesce_seconds: float = 0.08
    threads: Annotated[
        Threads,
        env(
            "CHATBUS_WORKER_THREADS",
            "torch CPU threads of the worker's big steps (prompts, many replies at once); "
            "default 0 = all cores.",
        ),
    ] = 0
    small_step_threads: Annotated[
        Threads,
        env(
            "CHATBUS_WORKER_SMALL_STEP_THREADS",
            "torch CPU threads of a step of fewer than 8 tokens (decoding a few replies); default 1, "
            "0 = the same as CHATBUS_WORKER_THREADS.",
        ),
    ] = 1
    kv_blocks: Annotated[
        int,
        env(
            "CHATBUS_WORKER_KV_BLOCKS",
            "KV-cache blocks of the transformers engine (default 0 = auto: 256 on a CPU, 16 replies of ~500 "
            "tokens; on a GPU as many as 80% of its free memory holds once the weights are loaded).",
            ge=0,
        ),
    ] = 0
    kv_page_size: Annotated[
        Positive, env("CHATBUS_WORKER_KV_PAGE_SIZE", "Tokens per KV-cache block (default 32).")
    ] = 32
    max_batch_tokens: Annotated[
        Positive, env("CHATBUS_WORKER_MAX_BATCH_TOKENS", "Tokens one engine step may process (default 512).")
    ] = 512
    max_images: Annotated[
        int,
        env(
            "CHATBUS_WORKER_MAX_IMAGES",
            "Images a vision model sees per reply: the chat's newest (default 4); "
            "the rest are noted as ignored.",
            ge=0,
        ),
    ] = 4
    device: Annotated[
        Device,
        env(
            "CHATBUS_WORKER_DEVICE",
            "Device of the worker's model: auto, cpu, cuda, cuda:N or mps (default auto).",
        ),
    ] = "auto"
    engine: Annotated[
        EngineName,
        env(
            "CHATBUS_WORKER_ENGINE",
            "Engine that runs the model: auto (default: llama.cpp for a GGUF source on a CPU when "
            "llama-cpp-python is installed, else transformers), transformers, llama.cpp.",
        ),
    ] = "auto"
    dtype: Annotated[
        Dtype,
        env(
            "CHATBUS_WORKER_DTYPE",
            "Weights' dtype in the transformers engine: auto (float32 on a CPU, bfloat16 or float16 on a "
            "GPU), float32, bfloat16, float16.",
        ),
    ] = "auto"
    quantization: Annotated[
        Quantization,
        env(
            "CHATBUS_WORKER_QUANTIZATION",
            "Quantisation in the transformers engine: auto (default: int8 on a CPU, none on a GPU), "
            "none, int8 (dynamic int8 Linear layers, CPU only); llama.cpp runs the GGUF file's own.",
        ),
    ] = "auto"
    images: bool | None = None  # the config says the model must (True) or must not (False) see images
    model_cache: Annotated[
        str,
        env(
            "CHATBUS_MODEL_CACHE",
            "Where GGUF files are converted to (once, by sha256) and demo models built (default "
            "`<data dir>/models`).",
        ),
    ] = ""  # "": the CLI fills in `<data dir>/models`
    # Sampling a request gets when it names none (the model config's `[models.X.sampling]`).
    defaults: SamplingParams = SamplingParams()
    max_new_tokens_cap: Annotated[
        int,
        env(
            "CHATBUS_WORKER_MAX_NEW_TOKENS_CAP",
            f"The most tokens a reply may ask of the worker's model (default {MAX_NEW_TOKENS_LIMIT}); "
            "the API answers 400 beyond it. The config's `[models.X] max_new_tokens_cap` sets it per model.",
            ge=1,
            le=MAX_NEW_TOKENS_LIMIT,
        ),
    ] = MAX_NEW_TOKENS_LIMIT
    # What engine/dtype/quantization resolved to (main.prepare_model); None until then.
    resolved: EngineChoice | None = None
    worker_id: str = msgspec.field(default_factory=lambda: new_id("w"))
    host: str = msgspec.field(default_factory=socket.gethostname)

    @classmethod
    def from_env(cls, entry: ModelEntry | None = None, **overrides: object) -> WorkerSettings:
        """Settings from a model config entry, then CHATBUS_WORKER_* variables, then explicit overrides
        (None means unset)."""
        base: dict[str, object] = {"model": DEFAULT_SOURCE}
        if entry is not None:
            engine = {k: v for k, v in msgspec.structs.asdict(entry.engine).items() if v is not None}
            base.update(model=entry.source, images=entry.images, defaults=entry.sampling.params(), **engine)
            if entry.max_new_tokens_cap is not None:
                base["max_new_tokens_cap"] = entry.max_new_tokens_cap
        return load(cls, base=base, overrides={k: v for k, v in overrides.items() if v is not None})


ENV_VARS = env_vars(WorkerSettings)
