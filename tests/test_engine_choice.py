"""The engine settings per model: `auto` resolved by device and what is installed; the CPU default answers."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import subprocess
import sys
import threading
from pathlib import Path

import msgspec
import pytest
import torch

import bus
import schemas
from bus import Bus
from schemas.presence import WorkerPresence
from schemas.sampling import SamplingParams
from schemas.streams import WORKERS_KV
from schemas.subjects import presence_key
from services.llm_worker.continuous_batching import ContinuousBatchingEngine, kv_block_bytes_of
from services.llm_worker.engine import EngineOutput, GenerationParams
from services.llm_worker.engine_choice import (
    CPU_DTYPE,
    CPU_QUANTIZATION,
    EngineChoice,
    EngineChoiceError,
    choose_engine,
    gpu_kv_blocks,
    kv_block_bytes,
)
from services.llm_worker.main import (
    engine_config_of,
    gguf_quantization,
    llama_available,
    load_engine,
    prepare_model,
    run_worker,
)
from services.llm_worker.model_config import DEFAULT_SOURCE, ModelConfigError, load_config
from services.llm_worker.presence import presence_of
from services.llm_worker.settings import WorkerSettings
from services.llm_worker.sources import builtin_gguf

ROOT = Path(__file__).parent.parent
CPU_DEFAULT = EngineChoice("transformers", CPU_DTYPE, CPU_QUANTIZATION)
LLAMA = EngineChoice("llama.cpp", "gguf", "gguf")


def _choose(
    engine: str = "auto", dtype: str = "auto", quantization: str = "auto", **where: object
) -> EngineChoice:
    facts = {"device_type": "cpu", "gguf": True, "llama_installed": True, "bf16": False, "images": None}
    facts.update(where)
    return choose_engine(engine, dtype, quantization, **facts)  # type: ignore[arg-type]


def test_auto_on_a_cpu_is_llama_cpp_for_a_gguf_source_when_installed() -> None:
    assert _choose() == LLAMA
    assert _choose(quantization="none") == LLAMA  # "none" asks nothing llama.cpp lacks


@pytest.mark.parametrize(
    "where",
    [
        {"llama_installed": False},  # llama-cpp-python not installed
        {"gguf": False},  # a transformers directory
        {"images": True},  # the config says the model sees images
    ],
)
def test_auto_falls_back_to_the_transformers_cpu_default(where: dict[str, object]) -> None:
    assert _choose(**where) == CPU_DEFAULT


def test_a_transformers_only_setting_makes_auto_pick_transformers() -> None:
    assert _choose(dtype="bfloat16") == EngineChoice("transformers", "bfloat16", "none")
    assert _choose(quantization="int8") == EngineChoice("transformers", "float32", "int8")
    assert _choose(dtype="float32") == EngineChoice("transformers", "float32", "none")


def test_transformers_on_a_cpu() -> None:
    assert _choose("transformers") == CPU_DEFAULT
    assert _choose("transformers", quantization="none") == EngineChoice("transformers", CPU_DTYPE, "none")
    assert _choose("transformers", dtype="float16") == EngineChoice("transformers", "float16", "none")


def test_a_gpu_runs_transformers_in_half_precision() -> None:
    assert _choose(device_type="cuda", bf16=True) == EngineChoice("transformers", "bfloat16", "none")
    assert _choose(device_type="cuda", bf16=False) == EngineChoice("transformers", "float16", "none")
    assert _choose("transformers", "float32", device_type="cuda") == EngineChoice(
        "transformers", "float32", "none"
    )
    assert _choose(device_type="mps") == EngineChoice("transformers", "float16", "none")


@pytest.mark.parametrize(
    ("settings", "says"),
    [
        ({"engine": "llama.cpp", "llama_installed": False}, "run `make llama`"),
        ({"engine": "llama.cpp", "gguf": False}, "loads GGUF files"),
        ({"engine": "llama.cpp", "device_type": "cuda"}, "runs on the CPU here"),
        ({"engine": "llama.cpp", "quantization": "int8"}, "quantization must be auto or none"),
        ({"engine": "llama.cpp", "dtype": "float16"}, "dtype must be auto"),
        ({"engine": "llama.cpp", "images": True}, "text models only"),
        ({"quantization": "int8", "device_type": "cuda"}, 'quantization = "int8" runs on a CPU only'),
        ({"quantization": "int8", "dtype": "bfloat16"}, "quantises float32 weights"),
        ({"engine": "vllm"}, "expected auto, transformers or llama.cpp"),
    ],
)
def test_settings_that_cannot_run_say_which_and_why(settings: dict[str, str], says: str) -> None:
    with pytest.raises(EngineChoiceError, match=says.replace("(", r"\(")) as caught:
        _choose(**settings)
    assert isinstance(caught.value, ModelConfigError)  # the CLI reports it like a config error


def test_kv_blocks_on_a_gpu_fill_a_share_of_its_free_memory() -> None:
    # SmolLM2-135M: 30 layers, 3 KV heads of 64; bfloat16, 32-token pages.
    block = kv_block_bytes(30, 3, 64, 32, 2)
    assert block == 2 * 30 * 3 * 64 * 32 * 2 == 737_280
    assert gpu_kv_blocks(10 * 2**30, block) == int(10 * 2**30 * 0.8) // block == 11_650
    assert gpu_kv_blocks(2**20, block) == 16  # never fewer than a few replies' worth
    assert gpu_kv_blocks(2**30, block, share=0.5) == 2**29 // block
    with pytest.raises(ValueError):
        gpu_kv_blocks(2**30, 0)


def test_settings_name_the_engine_keys_from_file_env_and_flags(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "models.toml"
    path.write_text(
        '[models.m]\nsource = "/m"\n[models.m.engine]\nengine = "transformers"\nquantization = "none"\n'
    )
    entry = load_config(path).models["m"]
    settings = WorkerSettings.from_env(entry, alias="m")
    assert (settings.engine, settings.quantization, settings.dtype) == ("transformers", "none", "auto")
    monkeypatch.setenv("CHATBUS_WORKER_ENGINE", "llama.cpp")
    monkeypatch.setenv("CHATBUS_WORKER_QUANTIZATION", "int8")
    settings = WorkerSettings.from_env(entry, alias="m")
    assert (settings.engine, settings.quantization) == ("llama.cpp", "int8")
    assert WorkerSettings.from_env(entry, alias="m", engine="auto").engine == "auto"


def test_the_cpu_default_answers_paris_and_the_presence_says_what_runs(smollm2_dir: Path) -> None:
    settings = WorkerSettings(
        model=str(smollm2_dir), engine="transformers", device="cpu", model_cache=str(smollm2_dir.parent)
    )
    settings = prepare_model(settings)
    assert settings.resolved == CPU_DEFAULT and settings.model == str(smollm2_dir)
    engine, settings = load_engine(settings)
    assert isinstance(engine, ContinuousBatchingEngine)
    outputs: list[EngineOutput] = []
    done = threading.Event()

    def on_output(output: EngineOutput) -> None:
        outputs.append(output)
        if output.finished:
            done.set()

    engine.start()
    try:
        prompt = engine.build_prompt([{"role": "user", "content": "What is the capital of France?"}])
        engine.submit("q", prompt, GenerationParams(temperature=0.0, max_new_tokens=24), on_output)
        assert done.wait(120), "no final output"
    finally:
        engine.stop()
    text = engine.decode([t for o in outputs for t in o.new_token_ids])
    assert outputs[-1].error is None and "Paris" in text, text
    linear = type(engine.model.model.layers[0].self_attn.q_proj).__module__
    assert ("quantized" in linear) == (CPU_QUANTIZATION == "int8"), linear
    presence = presence_of(settings, engine, schemas.now(), SamplingParams(), 0, 0)
    assert (presence.engine, presence.dtype, presence.quantization) == (
        "transformers",
        CPU_DTYPE,
        CPU_QUANTIZATION,
    )


def test_kv_block_bytes_of_a_real_model(smollm2_dir: Path) -> None:
    settings = prepare_model(WorkerSettings(model=str(smollm2_dir), engine="transformers", device="cpu"))
    config = engine_config_of(settings, EngineChoice("transformers", "float32", "none"))
    assert config.num_blocks == 256  # the CPU's `auto`
    engine = ContinuousBatchingEngine.from_pretrained(str(smollm2_dir), config)
    assert kv_block_bytes_of(engine.model, 32) == kv_block_bytes(30, 3, 64, 32, 4)


def _worker(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, "-m", "services.cli", "worker", *args, "--nats", "nats://127.0.0.1:1"]
    return subprocess.run(
        cmd,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
        env={"PATH": "/usr/bin:/bin", "COLUMNS": "200", "PYTHONPATH": str(ROOT)},
    )


@pytest.mark.skipif(llama_available(), reason="llama-cpp-python is installed: an explicit llama.cpp can run")
def test_an_explicit_llama_cpp_without_it_installed_says_make_llama(tmp_path: Path) -> None:
    done = _worker("--model", "smollm2-135m-instruct", "--engine", "llama.cpp", cwd=tmp_path)
    assert done.returncode == 2 and "make llama" in done.stderr, done.stderr


def test_a_bad_engine_setting_names_its_variable(tmp_path: Path) -> None:
    done = _worker("--model", "demo-text", "--quantization", "int4", cwd=tmp_path)
    assert done.returncode == 2 and "quantization" in done.stderr and "int4" in done.stderr, done.stderr


async def test_a_running_worker_logs_and_announces_its_engine(
    nbus: Bus, demo_model_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="services.llm_worker.main")
    settings = WorkerSettings(model=str(demo_model_dir), alias="engine-demo", device="cpu", ack_wait=5.0)
    stop = asyncio.Event()
    task = asyncio.create_task(run_worker(settings, nbus, stop))
    presence = bus.KV(nbus.js, WORKERS_KV.bucket)
    announced = None
    try:
        for _ in range(600):
            assert not task.done(), task
            with contextlib.suppress(bus.NotFound):  # not yet: the model is loading
                entry = await presence.get(presence_key("engine-demo", settings.worker_id))
                announced = msgspec.json.decode(entry.value, type=WorkerPresence)
                break
            await asyncio.sleep(0.1)
    finally:
        stop.set()
        await asyncio.wait_for(task, 30)
    assert announced is not None, "no heartbeat within 60 s"
    assert (announced.engine, announced.dtype, announced.quantization) == (
        "transformers",
        CPU_DTYPE,
        CPU_QUANTIZATION,
    )
    assert f"with transformers on cpu: dtype {CPU_DTYPE}, quantization {CPU_QUANTIZATION}" in caplog.text


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a CUDA GPU")
def test_a_gpu_asked_for_where_there_is_none_is_a_config_error(demo_model_dir: Path) -> None:
    with pytest.raises(ModelConfigError, match="no CUDA GPU"):
        prepare_model(WorkerSettings(model=str(demo_model_dir), alias="m", device="cuda"))


def test_a_gguf_file_says_its_quantisation() -> None:
    assert gguf_quantization(builtin_gguf(DEFAULT_SOURCE)) == "Q4_1"


@pytest.mark.skipif(not llama_available(), reason="llama-cpp-python or the llama.cpp engine is not installed")
def test_llama_cpp_keeps_the_gguf_file_and_converts_nothing(tmp_path: Path) -> None:
    settings = prepare_model(WorkerSettings(model=DEFAULT_SOURCE, device="cpu", model_cache=str(tmp_path)))
    # The built-in model runs as a bfloat16 copy of its Q4_1 file (made when the engine loads, not here).
    assert settings.resolved == EngineChoice("llama.cpp", "gguf", "bfloat16")
    assert settings.model == str(builtin_gguf(DEFAULT_SOURCE)) and not any(tmp_path.iterdir())
