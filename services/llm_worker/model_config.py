"""The model config: one TOML file naming, per alias, where the model comes from and how it is served.

```toml
[models.smollm2-135m]
source = "smollm2-135m-instruct"   # a model directory, a .gguf file, or a built-in name
[models.smollm2-135m.sampling]     # defaults of a request that names none
temperature = 0.7
max_tokens = 256
[models.smollm2-135m.engine]       # which engine runs it, and its sizing
engine = "auto"                    # auto, transformers, llama.cpp
quantization = "auto"              # auto, none, int8
capacity = 16
```

`max_new_tokens_cap` (in `[models.<alias>]`) is the most tokens a reply may ask: the API refuses more
(400), the worker clamps to it.

`chatbus up` starts workers for every alias; `chatbus worker --alias A` serves one. Environment
variables (CHATBUS_WORKER_*) and command-line options override what the file says.
"""

from __future__ import annotations

import os
import re
import tomllib
from pathlib import Path
from typing import Annotated, Literal

import msgspec

from schemas.ids import is_valid_id
from schemas.sampling import MAX_NEW_TOKENS_LIMIT, SamplingParams

DEMO_SOURCES = ("demo-text", "demo-vision")  # random-weight models built on first use: not assistants
DEFAULT_ALIAS = "smollm2-135m"
DEFAULT_SOURCE = "smollm2-135m-instruct"  # what the default alias serves: SmolLM2-135M-Instruct
Positive = Annotated[int, msgspec.Meta(ge=1)]
Threads = Annotated[int, msgspec.Meta(ge=0)]  # torch CPU threads; 0: see the field
Device = Annotated[str, msgspec.Meta(pattern=r"^(auto|cpu|mps|cuda(:[0-9]+)?)$")]
Dtype = Literal["auto", "float32", "bfloat16", "float16"]
EngineName = Literal["auto", "transformers", "llama.cpp"]
Quantization = Literal["auto", "none", "int8"]


class ModelConfigError(ValueError):
    """The model config cannot be used; the message names the file and the key."""


class Sampling(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """`[models.<alias>.sampling]`: what a request gets for each parameter it does not set."""

    max_tokens: Annotated[int, msgspec.Meta(ge=1, le=MAX_NEW_TOKENS_LIMIT)] = 256
    temperature: Annotated[float, msgspec.Meta(ge=0.0, le=5.0)] = 0.7
    top_p: Annotated[float, msgspec.Meta(gt=0.0, le=1.0)] = 0.95
    top_k: Annotated[int, msgspec.Meta(ge=1, le=1000)] = 50

    def params(self) -> SamplingParams:
        """As the SamplingParams a reply request carries."""
        return SamplingParams(
            max_new_tokens=self.max_tokens, temperature=self.temperature, top_p=self.top_p, top_k=self.top_k
        )


class Engine(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """`[models.<alias>.engine]`: how one worker of the alias runs its model (unset: the worker's default)."""

    capacity: Positive | None = None  # replies generated at once
    kv_blocks: Positive | None = None  # paged KV-cache blocks
    kv_page_size: Positive | None = None  # tokens per block
    max_batch_tokens: Positive | None = None  # tokens one engine step may process
    threads: Threads | None = None  # torch CPU threads; 0 = all cores
    # torch CPU threads of steps of fewer than 8 tokens (a few replies decoding); 0 = `threads`
    small_step_threads: Threads | None = None
    engine: EngineName | None = None  # auto: llama.cpp for a GGUF source when installed, else transformers
    device: Device | None = None
    dtype: Dtype | None = None
    quantization: Quantization | None = None  # int8: the transformers engine on a CPU


class ModelEntry(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """`[models.<alias>]`: one model clients ask for by its alias."""

    source: Annotated[str, msgspec.Meta(min_length=1)]
    images: bool | None = None  # must it see images? (None: whatever the model is)
    workers: Annotated[int, msgspec.Meta(ge=0, le=64)] = 1  # worker processes `chatbus up` starts
    # The most tokens a reply may ask (None: the worker's CHATBUS_WORKER_MAX_NEW_TOKENS_CAP).
    max_new_tokens_cap: Annotated[int, msgspec.Meta(ge=1, le=MAX_NEW_TOKENS_LIMIT)] | None = None
    sampling: Sampling = Sampling()
    engine: Engine = Engine()

    def __post_init__(self) -> None:
        cap = self.max_new_tokens_cap
        if cap is not None and self.sampling.max_tokens > cap:
            raise ValueError(
                f"sampling.max_tokens {self.sampling.max_tokens} is over max_new_tokens_cap {cap}"
            )


class ModelsConfig(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """The whole file: `[models.<alias>]` tables."""

    models: dict[str, ModelEntry] = {}


def default_config() -> ModelsConfig:
    """What `chatbus up` serves with no config file: SmolLM2-135M-Instruct and the tiny vision demo."""
    return ModelsConfig(
        models={
            DEFAULT_ALIAS: ModelEntry(source=DEFAULT_SOURCE, sampling=Sampling(temperature=0.2)),
            "demo-vision": ModelEntry(source="demo-vision"),
        }
    )


_where = re.compile(r" - at `\$\.?(.*)`$")


def load_config(path: str | os.PathLike[str]) -> ModelsConfig:
    """Read and check a model config file; errors say which key is wrong and how."""
    path = Path(path)
    try:
        with path.open("rb") as handle:
            raw = tomllib.load(handle)
    except OSError as exc:
        raise ModelConfigError(f"cannot read the model config {path}: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ModelConfigError(f"{path} is not valid TOML: {exc}") from None
    unknown = sorted(set(raw) - {"models"})
    if unknown:
        raise ModelConfigError(f"{path}: {unknown[0]}: unknown key (the file holds [models.<alias>] tables)")
    tables = raw.get("models", {})
    if not isinstance(tables, dict):
        raise ModelConfigError(f"{path}: models: expected tables [models.<alias>]")
    models = {}
    for alias, table in tables.items():
        if not is_valid_id(alias):
            raise ModelConfigError(f"{path}: models.{alias}: an alias is 1-64 characters of [A-Za-z0-9_-]")
        try:
            models[alias] = msgspec.convert(table, ModelEntry)
        except msgspec.ValidationError as exc:
            raise ModelConfigError(f"{path}: {_key_of(f'models.{alias}', str(exc))}") from None
    return ModelsConfig(models=models)


def _key_of(prefix: str, message: str) -> str:
    """`models.a.engine.capacity: Expected int, got str` from msgspec's `... - at `$.engine.capacity``."""
    where = _where.search(message)
    path = prefix + (f".{where.group(1)}" if where and where.group(1) else "")
    text = message[: where.start()] if where else message
    field = re.search(r"unknown field `([^`]+)`", text)
    if field:
        return f"{path}.{field.group(1)}: unknown key"
    return f"{path}: {text}"


def entry_for(config: ModelsConfig, alias: str, path: str | os.PathLike[str] | None = None) -> ModelEntry:
    """The entry of `alias`; a clear error naming the aliases there are when it has none."""
    entry = config.models.get(alias)
    if entry is None:
        where = f" in {path}" if path else ""
        known = ", ".join(config.models) or "none"
        raise ModelConfigError(f"no [models.{alias}]{where}; the aliases there: {known}")
    return entry
