"""The LLM worker: pulls reply requests for one model alias and generates with continuous batching."""

from services.llm_worker.main import run_worker
from services.llm_worker.settings import WorkerSettings

__all__ = ["WorkerSettings", "run_worker"]
