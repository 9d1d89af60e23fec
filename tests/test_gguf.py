"""Model sources: the built-in GGUF converted and served by the engine, the cache, and the files refused."""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import threading
import time
from pathlib import Path

import gguf
import numpy as np
import pytest

from services.llm_worker.continuous_batching import ContinuousBatchingEngine
from services.llm_worker.engine import EngineOutput, GenerationParams
from services.llm_worker.gguf_check import check_gguf, supported_architectures
from services.llm_worker.gguf_convert import MARKER_FILE
from services.llm_worker.source_errors import (
    ModelNotFoundError,
    ModelSourceError,
    NotGGUFError,
    UnsupportedArchitectureError,
    UnsupportedQuantizationError,
    UnsupportedTokenizerError,
)
from services.llm_worker.sources import builtin_gguf, resolve_model

BUILTIN = "smollm2-135m-instruct"


def _write_gguf(
    path: Path, arch: str, raw_dtype: gguf.GGMLQuantizationType | None = None, tokenizer: str = "gpt2"
) -> Path:
    """A tiny but well-formed GGUF file: a few metadata keys, a vocabulary and one tensor."""
    writer = gguf.GGUFWriter(path, arch)
    writer.add_block_count(1)
    writer.add_tokenizer_model(tokenizer)
    writer.add_token_list(["<s>", "</s>", "a"])
    writer.add_eos_token_id(1)
    if raw_dtype is None:
        writer.add_tensor("token_embd.weight", np.zeros((3, 32), dtype=np.float32))
    else:  # raw blocks: one block per row, of the size this type has
        _, block_bytes = gguf.GGML_QUANT_SIZES[raw_dtype]
        blocks = np.zeros((3, block_bytes), dtype=np.uint8)
        writer.add_tensor("token_embd.weight", blocks, raw_dtype=raw_dtype)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def _tree(directory: Path) -> dict[str, int]:
    return {p.name: p.stat().st_mtime_ns for p in sorted(directory.iterdir())}


def test_converted_builtin_answers_paris(smollm2_dir: Path) -> None:
    engine = ContinuousBatchingEngine.from_pretrained(str(smollm2_dir))
    engine.start()
    outputs: list[EngineOutput] = []
    done = threading.Event()

    def on_output(output: EngineOutput) -> None:
        outputs.append(output)
        if output.finished:
            done.set()

    try:
        prompt = engine.build_prompt([{"role": "user", "content": "What is the capital of France?"}])
        engine.submit("q", prompt, GenerationParams(temperature=0.0, max_new_tokens=24), on_output)
        assert done.wait(120), "no final output"
    finally:
        engine.stop()
    assert outputs[-1].finish_reason in ("stop", "length") and outputs[-1].error is None
    text = engine.decode([t for o in outputs for t in o.new_token_ids])
    assert "Paris" in text, text


def test_conversion_is_a_complete_float32_model_directory(smollm2_dir: Path) -> None:
    marker = json.loads((smollm2_dir / MARKER_FILE).read_text())
    assert marker["architecture"] == "llama" and marker["dtype"] == "float32"
    assert smollm2_dir.name == f"gguf-{marker['sha256'][:16]}"
    assert {"config.json", "model.safetensors", "tokenizer.json", "generation_config.json"} <= set(
        _tree(smollm2_dir)
    )
    assert "quantization_config" not in json.loads((smollm2_dir / "config.json").read_text())
    assert json.loads((smollm2_dir / "generation_config.json").read_text())["eos_token_id"] == [2]
    assert (smollm2_dir / "chat_template.jinja").read_text().count("<|im_start|>") >= 1


def test_resolving_again_is_a_cache_hit(smollm2_dir: Path) -> None:
    before = _tree(smollm2_dir)
    cache = smollm2_dir.parent
    started = time.monotonic()
    again = resolve_model(BUILTIN, cache)
    elapsed = time.monotonic() - started
    assert again == smollm2_dir
    assert _tree(smollm2_dir) == before  # nothing rewritten
    assert not list(cache.glob(".*.tmp"))  # and no conversion started
    assert elapsed < 5, f"a cache hit took {elapsed:.1f} s"
    assert resolve_model(smollm2_dir, cache) == smollm2_dir  # a model directory is returned as is


def test_a_waiting_resolve_uses_the_conversion_made_meanwhile(smollm2_dir: Path, tmp_path: Path) -> None:
    # Hold the lock as a converting process would, then finish "its" conversion: the waiter must not convert.
    cache, name = tmp_path / "models", smollm2_dir.name
    cache.mkdir()
    result: list[Path] = []
    with (cache / f"{name}.lock").open("a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        waiter = threading.Thread(target=lambda: result.append(resolve_model(BUILTIN, cache)))
        waiter.start()
        waiter.join(3)
        assert waiter.is_alive(), "resolve_model did not wait for the lock"
        shutil.copytree(smollm2_dir, cache / name, copy_function=os.link)
        fcntl.flock(lock, fcntl.LOCK_UN)
    waiter.join(30)
    assert result == [cache / name]
    assert _tree(cache / name) == _tree(smollm2_dir)
    assert not list(cache.glob(".*.tmp"))


def test_builtin_is_a_supported_gguf() -> None:
    header = check_gguf(builtin_gguf(BUILTIN))
    assert header.architecture == "llama" and header.type_counts()["Q4_1"] > 0
    assert "llama" in supported_architectures() and "general" not in supported_architectures()


def test_unsupported_architecture_is_refused(tmp_path: Path) -> None:
    path = _write_gguf(tmp_path / "rwkv.gguf", "rwkv6")
    with pytest.raises(UnsupportedArchitectureError) as info:
        resolve_model(path, tmp_path / "models")
    message = str(info.value)
    assert "'rwkv6'" in message and "llama" in message and "qwen2" in message
    assert not (tmp_path / "models").exists()  # refused before hashing or converting anything


def test_unsupported_quantization_is_refused(tmp_path: Path) -> None:
    # Q8_1 is an intermediate format of llama.cpp's kernels that the gguf package does not dequantise.
    path = _write_gguf(tmp_path / "q81.gguf", "llama", raw_dtype=gguf.GGMLQuantizationType.Q8_1)
    with pytest.raises(UnsupportedQuantizationError, match=r"Q8_1.*Supported: F32, F16, .*Q4_K"):
        resolve_model(path, tmp_path / "models")


def test_unsupported_tokenizer_is_refused(tmp_path: Path) -> None:
    path = _write_gguf(tmp_path / "tok.gguf", "llama", tokenizer="rwkv")
    with pytest.raises(UnsupportedTokenizerError, match="'rwkv'"):
        resolve_model(path, tmp_path / "models")


def test_a_file_that_is_not_gguf_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "model.gguf"
    path.write_text('{"not": "a model"}\n')
    with pytest.raises(NotGGUFError, match="is not a GGUF file"):
        resolve_model(path, tmp_path / "models")
    empty = tmp_path / "empty.gguf"
    empty.touch()
    with pytest.raises(NotGGUFError):
        resolve_model(empty, tmp_path / "models")


def test_a_truncated_gguf_is_refused(tmp_path: Path) -> None:
    whole = _write_gguf(tmp_path / "whole.gguf", "llama").read_bytes()
    cut = tmp_path / "cut.gguf"
    cut.write_bytes(whole[:60])
    with pytest.raises(NotGGUFError, match="damaged or truncated"):
        resolve_model(cut, tmp_path / "models")


def test_missing_sources_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ModelNotFoundError, match="not found.*config.json.*smollm2-135m-instruct"):
        resolve_model(tmp_path / "nothing.gguf", tmp_path / "models")
    (tmp_path / "plain").mkdir()
    with pytest.raises(ModelNotFoundError, match="no config.json"):
        resolve_model(tmp_path / "plain", tmp_path / "models")
    assert issubclass(ModelNotFoundError, ModelSourceError) and issubclass(NotGGUFError, ModelSourceError)
