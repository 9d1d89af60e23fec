"""Start a worker: load the model into an engine, then serve the bus until stopped."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import msgspec

from bus import Bus
from services.llm_worker.continuous_batching import ContinuousBatchingEngine
from services.llm_worker.engine import EngineConfig
from services.llm_worker.model_config import DEMO_SOURCES, ModelConfigError
from services.llm_worker.settings import WorkerSettings
from services.llm_worker.sources import resolve_model
from services.llm_worker.vision import VisionEngine, is_vision_model
from services.llm_worker.worker import Worker

log = logging.getLogger(__name__)


async def run_worker(
    settings: WorkerSettings, nbus: Bus, stop: asyncio.Event, engine_config: EngineConfig | None = None
) -> None:
    """Load `settings.model` (off the event loop) and serve its alias until `stop` is set."""
    located = await asyncio.to_thread(locate_model, settings.model, Path(settings.model_cache))
    settings = msgspec.structs.replace(settings, model=str(located))
    log.info("loading %s as %s", settings.model, settings.alias)
    config = engine_config or EngineConfig(
        num_blocks=settings.kv_blocks,
        page_size=settings.kv_page_size,
        max_batch_tokens=settings.max_batch_tokens,
        num_threads=settings.threads or None,
        small_step_threads=settings.small_step_threads,
        device=settings.device,
        dtype=settings.dtype,
    )
    engine: ContinuousBatchingEngine | VisionEngine
    vision = await asyncio.to_thread(is_vision_model, settings.model)
    if settings.images is not None and settings.images != vision:
        kind = "a vision-language" if vision else "a text-only"
        said = str(settings.images).lower()
        raise ModelConfigError(f"{settings.alias}: the config says `images = {said}`, but it is {kind} model")
    if vision:
        engine = await asyncio.to_thread(VisionEngine.from_pretrained, settings.model, config)
        if settings.capacity > VisionEngine.max_active:
            # It generates one reply at a time: holding more requests would keep them from other workers.
            log.info("vision model: capacity %d -> %d", settings.capacity, VisionEngine.max_active)
            settings = msgspec.structs.replace(settings, capacity=VisionEngine.max_active)
    else:
        engine = await asyncio.to_thread(ContinuousBatchingEngine.from_pretrained, settings.model, config)
    worker = Worker(settings, nbus, engine, engine.tokenizer)
    log.info("worker %s serves %s", settings.worker_id, settings.alias)
    await worker.run(stop)


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
