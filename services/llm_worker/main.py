"""Start a worker: resolve its engine settings, load the model into that engine, then serve the bus."""

from __future__ import annotations

import asyncio
import dataclasses
import importlib.util
import logging
from collections import Counter
from pathlib import Path

import msgspec
import torch

from bus import Bus
from services.llm_worker.continuous_batching import ContinuousBatchingEngine
from services.llm_worker.engine import Engine, EngineConfig, pick_device, pick_dtype
from services.llm_worker.engine_choice import CPU_KV_BLOCKS, EngineChoice, EngineChoiceError, choose_engine
from services.llm_worker.gguf_check import read_gguf_header
from services.llm_worker.model_config import DEMO_SOURCES, ModelConfigError
from services.llm_worker.settings import WorkerSettings
from services.llm_worker.sources import BUILTIN_MODELS, gguf_source, resolve_model
from services.llm_worker.vision import VisionEngine, is_vision_model
from services.llm_worker.worker import Worker

log = logging.getLogger(__name__)

# The llama.cpp engine's dense copies of a GGUF file (gguf_float16.py), and the one a built-in model runs as:
# bfloat16, the fastest of them with 16 replies at once on this CPU (README, "The llama.cpp engine").
DENSE_WEIGHTS = ("bfloat16", "float16", "float32")
BUILTIN_LLAMA_WEIGHTS = "bfloat16"


async def run_worker(
    settings: WorkerSettings, nbus: Bus, stop: asyncio.Event, engine_config: EngineConfig | None = None
) -> None:
    """Load `settings.model` (off the event loop) and serve its alias until `stop` is set."""
    if settings.resolved is None:
        settings = await asyncio.to_thread(prepare_model, settings)
    engine, settings = await asyncio.to_thread(load_engine, settings, engine_config)
    worker = Worker(settings, nbus, engine, getattr(engine, "tokenizer", None))
    log.info("worker %s serves %s", settings.worker_id, settings.alias)
    await worker.run(stop)


def prepare_model(settings: WorkerSettings) -> WorkerSettings:
    """Settings whose engine settings are resolved (`resolved`) and whose `model` is what that engine
    loads: the GGUF file for llama.cpp, a model directory for transformers (a GGUF file converted once)."""
    source = settings.model
    gguf = None if source in DEMO_SOURCES else gguf_source(source)
    try:
        device = pick_device(settings.device)
    except ValueError as exc:  # a GPU asked for where torch sees none
        raise ModelConfigError(f"{settings.alias}: {exc}") from None
    try:
        choice = choose_engine(
            settings.engine,
            settings.dtype,
            settings.quantization,
            device_type=device.type,
            gguf=gguf is not None,
            llama_installed=llama_available(),
            bf16=device.type == "cuda" and torch.cuda.is_bf16_supported(),
            images=settings.images,
        )
    except EngineChoiceError as exc:
        raise EngineChoiceError(f"{settings.alias}: {exc}") from None
    if choice.engine == "llama.cpp" and gguf is not None:
        # A built-in model runs as a dense copy of its file: SmolLM2-135M's Q4_1 answers wrongly in
        # llama.cpp's kernels (gguf_float16.py); any other GGUF runs as its file is.
        kind = BUILTIN_LLAMA_WEIGHTS if source in BUILTIN_MODELS else gguf_quantization(gguf)
        choice = msgspec.structs.replace(choice, quantization=kind)
        return msgspec.structs.replace(settings, model=str(gguf), resolved=choice)
    located = locate_model(source, Path(settings.model_cache))
    return msgspec.structs.replace(settings, model=str(located), resolved=choice)


def llama_available() -> bool:
    """Whether the llama.cpp engine can run: llama-cpp-python (the extra `llama`) and its engine module."""
    return all(importlib.util.find_spec(name) for name in ("llama_cpp", "services.llm_worker.llama_engine"))


def load_engine(
    settings: WorkerSettings, engine_config: EngineConfig | None = None
) -> tuple[Engine, WorkerSettings]:
    """The engine of prepared settings (prepare_model), and the settings as the worker runs them."""
    choice = settings.resolved
    if choice is None:
        raise ValueError("load_engine needs settings from prepare_model")
    if engine_config is not None and choice.engine == "transformers":  # the caller's config is what runs
        dtype = str(pick_dtype(engine_config.dtype, pick_device(engine_config.device))).removeprefix("torch.")
        choice = EngineChoice("transformers", dtype, engine_config.quantization)
        settings = msgspec.structs.replace(settings, resolved=choice)
    config = engine_config or engine_config_of(settings, choice)
    if choice.engine == "llama.cpp":
        from services.llm_worker.llama_engine import LlamaConfig, LlamaCppEngine  # the extra `llama`

        log.info("loading %s as %s with llama.cpp (%s)", settings.model, settings.alias, choice.quantization)
        sizing = dataclasses.replace(
            LlamaConfig.from_engine_config(config, settings.capacity),
            weights=choice.quantization if choice.quantization in DENSE_WEIGHTS else "file",  # type: ignore[arg-type]
        )
        return LlamaCppEngine.from_gguf(settings.model, sizing, cache_dir=settings.model_cache), settings
    vision = is_vision_model(settings.model)
    if settings.images is not None and settings.images != vision:
        kind = "a vision-language" if vision else "a text-only"
        said = str(settings.images).lower()
        raise ModelConfigError(f"{settings.alias}: the config says `images = {said}`, but it is {kind} model")
    if vision and choice.quantization == "int8" and settings.quantization == "auto":
        # The CPU default was measured on text models: a vision model runs in float32 unless int8 is asked.
        choice = EngineChoice("transformers", "float32", "none")
        config = dataclasses.replace(config, dtype="float32", quantization="none")
        settings = msgspec.structs.replace(settings, resolved=choice)
    log.info(
        "loading %s as %s with transformers on %s: dtype %s, quantization %s",
        settings.model,
        settings.alias,
        pick_device(settings.device),
        choice.dtype,
        choice.quantization,
    )
    if not vision:
        return ContinuousBatchingEngine.from_pretrained(settings.model, config), settings
    engine = VisionEngine.from_pretrained(settings.model, config)
    if settings.capacity > VisionEngine.max_active:
        # It generates one reply at a time: holding more requests would keep them from other workers.
        log.info("vision model: capacity %d -> %d", settings.capacity, VisionEngine.max_active)
        settings = msgspec.structs.replace(settings, capacity=VisionEngine.max_active)
    return engine, settings


def engine_config_of(settings: WorkerSettings, choice: EngineChoice) -> EngineConfig:
    """The engine sizing and precision of resolved settings; KV blocks `auto` (0) are CPU_KV_BLOCKS on a
    CPU, sized from free GPU memory once the model is loaded on a GPU (continuous_batching.py)."""
    on_cpu = pick_device(settings.device).type == "cpu"
    transformers = choice.engine == "transformers"
    return EngineConfig(
        num_blocks=settings.kv_blocks or (CPU_KV_BLOCKS if on_cpu else None),
        page_size=settings.kv_page_size,
        max_batch_tokens=settings.max_batch_tokens,
        num_threads=settings.threads or None,
        small_step_threads=settings.small_step_threads,
        device=settings.device,
        dtype=choice.dtype if transformers else "auto",
        quantization=choice.quantization if transformers else "none",
    )


def gguf_quantization(path: Path) -> str:
    """The GGUF file's main tensor type (e.g. Q4_1): the most common one besides the float types."""
    counts = Counter(read_gguf_header(path).type_counts())
    quantised = [(n, name) for name, n in counts.items() if name not in ("F32", "F16", "BF16")]
    return max(quantised)[1] if quantised else max((n, name) for name, n in counts.items())[1]


def locate_model(source: str, cache_dir: Path) -> Path:
    """The directory to load for a model source: a demo model (built on first use), or `resolve_model`'s."""
    if source in DEMO_SOURCES:
        target = cache_dir / source
        if not (target / "config.json").exists():
            log.info("building the %s model (random weights, not an assistant) in %s", source, target)
            if source == "demo-vision":
                from services.llm_worker.demo_vlm import make_demo_vlm

                make_demo_vlm(target)
            else:
                from services.llm_worker.demo_model import make_demo_model

                make_demo_model(target)
        return target
    return resolve_model(source, cache_dir)
