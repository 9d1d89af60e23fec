"""The generation engine's interface (no NATS in it): the Engine protocol, its values, and the settings
shared by the text engine (continuous_batching.py) and the vision engine (vision.py)."""

from __future__ import annotations

import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

import torch
from transformers.generation.configuration_utils import ContinuousBatchingConfig

from services.llm_worker.engine_choice import transformers_choice


@dataclass(frozen=True)
class GenerationParams:
    """Sampling parameters of one request; temperature <= 0 means greedy.

    `seed`: the same seed, prompt and parameters give the same tokens, whatever else shares the batch.
    `stop` texts are not the engine's business: the worker cuts the text (see stops.py) and cancels.
    """

    max_new_tokens: int = 256
    temperature: float = 0.7
    top_p: float = 0.95
    top_k: int = 50
    ignore_eos: bool = False
    stop: tuple[str, ...] = ()
    seed: int | None = None


@dataclass(frozen=True)
class EngineOutput:
    """New tokens of one request since its previous output; the last output has finished=True."""

    request_id: str
    new_token_ids: list[int]
    finished: bool
    finish_reason: str | None  # "stop" | "length" | "cancelled" | "error"
    error: str | None
    prompt_tokens: int
    completion_tokens: int


OutputCallback = Callable[[EngineOutput], None]
# A chat-template message: role, content, and (for a vision model) the sha256 of each attached image.
ChatMessage = dict[str, Any]


@dataclass(frozen=True)
class Prompt:
    """A rendered prompt: token ids, the extra model inputs (pixel values), and which images it holds."""

    input_ids: list[int]
    model_inputs: dict[str, Any] = field(default_factory=dict)
    images_seen: tuple[str, ...] = ()


class Engine(Protocol):
    """What the worker loop needs from a generation engine."""

    supports_images: bool

    def start(self) -> None: ...

    def stop(self) -> None: ...

    def submit(
        self,
        request_id: str,
        prompt: Prompt,
        params: GenerationParams,
        on_output: OutputCallback,
        *,
        background: bool = False,
    ) -> None: ...

    def alive(self) -> bool: ...

    def cancel(self, request_id: str) -> None: ...

    def active(self) -> int: ...

    def build_prompt(
        self, messages: list[ChatMessage], images: Mapping[str, Any] | None = None
    ) -> Prompt: ...


class PromptTooLong(ValueError):
    """The prompt leaves no room for a reply in the model's context."""


def pick_device(name: str) -> torch.device:
    """The torch device for a setting: auto (the first GPU, else Apple's MPS, else the CPU) or a name."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {name!r} asked for, but torch sees no CUDA GPU here")
    return device


def pick_dtype(name: str, device: torch.device) -> torch.dtype:
    """The weights' dtype for a setting: auto is float32 on a CPU, bfloat16 (else float16) on a GPU."""
    if name == "auto":
        bf16 = device.type == "cuda" and torch.cuda.is_bf16_supported()
        name = transformers_choice("auto", "none", device_type=device.type, bf16=bf16).dtype
    return {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[name]


def load_model(model_class: Any, path: str, config: EngineConfig) -> Any:
    """A model from a local directory (never from the hub), on the configured device and dtype, in eval
    mode; the torch threads set first when the config names them."""
    if config.num_threads is not None:
        torch.set_num_threads(config.num_threads)
    device = pick_device(config.device)
    model = model_class.from_pretrained(
        path,
        local_files_only=True,
        attn_implementation=config.attn_implementation,
        dtype=pick_dtype(config.dtype, device),
        device_map=device,  # loaded straight onto it
    )
    return quantize(model.eval(), config.quantization)


def quantize(model: Any, quantization: str) -> Any:
    """`int8`: the Linear layers' weights as int8, their activations quantised per call (torch's dynamic
    quantisation, CPU only, float32 weights); `none`: the model as it is."""
    if quantization == "none":
        return model
    if quantization != "int8":
        raise ValueError(f"unknown quantization {quantization!r}")
    if model.device.type != "cpu" or model.dtype != torch.float32:
        raise ValueError("int8 dynamic quantisation needs a float32 model on a CPU")
    from torch.ao.quantization import quantize_dynamic

    with warnings.catch_warnings():
        # torch 2.13 warns that torch.ao quantisation will go (torchao takes over); they work here, and
        # the tests of the CPU default fail the day they do not.
        warnings.filterwarnings("ignore", ".*quantized tensor creation functions", UserWarning)
        warnings.filterwarnings("ignore", "torch.ao.quantization is deprecated", DeprecationWarning)
        return quantize_dynamic(model, {torch.nn.Linear}, dtype=torch.qint8, inplace=True)


def text_messages(messages: list[ChatMessage]) -> list[dict[str, str]]:
    """Messages with their text only (what a text-only model's chat template expects)."""
    return [{"role": m["role"], "content": m["content"]} for m in messages]


@dataclass(frozen=True)
class EngineConfig:
    """Sizing of the paged KV cache and the CPU threads used by the continuous batching engine."""

    # Measured with bench/engine_baseline.py (16 concurrent replies of 128 tokens, 3.4M-param demo Llama,
    # 2-core CPU): a small paged cache keeps each step's tensors small. 64 blocks x 32 tokens = 2048 cached
    # tokens; num_blocks/max_batch_tokens = None let transformers size the cache from 60% of free RAM on CPU,
    # which ran 2-10x slower. 128/256 blocks, page 16/64 and 256/1024 batch tokens were within noise.
    num_blocks: int | None = 256
    page_size: int = 32
    max_batch_tokens: int | None = 512
    # flash attention does not exist on CPU; "paged|eager" was within noise of "sdpa".
    attn_implementation: str = "sdpa"
    # torch intra-op threads. None keeps torch's default (one per core). Several threads collapse 2-10x
    # when another busy process takes a core, while 1 thread degrades gently: hence small_step_threads below,
    # and 1 here for a worker that shares a small machine with busy neighbours. The worker's default is
    # all cores for big steps and 1 for small ones (WorkerSettings).
    num_threads: int | None = 1
    # A step of fewer query tokens than `small_step_tokens` (decoding a few replies) runs on
    # `small_step_threads`; bigger steps (a prompt, many replies) on num_threads. On a 2-core CPU one
    # decode row is faster on 1 thread than on 2 (a matrix-vector product does not repay the threads'
    # sync), while 16 rows or a prompt are ~25-35% faster on 2. 0 turns the switch off.
    small_step_threads: int = 0
    small_step_tokens: int = 8
    # Where the weights live and in what precision; "auto": the first GPU if there is one (else the CPU),
    # float32 on a CPU (the fastest there with sound answers), bfloat16 on a GPU that has it, else float16.
    device: str = "auto"
    dtype: str = "auto"
    # "int8": torch's dynamic int8 quantisation of the Linear layers (CPU, float32 weights); "none": none.
    quantization: str = "none"
    seed: int | None = None
    # Foreground requests first (priority.py): a waiting or prefilling foreground request gets a step of its
    # own while background ones (batch lines) pause; False: transformers' FIFO for every request.
    priority: bool = True
    extra: dict[str, Any] = field(default_factory=dict)  # passed through to ContinuousBatchingConfig

    def to_cb_config(self) -> ContinuousBatchingConfig:
        """Build the transformers ContinuousBatchingConfig for this engine."""
        return ContinuousBatchingConfig(
            num_blocks=self.num_blocks,
            page_size=self.page_size,
            max_batch_tokens=self.max_batch_tokens,
            per_request_processors=True,
            auto_switch_to_flash=False,
            seed=self.seed,
            **self.extra,
        )
