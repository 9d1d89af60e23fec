"""Which engine a worker runs, in what precision: the `auto` settings resolved (pure functions, no torch).

On a CPU, `auto` is llama.cpp when llama-cpp-python is installed and the source is a GGUF file, else
transformers with CPU_DTYPE and CPU_QUANTIZATION, the fastest setting measured with sound answers
(bench/engine_settings.py). On a GPU it is transformers in bfloat16 (float16 where the GPU lacks
bfloat16), with as many KV-cache blocks as the GPU's free memory holds (gpu_kv_blocks).
"""

from __future__ import annotations

from typing import Literal

import msgspec

from services.llm_worker.model_config import ModelConfigError

LLAMA_INSTALL = "make llama"  # how a user gets llama-cpp-python (the Makefile target)

CPU_KV_BLOCKS = 256  # KV-cache blocks on a CPU (kv_blocks 0 = auto): see EngineConfig.num_blocks
# The transformers engine's CPU default. SmolLM2-135M through ContinuousBatchingEngine on 2 cores, 128
# greedy tokens, medians of 3 interleaved rounds (bench/engine_settings.py), tok/s at 1 / 16 streams:
# float32 16.6 / 59.3, bfloat16 19.1 / 96.9, int8 dynamic quantisation 36.0 / 112.0; all three answer
# "Paris". int8 quantises float32 weights, hence the dtype.
CPU_DTYPE = "float32"
CPU_QUANTIZATION = "int8"


class EngineChoiceError(ModelConfigError):
    """The engine settings cannot be served here; the message names the setting and what to do."""


class EngineChoice(msgspec.Struct, frozen=True):
    """A resolved choice: `engine` is transformers or llama.cpp, `dtype` and `quantization` what it runs
    (for llama.cpp both come from the GGUF file: dtype "gguf", quantization its tensors' type)."""

    engine: Literal["transformers", "llama.cpp"]
    dtype: str
    quantization: str


def choose_engine(
    engine: str,
    dtype: str,
    quantization: str,
    *,
    device_type: str,
    gguf: bool,
    llama_installed: bool,
    bf16: bool = False,
    images: bool | None = None,
) -> EngineChoice:
    """Resolve the settings `engine`, `dtype`, `quantization` for a model on `device_type` ("cpu", "cuda",
    "mps"): `gguf` says the source is a GGUF file, `llama_installed` that llama_cpp imports, `bf16` that
    the GPU has bfloat16, `images` what the config says of images."""
    if engine == "llama.cpp":
        _check_llama(dtype, quantization, device_type=device_type, gguf=gguf, installed=llama_installed)
        if images:
            raise EngineChoiceError(
                'engine = "llama.cpp" serves text models only, and the config says images'
            )
        return EngineChoice("llama.cpp", "gguf", "gguf")  # the worker reads the file's type (main.py)
    if engine == "auto" and _llama_fits(dtype, quantization, device_type, gguf, llama_installed, images):
        return EngineChoice("llama.cpp", "gguf", "gguf")
    if engine not in ("auto", "transformers"):
        raise EngineChoiceError(f"engine = {engine!r}: expected auto, transformers or llama.cpp")
    return transformers_choice(dtype, quantization, device_type=device_type, bf16=bf16)


def transformers_choice(
    dtype: str, quantization: str, *, device_type: str, bf16: bool = False
) -> EngineChoice:
    """The transformers engine's dtype and quantization: `auto` is CPU_DTYPE/CPU_QUANTIZATION on a CPU,
    bfloat16 (float16 without it) and no quantisation on a GPU, float16 on Apple's MPS."""
    if quantization not in ("auto", "none", "int8"):
        raise EngineChoiceError(f"quantization = {quantization!r}: expected auto, none or int8")
    if dtype not in ("auto", "float32", "bfloat16", "float16"):
        raise EngineChoiceError(f"dtype = {dtype!r}: expected auto, float32, bfloat16 or float16")
    if quantization == "int8":
        if device_type != "cpu":
            raise EngineChoiceError(
                f'quantization = "int8" runs on a CPU only, and the device is {device_type}'
            )
        if dtype not in ("auto", "float32"):
            raise EngineChoiceError(
                f'quantization = "int8" quantises float32 weights: dtype = {dtype!r} cannot'
            )
        return EngineChoice("transformers", "float32", "int8")
    if device_type == "cpu":
        if dtype == "auto":
            # The CPU default; a quantization set to "none" keeps the default's dtype without quantising.
            chosen = CPU_QUANTIZATION if quantization == "auto" else "none"
            return EngineChoice("transformers", CPU_DTYPE, chosen)
        return EngineChoice("transformers", dtype, "none")  # a dtype set by hand is run as it is
    if dtype == "auto":
        dtype = ("bfloat16" if bf16 else "float16") if device_type == "cuda" else "float16"
    return EngineChoice("transformers", dtype, "none")


def _check_llama(dtype: str, quantization: str, *, device_type: str, gguf: bool, installed: bool) -> None:
    """Why an explicit `engine = "llama.cpp"` cannot run, if it cannot."""
    if not installed:
        raise EngineChoiceError(
            f'engine = "llama.cpp" needs llama-cpp-python, which is not installed: run `{LLAMA_INSTALL}` '
            '(or set engine = "auto" or "transformers")'
        )
    if not gguf:
        raise EngineChoiceError('engine = "llama.cpp" loads GGUF files: the source is not a .gguf file')
    if device_type != "cpu":
        raise EngineChoiceError(f'engine = "llama.cpp" runs on the CPU here: device is {device_type}')
    if quantization not in ("auto", "none"):
        raise EngineChoiceError(
            f'engine = "llama.cpp" runs the GGUF file\'s own quantisation: quantization must be auto or '
            f"none, not {quantization!r}"
        )
    if dtype != "auto":
        raise EngineChoiceError(
            f'engine = "llama.cpp" runs the GGUF file\'s own types: dtype must be auto, not {dtype!r}'
        )


def _llama_fits(
    dtype: str, quantization: str, device_type: str, gguf: bool, installed: bool, images: bool | None
) -> bool:
    """Whether `auto` takes llama.cpp: installed, a GGUF source on a CPU, text only, and no setting that
    only transformers has (a dtype, int8)."""
    only_transformers = dtype != "auto" or quantization not in ("auto", "none")
    return installed and gguf and device_type == "cpu" and not images and not only_transformers


def kv_block_bytes(layers: int, kv_heads: int, head_dim: int, page_size: int, dtype_bytes: int) -> int:
    """Bytes of one paged KV-cache block: keys and values of `page_size` tokens in every layer."""
    return 2 * layers * kv_heads * head_dim * page_size * dtype_bytes


def gpu_kv_blocks(free_bytes: int, block_bytes: int, *, share: float = 0.8, least: int = 16) -> int:
    """KV-cache blocks for a GPU with `free_bytes` free once the weights are loaded: `share` of it (the
    rest for activations of the steps), at least `least` blocks."""
    if block_bytes <= 0:
        raise ValueError("a KV block has a positive size")
    return max(least, int(free_bytes * share) // block_bytes)
