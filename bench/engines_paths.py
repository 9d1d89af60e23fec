"""The paths bench_engines.py compares: chatbus with one worker per engine setting (one stack), and the
llama.cpp children of bench/engines_llama.py; transformers serve is openai_paths.ServePath as it is."""

from __future__ import annotations

import subprocess
import sys
from dataclasses import dataclass
from importlib.util import find_spec
from pathlib import Path

from bench.openai_measure import Threads
from bench.openai_paths import BenchPath, ChatbusPath, RawPath
from bench.openai_stacks import ROOT, Chatbus, WorkerSpec, base_env, spawn, start_stack
from services.llm_worker.engine_choice import EngineChoice, choose_engine
from services.llm_worker.model_config import DEFAULT_SOURCE

ALL_CORES = Threads(0)  # the worker's default threads (all cores; transformers: 1 on small steps)


@dataclass(frozen=True)
class Setting:
    """One engine setting of chatbus's worker: `chatbus worker --engine E --dtype D --quantization Q`."""

    key: str  # what --paths names
    engine: str
    dtype: str
    quantization: str

    @property
    def alias(self) -> str:
        return f"bench-{self.key}"

    @property
    def label(self) -> str:
        if self.engine == "llama.cpp":
            return "chatbus llama.cpp"
        return f"chatbus transformers {self.quantization if self.quantization == 'int8' else self.dtype}"

    def matches(self, choice: EngineChoice) -> bool:
        """Whether the worker runs what `choice` resolves to (llama.cpp: whatever weights its file gives)."""
        if choice.engine == "llama.cpp":
            return self.engine == "llama.cpp"
        return (self.engine, self.dtype, self.quantization) == (
            choice.engine,
            choice.dtype,
            choice.quantization,
        )


SETTINGS = [
    Setting("float32", "transformers", "float32", "none"),
    Setting("bfloat16", "transformers", "bfloat16", "none"),
    Setting("int8", "transformers", "float32", "int8"),
    Setting("llama", "llama.cpp", "auto", "auto"),
]
OTHER_PATHS = ("serve", "llama-alone", "llama-raw")  # the other names --paths takes


def llama_installed() -> bool:
    """Whether llama-cpp-python is installed (main.llama_available, without importing torch here)."""
    return find_spec("llama_cpp") is not None


def default_choice() -> EngineChoice:
    """What `auto` resolves to for the built-in GGUF model on this machine (these machines: a CPU)."""
    return choose_engine(
        "auto", "auto", "auto", device_type="cpu", gguf=True, llama_installed=llama_installed()
    )


class EngineChatbusPath(ChatbusPath):
    """chatbus's /v1/chat/completions, streamed with AsyncOpenAI, to the worker of one engine setting."""

    def __init__(self, setting: Setting, base_url: str, api_key: str) -> None:
        super().__init__(ALL_CORES, base_url, api_key, setting.alias)
        self.setting = setting
        self.resolved = ""  # what the worker's presence says it runs

    @property
    def name(self) -> str:
        return self.setting.label


class LlamaPath(RawPath):
    """A child of bench/engines_llama.py: `alone` (Llama, a stream at a time) or `engine` (LlamaCppEngine)."""

    kind = "llama"

    def __init__(self, mode: str, cache_dir: Path, capacity: int, log: Path) -> None:
        BenchPath.__init__(self, ALL_CORES)
        self.mode = mode
        self.label = "llama.cpp alone (Llama, sequential)" if mode == "alone" else "llama.cpp engine raw"
        script = str(ROOT / "bench" / "engines_llama.py")
        args = [sys.executable, script, mode, "--cache-dir", str(cache_dir), "--capacity", str(capacity)]
        self.child = spawn(args, base_env(), log, stdin=subprocess.PIPE, stdout=subprocess.PIPE)

    @property
    def name(self) -> str:
        return self.label


async def start_engine_stack(tmp: Path, cache_dir: Path, settings: list[Setting], capacity: int) -> Chatbus:
    """The stack as `chatbus up` runs it, each setting's worker serving the built-in SmolLM2 (its GGUF
    file for llama.cpp, the directory converted from it for transformers) under its own alias."""
    specs = {
        s.key: WorkerSpec(
            s.alias,
            ["--model", DEFAULT_SOURCE, "--capacity", str(capacity), "--engine", s.engine]
            + ["--dtype", s.dtype, "--quantization", s.quantization],
            {},
        )
        for s in settings
    }
    # 600 s: the llama.cpp worker writes the bfloat16 copy of the GGUF file once.
    return await start_stack(tmp, cache_dir, "bench_engines", specs, timeout=600)


async def resolved_engines(stack: Chatbus) -> dict[str, str]:
    """alias -> "engine dtype quantization", as each live worker's presence says it runs."""
    from services.api.presence import live_workers

    return {w.alias: f"{w.engine} {w.dtype} {w.quantization}" for w in await live_workers(stack.nbus.js)}
