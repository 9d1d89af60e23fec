"""Text for the llama.cpp engine: the GGUF file's chat template rendered the way transformers renders
one, and a tokenizer adapter with what the worker uses of a tokenizer (reply_text.py's `decode`)."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

import jinja2
import jinja2.ext
from jinja2.sandbox import ImmutableSandboxedEnvironment

from services.llm_worker.engine import ChatMessage
from services.llm_worker.llama_native import LlamaError, LlamaModel


def _raise_exception(message: str) -> None:
    raise jinja2.exceptions.TemplateError(message)


def _tojson(
    value: Any, ensure_ascii: bool = False, indent: int | None = None, separators: Any = None, sort_keys=False
) -> str:
    # transformers' tojson: no HTML escaping, unlike jinja2's own filter.
    return json.dumps(
        value, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys
    )


def _strftime_now(format: str) -> str:
    return datetime.now().strftime(format)


class ChatTemplate:
    """A chat template compiled as transformers compiles one (a sandbox, trim_blocks, lstrip_blocks,
    loopcontrols, its tojson, raise_exception and strftime_now)."""

    def __init__(self, source: str, bos_token: str, eos_token: str) -> None:
        environment = ImmutableSandboxedEnvironment(
            trim_blocks=True, lstrip_blocks=True, extensions=[jinja2.ext.loopcontrols]
        )
        environment.filters["tojson"] = _tojson
        environment.globals["raise_exception"] = _raise_exception
        environment.globals["strftime_now"] = _strftime_now
        self._template = environment.from_string(source)
        self.bos_token, self.eos_token = bos_token, eos_token

    def render(self, messages: list[ChatMessage], add_generation_prompt: bool = True) -> str:
        """The conversation as the model's prompt text (with the assistant's header when asked)."""
        return self._template.render(
            messages=messages,
            add_generation_prompt=add_generation_prompt,
            bos_token=self.bos_token,
            eos_token=self.eos_token,
        )


class LlamaTokenizer:
    """The vocabulary of a GGUF model as the worker uses a tokenizer: encode, decode, the chat template."""

    def __init__(self, model: LlamaModel) -> None:
        self._model = model
        self.bos_token_id = model.special_token("bos")
        self.eos_token_id = model.special_token("eos")
        self.bos_token = model.piece(self.bos_token_id) if self.bos_token_id is not None else ""
        self.eos_token = model.piece(self.eos_token_id) if self.eos_token_id is not None else ""
        source = model.chat_template()
        if source is None:
            raise LlamaError("the GGUF file has no tokenizer.chat_template: it is not a chat model")
        self.template = ChatTemplate(source, self.bos_token, self.eos_token)

    def __len__(self) -> int:
        return self._model.n_vocab

    def encode(self, text: str, add_special_tokens: bool = True) -> list[int]:
        """Token ids of a text (a BOS first when the vocabulary wants one and add_special_tokens)."""
        return self._model.tokenize(text, add_special_tokens)

    def decode(self, ids: list[int], skip_special_tokens: bool = False) -> str:
        """The text of token ids, without special tokens when skip_special_tokens."""
        return self._model.detokenize([int(i) for i in ids], skip_special_tokens)

    def apply_chat_template(self, messages: list[ChatMessage], add_generation_prompt: bool = True) -> str:
        """The rendered prompt text (the template writes the BOS itself where it wants one)."""
        return self.template.render(messages, add_generation_prompt)
