"""Per-request sampling for the continuous batching manager: fast top-k/top-p on the CPU, and seeds.

transformers' per-request top-k and top-p warpers each sort every row of the vocabulary at every step
(torch.sort over [rows, vocab]): 63 ms a step for 16 rows of SmolLM2's 49k vocabulary on one core,
as long as the model's own forward pass. Top-k only needs the k best (torch.topk), and after top-k only
those few are left for top-p, so both are done here on the k best; a row without top-k still takes the
full sort. On a GPU (where the step may be a captured CUDA graph, with no branching on data) the
transformers versions run unchanged.
"""

from __future__ import annotations

from typing import Any

import torch
from transformers.generation.continuous_batching.cb_logits_processors import (
    ContinuousBatchingLogitsProcessor,
    ContinuousBatchingLogitsProcessorList,
    ContinuousBatchingTopKLogitsWarper,
    ContinuousBatchingTopPLogitsWarper,
)
from transformers.generation.continuous_batching.requests import FutureRequestState, RequestState


class FastTopK(ContinuousBatchingTopKLogitsWarper):
    """Per-request top-k by torch.topk of the largest k in the batch (the same scores out as a full sort)."""

    def __call__(self, scores: torch.Tensor, tensor_arg: torch.Tensor) -> torch.Tensor:
        if scores.device.type != "cpu":
            return super().__call__(scores, tensor_arg)
        top_k = tensor_arg[: scores.size(0)].to(torch.int64).clamp(1, scores.size(-1))  # shape [B]
        largest = torch.topk(scores, int(top_k.max()), dim=-1, sorted=True).values  # [B, K] descending
        thresholds = largest.gather(-1, (top_k - 1).unsqueeze(-1))  # each row's k-th largest
        return scores.masked_fill(scores < thresholds, self.filter_value)


class FastTopP(ContinuousBatchingTopPLogitsWarper):
    """Per-request top-p over the tokens still possible (after top-k: a few), not the whole vocabulary."""

    def __call__(self, scores: torch.Tensor, tensor_arg: torch.Tensor) -> torch.Tensor:
        possible = int(scores.isfinite().sum(dim=-1).max()) if scores.device.type == "cpu" else 0
        if not 0 < possible * 4 < scores.size(-1):  # most of the vocabulary left: a full sort is as cheap
            return super().__call__(scores, tensor_arg)
        top_p = tensor_arg[: scores.size(0)].view(dtype=torch.float32)  # shape [B]
        # Every possible token is among these; the rest are -inf, so the softmax over them is the whole one.
        largest, indices = torch.topk(scores, possible, dim=-1, sorted=True)
        ascending, indices = largest.flip(-1), indices.flip(-1)  # as the transformers warper sorts them
        cumulative = ascending.softmax(dim=-1).cumsum(dim=-1)
        remove = cumulative <= (1 - top_p).unsqueeze(-1)
        remove[..., -self.min_tokens_to_keep :] = False
        mask = torch.zeros_like(scores, dtype=torch.bool).scatter_(-1, indices, remove)
        return scores.masked_fill(mask, self.filter_value)


_FAST: dict[type, type[ContinuousBatchingLogitsProcessor]] = {
    ContinuousBatchingTopKLogitsWarper: FastTopK,
    ContinuousBatchingTopPLogitsWarper: FastTopP,
}


def use_fast_warpers(processors: ContinuousBatchingLogitsProcessorList) -> None:
    """Swap a manager's per-request top-k/top-p warpers (before it starts) for the fast ones, in place."""
    for i, processor in enumerate(processors.logits_processor):
        fast = _FAST.get(type(processor))
        if fast is not None:
            replacement = fast.__new__(fast)
            replacement.__dict__.update(processor.__dict__)  # the same defaults: top_k/top_p, filter value
            processors.logits_processor[i] = replacement


def use_fast_sampling(runner: Any) -> None:
    """Draw each row's token among the tokens still possible, not over the whole vocabulary (CPU only).

    The manager's sampler takes a softmax and a torch.multinomial over every row's full vocabulary: 17 ms a
    step for 16 rows of SmolLM2's 49k on one core, although top-k left ~50 tokens a row. Sampling from the
    softmax of those few draws from exactly the same distribution (the rest have probability 0).
    """
    original = runner._sample

    def sample(scores: torch.Tensor, output_ids: torch.Tensor) -> None:
        if scores.device.type != "cpu" or not runner.do_sample or runner.return_logprobs:
            return original(scores, output_ids)
        rows = scores[0]  # [num_logits, vocab]
        possible = int(rows.isfinite().sum(dim=-1).max())
        if not 0 < possible * 4 < rows.size(-1):  # most of the vocabulary left: nothing to save
            return original(scores, output_ids)
        # A row with fewer possible tokens gets -inf among its `possible` best: probability 0 after softmax.
        values, indices = torch.topk(rows, possible, dim=-1, sorted=False)
        picks = torch.multinomial(values.softmax(dim=-1), num_samples=1)
        tokens = indices.gather(1, picks).squeeze(-1)
        output_ids[0, : tokens.size(0)].copy_(tokens)
        return None

    runner._sample = sample


# Seeded sampling. The manager samples every row of a batch with one torch.multinomial on the global
# generator, so a request's draws depend on what else is in the batch. A seeded row instead picks its token
# by Gumbel-max (argmax of scores + Gumbel noise: an exact sample of softmax(scores)) with noise that is a
# pure function of (seed, position, token id), and keeps only that token, so the multinomial must return it.
# The noise is a counter-based hash in tensor ops: no per-row generators, the same noise on any device.

SEED_KWARG = "seed"
_M32 = 0xFFFF_FFFF
_M64 = 0xFFFF_FFFF_FFFF_FFFF


def _splitmix64(x: int) -> int:
    x = (x + 0x9E37_79B9_7F4A_7C15) & _M64
    x = ((x ^ (x >> 30)) * 0xBF58_476D_1CE4_E5B9) & _M64
    x = ((x ^ (x >> 27)) * 0x94D0_49BB_1331_11EB) & _M64
    return x ^ (x >> 31)


def step_key(seed: int, position: int) -> int:
    """The noise key of a seeded request's token at `position` (prompt included): 31 bits, never 0."""
    return (_splitmix64(_splitmix64(seed & _M64) ^ position) >> 33) or 1  # 0 marks an unseeded row


def _mul32(x: torch.Tensor, c: int) -> torch.Tensor:
    """x * c mod 2**32 for int64 x in [0, 2**32), in halves so that nothing overflows int64."""
    return (x * (c & 0xFFFF) + (((x * (c >> 16)) & 0xFFFF) << 16)) & _M32


def _mix32(x: torch.Tensor) -> torch.Tensor:
    """lowbias32 (C. Wellons), a 32-bit integer hash, on int64 values in [0, 2**32)."""
    x = x ^ (x >> 16)
    x = _mul32(x, 0x7FEB_352D)
    x = x ^ (x >> 15)
    x = _mul32(x, 0x846C_A68B)
    return x ^ (x >> 16)


def gumbel_noise(keys: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
    """Gumbel(0, 1) noise for each (key, token id) pair (broadcast): a pure function of the pair."""
    x = _mix32((_mix32(keys.to(torch.int64) & _M32) + _mix32(tokens.to(torch.int64))) & _M32)
    uniform = ((x >> 8).to(torch.float32) + 0.5) * 2.0**-24  # in (0, 1): the logs stay finite
    return -torch.log(-torch.log(uniform))


def _choose(scores: torch.Tensor, keys: torch.Tensor) -> torch.Tensor:
    """Each row's Gumbel-max token; hashes only the tokens top-k/top-p left (often 50 of 150k)."""
    possible = scores.isfinite()
    if int(possible.sum()) * 8 > possible.numel():  # most are left: hashing them all in place is cheaper
        return _choose_dense(scores, keys)
    rows, tokens = possible.nonzero(as_tuple=True)
    perturbed = torch.full_like(scores, -float("inf"))
    perturbed[rows, tokens] = scores[rows, tokens] + gumbel_noise(keys[rows], tokens)
    return perturbed.argmax(dim=-1)


def _choose_dense(scores: torch.Tensor, keys: torch.Tensor) -> torch.Tensor:
    """Each row's Gumbel-max token, in fixed shapes (what a CUDA graph can capture); same as _choose."""
    tokens = torch.arange(scores.size(-1), device=scores.device)
    return (scores + gumbel_noise(keys.unsqueeze(-1), tokens)).argmax(dim=-1)


def _only(scores: torch.Tensor, choice: torch.Tensor) -> torch.Tensor:
    """Scores that leave each row nothing but its chosen token (0 there, -inf elsewhere)."""
    return torch.full_like(scores, -float("inf")).scatter_(-1, choice.unsqueeze(-1), 0.0)


def _key_of(state: RequestState) -> int:
    seed = state.logit_processor_kwargs.get(SEED_KWARG)
    # position_offset already counts this step's query: it is the position of the token being sampled. It
    # survives chunked prefill, prefix sharing and offloading, unlike a count of outputs received.
    return 0 if seed is None else step_key(seed, state.position_offset)


class SeededSampling(ContinuousBatchingLogitsProcessor):
    """Per-request processor: rows whose request has a seed sample by seeded Gumbel-max; others pass."""

    supported_kwargs: dict[str, type] = {SEED_KWARG: int}
    ignored_kwargs: tuple[str, ...] = ()

    def fill_defaults(self, int32_tensor: torch.Tensor) -> None:
        """Rows default to key 0: unseeded."""
        int32_tensor.fill_(0)

    def prepare_tensor_args(self, requests_with_new_token: list[FutureRequestState]) -> torch.Tensor:
        """One noise key per row that samples a token this step."""
        keys = [_key_of(request.state) for request in requests_with_new_token]
        return torch.tensor(keys, dtype=torch.int32, device="cpu")

    def __call__(self, scores: torch.Tensor, tensor_arg: torch.Tensor) -> torch.Tensor:
        """Replace the scores of seeded rows by their one chosen token."""
        keys = tensor_arg[: scores.size(0)]
        if scores.device.type != "cpu":  # may be captured in a CUDA graph: no branching on data
            seeded = (keys != 0).unsqueeze(-1)
            return torch.where(seeded, _only(scores, _choose_dense(scores, keys)), scores)
        rows = keys.nonzero().squeeze(-1)
        if rows.numel() == 0:  # the usual step: nobody asked for a seed
            return scores
        seeded_scores = scores[rows]
        return scores.index_copy(0, rows, _only(seeded_scores, _choose(seeded_scores, keys[rows])))


def enable_seeded_sampling(processors: ContinuousBatchingLogitsProcessorList) -> None:
    """Register SeededSampling with a manager's processors (before it starts), last, once."""
    if any(isinstance(p, SeededSampling) for p in processors.logits_processor):
        return
    sampler = SeededSampling()
    # Last: it must see the scores after temperature, top-k and top-p. Each per-request processor owns one
    # row of the manager's argument storage, sized from tensors_required when the batch processor is built.
    processors.logits_processor.append(sampler)
    processors.tensors_required += 1
    processors.supported_keys.update(sampler.supported_kwargs)
    processors.ignored_keys.update(sampler.ignored_kwargs)
    processors.do_processing = True
