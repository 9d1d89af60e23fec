"""A GGUF file with its quantised tensors widened to float16, made once under the model cache, for the
llama.cpp engine's `weights = "float16"`.

Why: llama.cpp multiplies quantised weights by activations quantised to 8 bits. On the built-in
SmolLM2-135M-Instruct (Q4_1) that flips its greedy answer to "What is the capital of France?" from
"The capital of France is Paris." (float16 weights in llama.cpp; transformers on its float32 conversion) to
"L'Étoile, la Cité, ..." (its own Q4_1, and also a Q8_0 copy). The float16 copy holds the dequantised
weights rounded to float16 (11 significant bits) and runs with float16 activations; it takes 2 bytes a
weight against Q4_1's 0.63 (270 MB for SmolLM2-135M), at about the same speed on this small model.
"""

from __future__ import annotations

import logging
import os
import uuid
from pathlib import Path

import gguf
import numpy as np
from gguf.quants import dequantize

from services.llm_worker.gguf_convert import HASHES_FILE, file_sha256

log = logging.getLogger(__name__)

_KEPT = (gguf.GGMLQuantizationType.F32, gguf.GGMLQuantizationType.F16)


def float16_gguf(path: str | os.PathLike[str], cache_dir: str | os.PathLike[str]) -> Path:
    """`<cache_dir>/gguf-<sha256[:16]>-f16.gguf`: the file with every quantised tensor as float16 (the
    file itself when none is quantised)."""
    path, cache = Path(path), Path(cache_dir).resolve()
    reader = gguf.GGUFReader(path)
    if all(tensor.tensor_type in _KEPT for tensor in reader.tensors):
        return path
    target = cache / f"gguf-{file_sha256(path, cache / HASHES_FILE)[:16]}-f16.gguf"
    if target.is_file():
        return target
    cache.mkdir(parents=True, exist_ok=True)
    work = cache / f".{target.name}.{uuid.uuid4().hex}.tmp"
    log.info("%s: writing a float16 copy for llama.cpp in %s", path.name, target)
    try:
        _write_float16(reader, work)
        os.replace(work, target)  # atomic: another process writing the same copy at once is harmless
    finally:
        work.unlink(missing_ok=True)
    return target


def _write_float16(reader: gguf.GGUFReader, out: Path) -> None:
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
    writer.add_file_type(gguf.LlamaFileType.MOSTLY_F16)
    for tensor in reader.tensors:
        data = tensor.data
        if tensor.tensor_type not in _KEPT:
            data = dequantize(data, tensor.tensor_type).astype(np.float16)
        writer.add_tensor(tensor.name, data)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
