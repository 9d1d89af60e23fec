"""Worker settings: which model, under which alias, how many replies at once."""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass, field

from schemas.ids import new_id
from schemas.sampling import SamplingParams

ENV_VARS: tuple[tuple[str, str], ...] = (
    ("CHATBUS_WORKER_MODEL", "Local model directory or hub id the worker loads (default: the demo model)."),
    ("CHATBUS_WORKER_ALIAS", "Model alias the worker serves; clients ask for this name (default `demo`)."),
    ("CHATBUS_WORKER_CAPACITY", "Replies generated at once by one worker (continuous batching), default 16."),
    (
        "CHATBUS_WORKER_ACK_WAIT",
        "Seconds without a heartbeat before a reply goes to another worker, default 30.",
    ),
    (
        "CHATBUS_WORKER_THREADS",
        "torch CPU threads of the worker; default 1 (degrades gently beside other services), 0 = all cores.",
    ),
    ("CHATBUS_WORKER_KV_BLOCKS", "KV-cache blocks of the engine (default 256: 16 replies of ~500 tokens)."),
    ("CHATBUS_WORKER_KV_PAGE_SIZE", "Tokens per KV-cache block (default 32)."),
    ("CHATBUS_WORKER_MAX_BATCH_TOKENS", "Tokens one engine step may process (default 512)."),
    (
        "CHATBUS_WORKER_MAX_IMAGES",
        "Images a vision model sees per reply: the chat's newest (default 4); the rest are noted as ignored.",
    ),
)


@dataclass
class WorkerSettings:
    """What one worker process serves and how."""

    model: str
    alias: str = "demo"
    capacity: int = 16
    ack_wait: float = 30.0
    max_deliver: int = 5
    heartbeat_every: float = 5.0
    # A token delta is published when this many tokens or this many seconds have gathered.
    coalesce_tokens: int = 8
    coalesce_seconds: float = 0.08
    threads: int = 1
    kv_blocks: int = 256
    kv_page_size: int = 32
    max_batch_tokens: int = 512
    max_images: int = 4
    # Sampling a request gets when it names none (the model config's `[models.X.sampling]`).
    defaults: SamplingParams = field(default_factory=SamplingParams)
    worker_id: str = field(default_factory=lambda: new_id("w"))
    host: str = field(default_factory=socket.gethostname)

    @classmethod
    def from_env(cls, **overrides: object) -> WorkerSettings:
        """Settings from CHATBUS_WORKER_* variables, then explicit overrides (None means unset)."""
        values: dict[str, object] = {
            "model": os.environ.get("CHATBUS_WORKER_MODEL", ""),
            "alias": os.environ.get("CHATBUS_WORKER_ALIAS", "demo"),
            "capacity": int(os.environ.get("CHATBUS_WORKER_CAPACITY", "16")),
            "ack_wait": float(os.environ.get("CHATBUS_WORKER_ACK_WAIT", "30")),
            "threads": int(os.environ.get("CHATBUS_WORKER_THREADS", "1")),
            "kv_blocks": int(os.environ.get("CHATBUS_WORKER_KV_BLOCKS", "256")),
            "kv_page_size": int(os.environ.get("CHATBUS_WORKER_KV_PAGE_SIZE", "32")),
            "max_batch_tokens": int(os.environ.get("CHATBUS_WORKER_MAX_BATCH_TOKENS", "512")),
            "max_images": int(os.environ.get("CHATBUS_WORKER_MAX_IMAGES", "4")),
        }
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)  # type: ignore[arg-type]
