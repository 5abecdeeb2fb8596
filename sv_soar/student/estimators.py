"""Inner-loop advantage estimators over one group of completions of the same prompt (docs/design.md §4).

Each takes rewards of shape [G] (one group) or [B, G] (B prompts, G completions each) and returns
advantages of the same shape; statistics are taken over the last dimension only, so prompts never
share a baseline. All three are critic-free: the other completions of the prompt are the baseline.
"""

from __future__ import annotations

from typing import Callable

import torch

Estimator = Callable[[torch.Tensor], torch.Tensor]


def _check_group(rewards: torch.Tensor) -> torch.Tensor:
    if rewards.dim() not in (1, 2):
        raise ValueError(f"rewards must have shape [G] or [B, G], got {tuple(rewards.shape)}")
    if rewards.shape[-1] < 2:
        raise ValueError(f"a group needs at least 2 completions to form a baseline, got {rewards.shape[-1]}")
    return rewards.float()


def rloo_advantages(rewards: torch.Tensor) -> torch.Tensor:
    """REINFORCE Leave-One-Out (Kool et al. 2019; Ahmadian et al. 2024, arXiv 2402.14740), as SOAR's inner loop.

    A_i = r_i − (1/(G−1)) Σ_{j≠i} r_j  =  G/(G−1) · (r_i − mean(r)).
    The baseline of completion i excludes i itself, so the estimate stays unbiased.
    """
    r = _check_group(rewards)
    group_size = r.shape[-1]
    leave_one_out_mean = (r.sum(dim=-1, keepdim=True) - r) / (group_size - 1)
    return r - leave_one_out_mean


def grpo_advantages(rewards: torch.Tensor, eps: float = 1e-4) -> torch.Tensor:
    """Group-normalised advantage of GRPO (Shao et al. 2024, DeepSeekMath, arXiv 2402.03300 §4.1.2).

    A_i = (r_i − mean(r)) / (std(r) + eps), std the unbiased sample standard deviation over the group.
    This is how TRL's GRPOTrainer computes it (std with Bessel's correction, eps = 1e-4); the GRPO
    trainer of verifiers 0.1.x, which SV-Bench's hosted recipe uses, is derived from it. A group
    whose rewards are all equal gets zero advantage.
    """
    r = _check_group(rewards)
    centred = r - r.mean(dim=-1, keepdim=True)
    return centred / (r.std(dim=-1, keepdim=True) + eps)


def maxrl_advantages(rewards: torch.Tensor) -> torch.Tensor:
    """Maximum-likelihood RL advantage (MaxRL, arXiv 2602.02710).

    A_i = (r_i − mean(r)) / mean(r), and A_i = 0 for every completion of a group whose mean is 0.
    Dividing by the group's success rate p̂ weights a prompt by 1/p̂, so the gradient estimates that of
    log p (maximum likelihood of success) rather than of p: rarely solved prompts count more.
    Defined for non-negative rewards (a success indicator or probability); a negative reward makes
    the ratio meaningless, so it is rejected rather than silently mis-weighted.
    """
    r = _check_group(rewards)
    if (r < 0).any():
        raise ValueError(
            "MaxRL needs non-negative rewards (success probabilities); train with reward='correctness' "
            "when the task's full rubric can go negative"
        )
    mean = r.mean(dim=-1, keepdim=True)
    safe_mean = torch.where(mean > 0, mean, torch.ones_like(mean))
    return torch.where(mean > 0, (r - mean) / safe_mean, torch.zeros_like(r))


ESTIMATORS: dict[str, Estimator] = {
    "rloo": rloo_advantages,
    "grpo": grpo_advantages,
    "maxrl": maxrl_advantages,
}


def get_estimator(name: str) -> Estimator:
    try:
        return ESTIMATORS[name]
    except KeyError:
        raise ValueError(f"unknown estimator {name!r}: expected one of {sorted(ESTIMATORS)}") from None
