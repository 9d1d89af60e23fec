"""Offline random-weight demo causal LM with a real byte-level BPE tokenizer and a ChatML template."""

from __future__ import annotations

import inspect
import json
from pathlib import Path

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import GenerationConfig, LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

PAD_TOKEN = "<|endoftext|>"
IM_START = "<|im_start|>"
IM_END = "<|im_end|>"
SPECIAL_TOKENS = [PAD_TOKEN, IM_START, IM_END]
VOCAB_SIZE = 2048
MARKER_FILE = "chatbus_demo.json"

CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)

# Stdlib modules whose source (docstrings, prose comments, code) gives a varied English + code corpus offline.
_CORPUS_MODULES = ("argparse", "collections", "dataclasses", "email.message", "json", "pathlib", "textwrap")
# Non-ASCII sample text so that common accented letters and symbols get merges of their own.
_EXTRA_TEXT = "café naïve déjà vu façade über Straße señor ¿qué? 你好 世界 😀 👍 ✓ — “quotes” 10 €\n"


def _corpus() -> list[str]:
    """Return the training texts: stdlib module sources, split into lines, plus a little non-ASCII text."""
    import importlib

    lines: list[str] = []
    for name in _CORPUS_MODULES:
        lines.extend(inspect.getsource(importlib.import_module(name)).splitlines(keepends=True))
    lines.extend([_EXTRA_TEXT] * 50)
    return lines


def _train_tokenizer() -> Tokenizer:
    """Train a byte-level BPE tokenizer on the offline corpus (deterministic for a given Python version)."""
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=VOCAB_SIZE,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(_corpus(), trainer=trainer)
    return tokenizer


def text_config(vocab_size: int, eos_ids: list[int], pad_id: int) -> LlamaConfig:
    """The demo's tiny Llama (the text model, and the language half of the vision demo)."""
    return LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=256,
        intermediate_size=688,
        num_hidden_layers=4,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=2048,
        tie_word_embeddings=True,
        bos_token_id=None,
        eos_token_id=eos_ids,
        pad_token_id=pad_id,
        dtype="float32",
    )


def generation_config(eos_ids: list[int], pad_id: int) -> GenerationConfig:
    """How the demo models sample by default."""
    return GenerationConfig(
        do_sample=True,
        temperature=0.7,
        top_k=50,
        top_p=0.95,
        max_new_tokens=256,
        eos_token_id=eos_ids,
        pad_token_id=pad_id,
    )


def make_demo_model(out_dir: Path, seed: int = 0) -> Path:
    """Write a ~3.4M-parameter random-weight Llama, its tokenizer and generation config into out_dir."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)

    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=_train_tokenizer(),
        bos_token=None,
        eos_token=IM_END,
        pad_token=PAD_TOKEN,
        unk_token=None,
        model_max_length=2048,
    )
    tokenizer.chat_template = CHAT_TEMPLATE
    vocab = tokenizer.get_vocab()
    eos_ids = [vocab[IM_END], vocab[PAD_TOKEN]]

    config = text_config(len(tokenizer), eos_ids, tokenizer.pad_token_id)
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config).float().eval()
    model.generation_config = generation_config(eos_ids, tokenizer.pad_token_id)

    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    marker = {
        "chatbus_demo": True,
        "kind": "causal-lm",
        "seed": seed,
        "parameters": sum(p.numel() for p in model.parameters()),
        "note": "Random-weight demo model for offline tests; its output is noise. It is not an assistant.",
    }
    (out_dir / MARKER_FILE).write_text(json.dumps(marker, indent=2) + "\n")
    return out_dir
