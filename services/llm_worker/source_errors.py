"""Why a model source cannot be made a loadable model: one base, a subclass per case a user can act on."""

from __future__ import annotations


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
