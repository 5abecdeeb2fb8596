"""How TransformersEngine picks each row's next token: greedy argmax, or a temperature/top-p draw by inverse
CDF from uniforms pre-drawn per row from (seed, prompt index, sample index), so a seeded row's sample does
not depend on which rows share its micro-batch."""

from __future__ import annotations

import hashlib

import torch

from sv_soar.generation import SamplingParams

# next_tokens holds per row ~6 vocabulary-sized buffers: fp32 probs, sorted probs, int64 order, cumsum, mask
SAMPLER_BYTES_PER_VOCAB_ENTRY = 32


def check_params(params: SamplingParams) -> None:
    """Refuse, naming the field, sampling parameters the engine cannot honour."""
    if params.max_new_tokens < 1:
        raise ValueError(f"max_new_tokens must be >= 1, got {params.max_new_tokens}")
    if params.temperature < 0:
        raise ValueError(f"temperature must be >= 0, got {params.temperature}")
    if not 0 < params.top_p <= 1:
        raise ValueError(f"top_p must be in (0, 1], got {params.top_p}")
    if params.n < 1:
        raise ValueError(f"n must be >= 1, got {params.n}")


def row_uniforms(base_seed: int, prompt_index: int, sample_index: int, count: int) -> torch.Tensor:
    """The row's own uniform draws, one per step, from (seed, prompt index, sample index)."""
    key = f"{base_seed}:{prompt_index}:{sample_index}".encode()
    seed = int.from_bytes(hashlib.blake2b(key, digest_size=8).digest(), "little") & (2**63 - 1)
    return torch.rand(count, generator=torch.Generator().manual_seed(seed))


def next_tokens(logits: torch.Tensor, params: SamplingParams, uniforms: torch.Tensor | None) -> torch.Tensor:
    """Greedy argmax, or a temperature/top-p draw by inverse CDF from one uniform per row."""
    if uniforms is None:
        return logits.argmax(dim=-1)
    probs = torch.softmax(logits.float() / params.temperature, dim=-1)
    order = None
    if params.top_p < 1:
        probs, order = probs.sort(dim=-1, descending=True)
        probs = probs * ((probs.cumsum(dim=-1) - probs) < params.top_p)  # nucleus; keeps the top token
    cdf = probs.cumsum(dim=-1)
    target = uniforms[:, None] * cdf[:, -1:]
    index = torch.searchsorted(cdf, target, right=True).clamp_(max=cdf.shape[-1] - 1)
    if order is not None:
        index = order.gather(-1, index)
    return index[:, 0]
