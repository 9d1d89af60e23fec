"""Worker presence: what each worker serves, kept in the KV bucket `workers` with a TTL."""

from __future__ import annotations

from datetime import datetime

import msgspec

from schemas.sampling import SamplingParams


class WorkerPresence(msgspec.Struct, frozen=True, kw_only=True):
    """One worker's heartbeat. KV key `<alias>.<worker_id>` in bucket `workers`."""

    worker_id: str
    alias: str
    model: str
    host: str
    active: int
    capacity: int
    images: bool = False  # the model sees images (a vision-language model)
    started_at: datetime
    heartbeat_at: datetime
    # The alias's default sampling (from the model config): the API fills a request's unset parameters
    # with it, so the request event records exactly what the model was asked.
    defaults: SamplingParams = SamplingParams()
    max_context: int = 0  # tokens of prompt + reply the model takes (0: unknown)
    # The most tokens a reply may ask of this worker (its model config's `max_new_tokens_cap`); 0: not
    # announced (a worker from before the cap). Asking more is refused by the API, clamped by the worker.
    max_new_tokens: int = 0
    batch_active: int = 0  # of `active`, the batches' lines (the batch lane, services/llm_worker/lanes.py)
    # What runs the model: engine "transformers" or "llama.cpp"; dtype (float32, bfloat16, float16, or
    # "gguf": the file's own types); quantization ("none", "int8", or the GGUF file's type such as "Q4_1").
    # "": a worker from before these fields.
    engine: str = ""
    dtype: str = ""
    quantization: str = ""
