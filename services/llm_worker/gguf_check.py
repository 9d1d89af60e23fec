"""What a GGUF file holds (its header, without the tensor data) and whether this transformers loads it."""

from __future__ import annotations

import functools
import mmap
import os
import struct
from collections import Counter
from dataclasses import dataclass
from importlib.metadata import version
from pathlib import Path
from typing import Any

import gguf
import numpy as np
from transformers.integrations.gguf import GGUF_ARCHS, is_gguf_arch_supported
from transformers.integrations.gguf.dequant import GGML_BLOCK
from transformers.integrations.gguf.gguf_tokenizer_mapping import select_tokenizer_builder
from transformers.modeling_gguf_pytorch_utils import GGUF_SUPPORTED_ARCHITECTURES
from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

from services.llm_worker.source_errors import (
    ModelNotFoundError,
    NotGGUFError,
    UnsupportedArchitectureError,
    UnsupportedQuantizationError,
    UnsupportedTokenizerError,
)

_GGUF_MAGIC = b"GGUF"


_SCALAR_FORMATS = {
    gguf.GGUFValueType.UINT8: "<B",
    gguf.GGUFValueType.INT8: "<b",
    gguf.GGUFValueType.UINT16: "<H",
    gguf.GGUFValueType.INT16: "<h",
    gguf.GGUFValueType.UINT32: "<I",
    gguf.GGUFValueType.INT32: "<i",
    gguf.GGUFValueType.FLOAT32: "<f",
    gguf.GGUFValueType.BOOL: "<?",
    gguf.GGUFValueType.UINT64: "<Q",
    gguf.GGUFValueType.INT64: "<q",
    gguf.GGUFValueType.FLOAT64: "<d",
}


# Types transformers' own GGUF reader takes as plain tensors rather than as quantised blocks.
_FLOAT_TYPES = (gguf.GGMLQuantizationType.F32, gguf.GGMLQuantizationType.F16, gguf.GGMLQuantizationType.BF16)


@dataclass(frozen=True)
class GGUFHeader:
    """A GGUF file's metadata (arrays only as their length) and the ggml type id of each tensor."""

    path: Path
    version: int
    metadata: dict[str, Any]
    tensor_types: dict[str, int]

    @property
    def architecture(self) -> str:
        """The llama.cpp architecture name (`general.architecture`), e.g. "llama"."""
        return str(self.metadata.get(gguf.Keys.General.ARCHITECTURE, ""))

    def type_counts(self) -> dict[str, int]:
        """How many tensors of each ggml type the file holds, by type name."""
        return dict(Counter(_type_name(t) for t in self.tensor_types.values()))


def check_gguf(path: str | os.PathLike[str]) -> GGUFHeader:
    """Read a GGUF header; raise a ModelSourceError unless transformers can load it as a causal LM."""
    header = read_gguf_header(path)
    name, arch = header.path.name, header.architecture
    if not _is_supported(arch):
        raise UnsupportedArchitectureError(
            f"{name} is a {arch!r} model, which transformers {version('transformers')} cannot load from GGUF "
            f"as a causal LM. Supported GGUF architectures: {', '.join(supported_architectures())}. "
            "Use a GGUF of one of these, or a transformers model directory (with config.json)."
        )
    allowed = supported_quantizations(arch)
    refused = sorted({_type_name(t) for t in header.tensor_types.values()} - set(allowed))
    if refused:
        raise UnsupportedQuantizationError(
            f"{name} holds tensors in {', '.join(refused)}, which transformers {version('transformers')} "
            f"(with gguf {version('gguf')}) cannot dequantise for {arch!r}. Supported: {', '.join(allowed)}. "
            "Download the model in one of these quantisations (a Q4_K_M or Q8_0 file, for instance)."
        )
    try:
        select_tokenizer_builder(arch, header.metadata.get(gguf.Keys.Tokenizer.MODEL))
    except ValueError as exc:
        raise UnsupportedTokenizerError(f"{name}: {exc}") from None
    return header


def supported_architectures() -> list[str]:
    """GGUF architectures this transformers loads as a causal LM (some spelled as transformers does)."""
    # The legacy loader's table also has metadata sections ("general", "tokenizer") and seq2seq models (t5).
    legacy = {a for a in GGUF_SUPPORTED_ARCHITECTURES if a in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES}
    return sorted(legacy | set(GGUF_ARCHS))


def supported_quantizations(architecture: str) -> list[str]:
    """The ggml tensor types transformers can dequantise for a GGUF file of this architecture."""
    if is_gguf_arch_supported(architecture):  # transformers' own GGUF loader, with its torch dequantisers
        types = [*_FLOAT_TYPES, *(gguf.GGMLQuantizationType(t) for t in GGML_BLOCK)]
    else:  # the legacy loader, which dequantises with the gguf package
        types = [t for t in gguf.GGMLQuantizationType if _gguf_dequantises(t)]
    return [t.name for t in sorted(set(types))]


def read_gguf_header(path: str | os.PathLike[str]) -> GGUFHeader:
    """Parse a GGUF file's metadata and tensor table (not its tensor data); NotGGUFError if it is not one."""
    path = Path(path)
    if not path.is_file():
        raise ModelNotFoundError(f"{path}: no such file")
    with path.open("rb") as file:
        if file.read(4) != _GGUF_MAGIC:
            raise NotGGUFError(f"{path} is not a GGUF file (it does not start with the bytes 'GGUF')")
        with mmap.mmap(file.fileno(), 0, access=mmap.ACCESS_READ) as blob:
            try:
                return _parse_header(path, _Cursor(blob, 4))
            except (struct.error, UnicodeDecodeError, ValueError) as exc:
                raise NotGGUFError(f"{path} is a damaged or truncated GGUF file: {exc}") from None


def _is_supported(architecture: str) -> bool:
    # Compared without separators: a file says "qwen2moe" (llama.cpp's name), transformers "qwen2_moe".
    return _squash(architecture) in {_squash(a) for a in supported_architectures()}


def _squash(name: str) -> str:
    return name.replace("_", "").replace("-", "").lower()


@functools.cache
def _gguf_dequantises(qtype: gguf.GGMLQuantizationType) -> bool:
    """Whether the gguf package dequantises this type: asked with one zero block, since it has no list."""
    _, block_bytes = gguf.GGML_QUANT_SIZES[qtype]
    try:
        gguf.quants.dequantize(np.zeros(block_bytes, dtype=np.uint8), qtype)
    except NotImplementedError:
        return False
    return True


def _type_name(type_id: int) -> str:
    try:
        return gguf.GGMLQuantizationType(type_id).name
    except ValueError:
        return f"ggml type {type_id} (unknown to gguf {version('gguf')})"


class _Cursor:
    """Reads little-endian GGUF values from a buffer, front to back."""

    def __init__(self, blob: mmap.mmap, pos: int) -> None:
        self.blob, self.pos = blob, pos

    def unpack(self, fmt: str) -> Any:
        (value,) = struct.unpack_from(fmt, self.blob, self.pos)
        self.pos += struct.calcsize(fmt)
        return value

    def string(self) -> str:
        length = self.unpack("<Q")
        raw = self.blob[self.pos : self.pos + length]
        if len(raw) != length:
            raise ValueError("a string runs past the end of the file")
        self.pos += length
        return raw.decode("utf-8")

    def value(self, value_type: int) -> Any:
        """One metadata value; an array comes back as its length (a vocabulary is 100k strings)."""
        kind = gguf.GGUFValueType(value_type)
        if kind in _SCALAR_FORMATS:
            return self.unpack(_SCALAR_FORMATS[kind])
        if kind == gguf.GGUFValueType.STRING:
            return self.string()
        element, count = self.unpack("<I"), self.unpack("<Q")
        element_kind = gguf.GGUFValueType(element)
        if element_kind in _SCALAR_FORMATS:
            self.pos += count * struct.calcsize(_SCALAR_FORMATS[element_kind])
        else:
            for _ in range(count):
                self.value(element)
        return count


def _parse_header(path: Path, cursor: _Cursor) -> GGUFHeader:
    file_version = cursor.unpack("<I")
    if file_version not in gguf.READER_SUPPORTED_VERSIONS:
        supported = ", ".join(map(str, gguf.READER_SUPPORTED_VERSIONS))
        raise ValueError(f"GGUF version {file_version} is not one transformers reads ({supported})")
    tensor_count, kv_count = cursor.unpack("<Q"), cursor.unpack("<Q")
    metadata = {}
    for _ in range(kv_count):
        key = cursor.string()
        metadata[key] = cursor.value(cursor.unpack("<I"))
    tensor_types = {}
    for _ in range(tensor_count):
        name = cursor.string()
        dimensions = cursor.unpack("<I")
        cursor.pos += 8 * dimensions
        tensor_types[name] = cursor.unpack("<I")
        cursor.pos += 8  # the data offset
    if gguf.Keys.General.ARCHITECTURE not in metadata:
        raise ValueError(f"no {gguf.Keys.General.ARCHITECTURE} in its metadata")
    return GGUFHeader(path, file_version, metadata, tensor_types)
