"""Offline random-weight demo vision-language model (Llava: tiny CLIP vision tower + tiny Llama)."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from transformers import (
    CLIPImageProcessorPil,
    CLIPVisionConfig,
    LlavaConfig,
    LlavaForConditionalGeneration,
    LlavaProcessor,
    PreTrainedTokenizerFast,
)

from services.llm_worker.demo_model import (
    IM_END,
    MARKER_FILE,
    PAD_TOKEN,
    _train_tokenizer,
    generation_config,
    text_config,
)

IMAGE_TOKEN = "<image>"
IMAGE_SIZE = 32
PATCH_SIZE = 8
IMAGE_TOKENS_PER_IMAGE = (IMAGE_SIZE // PATCH_SIZE) ** 2

# ChatML; `content` is either a string or a list of parts ({"type": "text", "text": ...} / {"type": "image"}).
# Each image part renders as one IMAGE_TOKEN, which the processor expands to IMAGE_TOKENS_PER_IMAGE copies.
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' }}"
    "{% if message['content'] is string %}{{ message['content'] }}"
    "{% else %}{% for part in message['content'] %}"
    "{% if part['type'] in ['image', 'image_url'] %}{{ '" + IMAGE_TOKEN + "' }}"
    "{% elif part['type'] == 'text' %}{{ part['text'] }}{% endif %}"
    "{% endfor %}{% endif %}"
    "{{ '<|im_end|>\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)


def make_demo_vlm(out_dir: Path, seed: int = 0) -> Path:
    """Write a tiny random-weight Llava model, its processor and generation config into out_dir."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)

    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=_train_tokenizer(),
        bos_token=None,
        eos_token=IM_END,
        pad_token=PAD_TOKEN,
        unk_token=None,
        model_max_length=2048,
        padding_side="left",  # batched generation with a decoder-only model wants left padding
        extra_special_tokens={"image_token": IMAGE_TOKEN},
    )
    tokenizer.chat_template = CHAT_TEMPLATE
    vocab = tokenizer.get_vocab()
    eos_ids = [vocab[IM_END], vocab[PAD_TOKEN]]
    image_token_id = vocab[IMAGE_TOKEN]

    image_processor = CLIPImageProcessorPil(
        size={"shortest_edge": IMAGE_SIZE},
        crop_size={"height": IMAGE_SIZE, "width": IMAGE_SIZE},
    )
    processor = LlavaProcessor(
        image_processor=image_processor,
        tokenizer=tokenizer,
        patch_size=PATCH_SIZE,
        vision_feature_select_strategy="default",
        chat_template=CHAT_TEMPLATE,
        image_token=IMAGE_TOKEN,
        num_additional_image_tokens=1,  # CLIP's CLS token, dropped again by the "default" strategy
    )

    vision_config = CLIPVisionConfig(
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        image_size=IMAGE_SIZE,
        patch_size=PATCH_SIZE,
        projection_dim=64,
    )
    language = text_config(len(tokenizer), eos_ids, tokenizer.pad_token_id)
    config = LlavaConfig(
        vision_config=vision_config,
        text_config=language,
        image_token_index=image_token_id,
        image_seq_length=IMAGE_TOKENS_PER_IMAGE,
        vision_feature_select_strategy="default",
        vision_feature_layer=-1,
        tie_word_embeddings=True,
        dtype="float32",
    )
    torch.manual_seed(seed)
    model = LlavaForConditionalGeneration(config).float().eval()
    model.generation_config = generation_config(eos_ids, tokenizer.pad_token_id)

    model.save_pretrained(out_dir)
    processor.save_pretrained(out_dir)
    marker = {
        "chatbus_demo": True,
        "kind": "vision-language",
        "seed": seed,
        "parameters": sum(p.numel() for p in model.parameters()),
        "image_token": IMAGE_TOKEN,
        "image_token_id": image_token_id,
        "image_tokens_per_image": IMAGE_TOKENS_PER_IMAGE,
        "note": "Random-weight demo model for offline tests; its output is noise. It is not an assistant.",
    }
    (out_dir / MARKER_FILE).write_text(json.dumps(marker, indent=2) + "\n")
    return out_dir
