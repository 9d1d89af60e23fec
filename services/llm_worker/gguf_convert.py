"""A checked GGUF file converted once into a float32 safetensors directory under a cache, keyed by the
file's sha256 (hashed once, remembered against size and mtime), so that later starts load it directly."""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import logging
import os
import shutil
import time
import uuid
from collections.abc import Iterator
from importlib.metadata import version
from pathlib import Path
from typing import Any

import gguf
import rich.progress
import torch
from rich.console import Console
from transformers import AutoModelForCausalLM, AutoTokenizer, GenerationConfig
from transformers.utils.quantization_config import GgufConfig

from services.llm_worker.gguf_check import GGUFHeader, check_gguf
from services.llm_worker.source_errors import ConversionError

log = logging.getLogger(__name__)


MARKER_FILE = "chatbus_gguf.json"  # written last inside a converted directory, with where it came from


HASHES_FILE = "gguf-hashes.json"  # path -> (size, mtime, sha256), so a multi-GB file is hashed once


SAVED_DTYPE = torch.float32  # what the CPU engine runs fastest; the GGUF's blocks dequantise exactly into it


_HASH_CHUNK = 8 << 20


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
