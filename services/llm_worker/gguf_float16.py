"""A GGUF file with its quantised tensors widened to bfloat16, float16 or float32, made once under the model
cache, for the llama.cpp engine's `weights` (a built-in model runs as its bfloat16 copy).

Why: llama.cpp multiplies quantised weights by activations quantised to 8 bits. On the built-in
SmolLM2-135M-Instruct (Q4_1) that flips its greedy answer to "What is the capital of France?" from
"The capital of France is Paris." (float16 weights in llama.cpp; transformers on its float32 conversion) to
"L'Étoile, la Cité, ..." (its own Q4_1, and also a Q8_0 copy). The float16 copy holds the dequantised
weights rounded to float16 (11 significant bits) and runs with float16 activations; it takes 2 bytes a
weight against Q4_1's 0.63 (270 MB for SmolLM2-135M). The bfloat16 copy (8 significant bits, the same size)
answers right too and is the fastest with several replies at once on a CPU with AVX512_BF16, whose dot
products llama.cpp uses (bench/llama_engine.py); the float32 one reads twice the bytes a step and is slowest.
"""

from __future__ import annotations

import logging
import os
import uuid
from pathlib import Path
from typing import Literal

import gguf
import numpy as np
from gguf.quants import dequantize, quantize

from services.llm_worker.gguf_convert import HASHES_FILE, file_sha256

log = logging.getLogger(__name__)

_KEPT = (gguf.GGMLQuantizationType.F32, gguf.GGMLQuantizationType.F16)


Dense = Literal["float16", "bfloat16", "float32"]

# The tensor type and file type of each dense copy, and the suffix of its file name.
_DENSE: dict[str, tuple[gguf.GGMLQuantizationType, gguf.LlamaFileType, str]] = {
    "float16": (gguf.GGMLQuantizationType.F16, gguf.LlamaFileType.MOSTLY_F16, "f16"),
    "bfloat16": (gguf.GGMLQuantizationType.BF16, gguf.LlamaFileType.MOSTLY_BF16, "bf16"),
    "float32": (gguf.GGMLQuantizationType.F32, gguf.LlamaFileType.ALL_F32, "f32"),
}


def dense_gguf(path: str | os.PathLike[str], cache_dir: str | os.PathLike[str], dtype: Dense) -> Path:
    """`<cache_dir>/gguf-<sha256[:16]>-<f16|bf16|f32>.gguf`: the file with every quantised tensor as
    `dtype` (the file itself when none is quantised)."""
    path, cache = Path(path), Path(cache_dir).resolve()
    reader = gguf.GGUFReader(path)
    if all(tensor.tensor_type in _KEPT for tensor in reader.tensors):
        return path
    suffix = _DENSE[dtype][2]
    target = cache / f"gguf-{file_sha256(path, cache / HASHES_FILE)[:16]}-{suffix}.gguf"
    if target.is_file():
        return target
    cache.mkdir(parents=True, exist_ok=True)
    work = cache / f".{target.name}.{uuid.uuid4().hex}.tmp"
    log.info("%s: writing a %s copy for llama.cpp in %s", path.name, dtype, target)
    try:
        _write_dense(reader, work, dtype)
        os.replace(work, target)  # atomic: another process writing the same copy at once is harmless
    finally:
        work.unlink(missing_ok=True)
    return target


def _write_dense(reader: gguf.GGUFReader, out: Path, dtype: Dense) -> None:
    tensor_type, file_type, _suffix = _DENSE[dtype]
    architecture = reader.fields[gguf.Keys.General.ARCHITECTURE].contents()
    writer = gguf.GGUFWriter(out, arch=str(architecture))
    for field in reader.fields.values():
        # The writer adds the architecture and GGUF.* itself; the file type would still say "Q4_1".
        if field.name in (gguf.Keys.General.ARCHITECTURE, gguf.Keys.General.FILE_TYPE):
            continue
        if field.name.startswith("GGUF."):
            continue
        value_type = field.types[0]
        sub_type = field.types[-1] if value_type == gguf.GGUFValueType.ARRAY else None
        writer.add_key_value(field.name, field.contents(), value_type, sub_type=sub_type)
    writer.add_file_type(file_type)
    for tensor in reader.tensors:
        if tensor.tensor_type in _KEPT:
            writer.add_tensor(tensor.name, tensor.data)
            continue
        weights = dequantize(tensor.data, tensor.tensor_type)
        if tensor_type == gguf.GGMLQuantizationType.F16:
            writer.add_tensor(tensor.name, weights.astype(np.float16))
        elif tensor_type == gguf.GGMLQuantizationType.F32:
            writer.add_tensor(tensor.name, weights.astype(np.float32))
        else:  # bfloat16: numpy has no such dtype, so the writer takes its bytes (rounded to nearest even)
            data = quantize(weights.astype(np.float32), tensor_type)
            writer.add_tensor(tensor.name, data, raw_shape=data.shape, raw_dtype=tensor_type)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
