"""The offline demo vision-language model loads with the Auto classes, expands images and generates."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch
from PIL import Image
from transformers import AutoModelForImageTextToText, AutoProcessor
from transformers.generation.streamers import BaseStreamer

from services.llm_worker.demo_model import MARKER_FILE
from services.llm_worker.demo_vlm import IMAGE_TOKEN, IMAGE_TOKENS_PER_IMAGE, make_demo_vlm

IMAGE_TOKEN_ID = 2048  # appended after the 2048-entry byte-level BPE vocabulary
PARAMETERS = 3_589_888


class CountingStreamer(BaseStreamer):
    """Records every chunk generate() pushes: first the prompt, then one chunk per new token."""

    def __init__(self) -> None:
        self.chunks: list[torch.Tensor] = []
        self.ended = False

    def put(self, value: torch.Tensor) -> None:
        self.chunks.append(value)

    def end(self) -> None:
        self.ended = True


@pytest.fixture(scope="module")
def vlm_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_demo_vlm(tmp_path_factory.mktemp("models") / "demo-vlm")


@pytest.fixture(scope="module")
def processor(vlm_dir: Path) -> Any:
    return AutoProcessor.from_pretrained(vlm_dir)


@pytest.fixture(scope="module")
def model(vlm_dir: Path) -> Any:
    return AutoModelForImageTextToText.from_pretrained(vlm_dir)


def _images() -> list[Image.Image]:
    return [Image.new("RGB", (640, 480), (200, 10, 10)), Image.new("RGBA", (50, 200), (0, 200, 0, 128))]


def _two_image_messages() -> list[dict[str, Any]]:
    return [
        {"role": "system", "content": "You describe pictures."},
        {
            "role": "user",
            "content": [
                {"type": "image"},
                {"type": "text", "text": "what is this? and this:"},
                {"type": "image"},
            ],
        },
    ]


def _image_token_runs(input_ids: torch.Tensor) -> list[int]:
    """Lengths of the consecutive runs of the image token in a 1-D id sequence."""
    runs: list[int] = []
    previous = False
    for token in input_ids.tolist():
        is_image = token == IMAGE_TOKEN_ID
        if is_image and previous:
            runs[-1] += 1
        elif is_image:
            runs.append(1)
        previous = is_image
    return runs


def test_marker_config_and_tokens(vlm_dir: Path, processor: Any, model: Any) -> None:
    marker = json.loads((vlm_dir / MARKER_FILE).read_text())
    assert marker["chatbus_demo"] is True
    assert marker["kind"] == "vision-language"
    assert marker["parameters"] == PARAMETERS == sum(p.numel() for p in model.parameters())
    assert type(model).__name__ == "LlavaForConditionalGeneration"
    assert type(processor).__name__ == "LlavaProcessor"
    assert IMAGE_TOKENS_PER_IMAGE == 16
    assert processor.image_token == IMAGE_TOKEN == "<image>"
    assert processor.image_token_id == IMAGE_TOKEN_ID == model.config.image_token_id
    assert processor.tokenizer.convert_tokens_to_ids(IMAGE_TOKEN) == IMAGE_TOKEN_ID
    assert processor.tokenizer.encode(IMAGE_TOKEN, add_special_tokens=False) == [IMAGE_TOKEN_ID]
    im_end = processor.tokenizer.convert_tokens_to_ids("<|im_end|>")
    assert model.generation_config.eos_token_id == [im_end, processor.tokenizer.pad_token_id]
    assert processor.tokenizer.eos_token == "<|im_end|>"
    assert processor.tokenizer.padding_side == "left"


def test_chat_template_renders_image_parts_and_plain_strings(processor: Any) -> None:
    messages = _two_image_messages()
    expected = (
        "<|im_start|>system\nYou describe pictures.<|im_end|>\n"
        "<|im_start|>user\n<image>what is this? and this:<image><|im_end|>\n"
        "<|im_start|>assistant\n"
    )
    assert processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False) == expected
    assert (
        processor.tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
        == expected
    )


def test_processor_expands_each_image_to_its_tokens(processor: Any) -> None:
    content = [
        {"type": "image"},
        {"type": "text", "text": "and"},
        {"type": "image"},
        {"type": "text", "text": "and"},
        {"type": "image"},
    ]
    messages = [{"role": "user", "content": content}]
    prompt = processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    assert prompt.count(IMAGE_TOKEN) == 3
    images = _images() + [Image.new("L", (7, 9), 99)]
    inputs = processor(text=prompt, images=images, return_tensors="pt")
    assert tuple(inputs["pixel_values"].shape) == (3, 3, 32, 32)
    assert _image_token_runs(inputs["input_ids"][0]) == [16, 16, 16]
    assert int((inputs["input_ids"] == IMAGE_TOKEN_ID).sum()) == 3 * IMAGE_TOKENS_PER_IMAGE


def test_generate_with_two_images_and_a_streamer(processor: Any, model: Any) -> None:
    prompt = processor.apply_chat_template(_two_image_messages(), add_generation_prompt=True, tokenize=False)
    inputs = processor(text=prompt, images=_images(), return_tensors="pt")
    assert tuple(inputs["pixel_values"].shape) == (2, 3, 32, 32)
    assert _image_token_runs(inputs["input_ids"][0]) == [16, 16]
    prompt_len = inputs["input_ids"].shape[1]
    streamer = CountingStreamer()
    torch.manual_seed(0)
    out = model.generate(**inputs, max_new_tokens=32, do_sample=True, streamer=streamer)
    new_tokens = out.shape[1] - prompt_len
    assert 1 <= new_tokens <= 32
    assert torch.equal(out[0, :prompt_len], inputs["input_ids"][0])
    assert streamer.ended
    assert torch.equal(streamer.chunks[0].reshape(-1), inputs["input_ids"][0])
    assert len(streamer.chunks) == 1 + new_tokens
    assert isinstance(processor.decode(out[0, prompt_len:], skip_special_tokens=True), str)


def test_apply_chat_template_tokenize_with_embedded_images(processor: Any, model: Any) -> None:
    image_a, image_b = _images()
    messages = [
        {
            "role": "user",
            "content": [
                {"type": "image", "image": image_a},
                {"type": "text", "text": "compare"},
                {"type": "image", "image": image_b},
            ],
        }
    ]
    inputs = processor.apply_chat_template(
        messages, add_generation_prompt=True, tokenize=True, return_dict=True, return_tensors="pt"
    )
    assert tuple(inputs["pixel_values"].shape) == (2, 3, 32, 32)
    assert _image_token_runs(inputs["input_ids"][0]) == [16, 16]
    out = model.generate(**inputs, max_new_tokens=4, do_sample=True)
    assert out.shape[1] > inputs["input_ids"].shape[1]


def test_batch_of_an_image_prompt_and_a_text_prompt_is_left_padded(processor: Any, model: Any) -> None:
    with_image = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "a"}]}]
    text_only = [{"role": "user", "content": "a much longer prompt without any picture in it at all"}]
    prompts = [
        processor.apply_chat_template(m, add_generation_prompt=True, tokenize=False)
        for m in (with_image, text_only)
    ]
    inputs = processor(text=prompts, images=[_images()[0]], padding=True, return_tensors="pt")
    assert tuple(inputs["pixel_values"].shape) == (1, 3, 32, 32)
    assert _image_token_runs(inputs["input_ids"][0]) == [16]
    assert _image_token_runs(inputs["input_ids"][1]) == []
    shorter = int(inputs["attention_mask"].sum(dim=1).argmin())
    assert inputs["attention_mask"][shorter, 0] == 0 and inputs["attention_mask"][shorter, -1] == 1
    out = model.generate(**inputs, max_new_tokens=4, do_sample=True)
    assert out.shape[0] == 2 and out.shape[1] > inputs["input_ids"].shape[1]


def test_text_only_prompt_generates(processor: Any, model: Any) -> None:
    messages = [{"role": "user", "content": "hello there"}]
    prompt = processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    assert prompt == "<|im_start|>user\nhello there<|im_end|>\n<|im_start|>assistant\n"
    inputs = processor(text=prompt, return_tensors="pt")
    assert "pixel_values" not in inputs
    assert IMAGE_TOKEN_ID not in inputs["input_ids"][0].tolist()
    torch.manual_seed(0)
    out = model.generate(**inputs, max_new_tokens=32, do_sample=True)
    assert 1 <= out.shape[1] - inputs["input_ids"].shape[1] <= 32


def test_build_is_deterministic_per_seed(vlm_dir: Path, tmp_path: Path) -> None:
    again = make_demo_vlm(tmp_path / "again", seed=0)
    other = make_demo_vlm(tmp_path / "other", seed=1)
    weights = (vlm_dir / "model.safetensors").read_bytes()
    assert (again / "model.safetensors").read_bytes() == weights
    assert (other / "model.safetensors").read_bytes() != weights
    assert (again / "tokenizer.json").read_bytes() == (vlm_dir / "tokenizer.json").read_bytes()
