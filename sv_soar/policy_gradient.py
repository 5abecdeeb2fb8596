"""The policy-gradient step the student and the teacher share: what one step computes (docs/design.md §4). The
student's inner loop takes it in sv_soar.student.trainer (every sampled token of its groups, advantages from its
estimator), the teacher's update in sv_soar.teacher_policy (the g·n rollouts of a step, RLOO advantages).

    log π      group_logprobs: every token of a group's completions, the prompt run once (its KV cache shared)
    KL         kl_penalty (k2, the gradient) and kl_k3 (the logged estimate), against `reference_logprobs`
    lr         learning_rate_at: linear warmup, then cosine to 0
    the step   policy_gradient_step: loss = Σ_{b,i,t} [ −A_{b,i} · log π(y_t) + β · k2_t ] / Σ_{b,i} |y_{b,i}|
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Iterator, Sequence

import torch


class StudentTrainingError(RuntimeError):
    """A student run diverged (non-finite reward, loss, gradient or weights); the caller counts it."""



def group_logprobs(model, prompt_ids: Sequence[int], completion_ids: Sequence[Sequence[int]],
                   temperature: float, *, shared_prefix: bool = True) -> torch.Tensor:
    """log π(y_t | x, y_<t) of every token of k completions of ONE prompt, shape [k, C], 0 at padding.

    The prompt is run once and its KV cache repeated k times, so the k completions cost only their own
    tokens (an E1 prompt is ~120 tokens against ~45 for a JSON answer: 2.2x fewer tokens at group 4,
    3.5x at SOAR's 32). Gradients flow through the shared cache into the prompt pass, so this is the
    same computation as k separate forwards. Completions are right-padded, which a causal model never
    attends to from a real token, so no attention mask is needed. Logits are divided by the sampling
    temperature: the policy being optimised is the one that sampled.

    shared_prefix=False runs each completion behind its own copy of the prompt, with no KV cache: what
    gradient checkpointing needs (transformers turns the cache off under it), at the cost of the prompt
    tokens k times over.
    """
    if not shared_prefix:
        return _unshared_group_logprobs(model, prompt_ids, completion_ids, temperature)
    device = next(model.parameters()).device
    k = len(completion_ids)
    width = max(len(ids) for ids in completion_ids)
    prompt = torch.tensor([list(prompt_ids)], device=device)
    out = model(input_ids=prompt, use_cache=width > 1, logits_to_keep=1)
    logits = out.logits[:, -1:].float().expand(k, 1, -1)  # the last prompt position predicts token 0
    targets = torch.tensor([list(ids) + [0] * (width - len(ids)) for ids in completion_ids], device=device)
    if width > 1:
        cache_name = "cache" if getattr(out, "cache", None) is not None else "past_key_values"
        cache = getattr(out, cache_name)
        cache.batch_repeat_interleave(k)
        positions = torch.arange(len(prompt_ids), len(prompt_ids) + width - 1, device=device).expand(k, -1)
        rest = model(input_ids=targets[:, :-1], position_ids=positions, use_cache=True, **{cache_name: cache})
        logits = torch.cat([logits, rest.logits.float()], dim=1)
    logprobs = torch.log_softmax(logits / temperature, dim=-1).gather(-1, targets.unsqueeze(-1)).squeeze(-1)
    mask = torch.tensor([[1.0] * len(ids) + [0.0] * (width - len(ids)) for ids in completion_ids], device=device)
    return logprobs * mask


def _unshared_group_logprobs(model, prompt_ids: Sequence[int], completion_ids: Sequence[Sequence[int]],
                             temperature: float) -> torch.Tensor:
    """group_logprobs without the shared prompt cache: k rows of prompt + completion, right-padded."""
    device = next(model.parameters()).device
    width = max(len(ids) for ids in completion_ids)
    prompt = list(prompt_ids)
    rows = torch.tensor([prompt + list(ids) + [0] * (width - len(ids)) for ids in completion_ids], device=device)
    # positions P-1 .. P+width-2 predict the completion's tokens: keep the last width+1 logits, drop the final one
    out = model(input_ids=rows, use_cache=False, logits_to_keep=width + 1)
    logits = out.logits[:, :-1].float()
    targets = rows[:, len(prompt):]
    logprobs = torch.log_softmax(logits / temperature, dim=-1).gather(-1, targets.unsqueeze(-1)).squeeze(-1)
    mask = torch.tensor([[1.0] * len(ids) + [0.0] * (width - len(ids)) for ids in completion_ids], device=device)
    return logprobs * mask


@contextlib.contextmanager
def _activation_checkpointing(policy, enabled: bool) -> Iterator[None]:
    """transformers' gradient checkpointing on the shared base model for the block, then off again (the
    rollouts that follow need the KV cache it disables). Non-reentrant: the frozen base's inputs need
    no requires_grad for the LoRA weights inside a checkpointed layer to get their gradient."""
    if not enabled:
        yield
        return
    base = policy.get_base_model() if hasattr(policy, "get_base_model") else policy
    # transformers 5.2x renamed it activation_checkpointing_* (the old names warn); older 5.x have only the old
    if hasattr(base, "activation_checkpointing_enable"):
        base.activation_checkpointing_enable({"use_reentrant": False})
        disable = base.activation_checkpointing_disable
    else:
        base.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        disable = base.gradient_checkpointing_disable
    try:
        yield
    finally:
        disable()


def _policy_logprobs(policy, prompt_ids: Sequence[int], completion_ids: Sequence[Sequence[int]],
                     temperature: float, gradient_checkpointing: bool) -> torch.Tensor:
    """group_logprobs, under gradient checkpointing when asked. Switching it off after the forward is safe:
    the backward recomputes each layer through the function the forward saved, whatever the flag says then."""
    with _activation_checkpointing(policy, gradient_checkpointing):
        return group_logprobs(policy, prompt_ids, completion_ids, temperature, shared_prefix=not gradient_checkpointing)


@contextlib.contextmanager
def _reference_model(policy, reference) -> Iterator[torch.nn.Module]:
    """The model that computes π_ref for the block (`reference_logprobs` says which): a frozen adapter on `policy`
    made active, a frozen model, or `policy` with its adapters disabled."""
    if isinstance(reference, str):
        active = policy.active_adapter
        policy.set_adapter(reference, inference_mode=True)
        try:
            yield policy
        finally:
            policy.set_adapter(active)  # the student's weights trainable again, the reference's frozen
    elif reference is not None:
        yield reference
    else:
        with policy.disable_adapter():
            yield policy


def reference_logprobs(policy, reference, prompt_ids: Sequence[int], completion_ids: Sequence[Sequence[int]],
                       temperature: float, gradient_checkpointing: bool = False,
                       cache: dict | None = None) -> torch.Tensor:
    """log π_ref of the completions, no gradient. `reference` is one of: the name of a frozen adapter on `policy`
    (a LoRA student's starting weights, `add_reference_adapter`); a frozen model (full fine-tuning: the student's
    starting weights, or the initial teacher); None, `policy` with its adapters disabled (the base model: a LoRA
    student that starts from it, or the LoRA teacher's initial policy).

    `cache`: a dict kept for as long as `reference` does not change (a student run). Where every completion is one
    token long (the mechanism task's answers), π_ref's distribution at the prompt's end is all the KL needs; it is
    computed once a prompt and read from the cache after that, the same numbers as a forward each time (the
    forward `group_logprobs` runs, on the same prompt and weights; not under gradient checkpointing, whose forward
    differs). A 64-problem student run of 80 steps saves 79 of every 80 reference forwards, a quarter of its step on a
    CPU."""
    with torch.no_grad():
        if cache is not None and not gradient_checkpointing and all(len(ids) == 1 for ids in completion_ids):
            key = (tuple(prompt_ids), temperature)
            if key not in cache:
                with _reference_model(policy, reference) as model:
                    device = next(model.parameters()).device
                    logits = model(input_ids=torch.tensor([list(prompt_ids)], device=device), use_cache=False,
                                   logits_to_keep=1).logits[:, -1].float()
                    cache[key] = torch.log_softmax(logits / temperature, dim=-1)[0].cpu()
            first = torch.tensor([ids[0] for ids in completion_ids])
            device = next(policy.parameters()).device
            return cache[key][first].unsqueeze(1).to(device)
        with _reference_model(policy, reference) as model:
            return _policy_logprobs(model, prompt_ids, completion_ids, temperature, gradient_checkpointing)


def kl_k3(logprobs: torch.Tensor, ref_logprobs: torch.Tensor) -> torch.Tensor:
    """Per-token KL(π‖π_ref) estimate k3 = (ρ − 1) − log ρ with ρ = π_ref/π (Schulman 2020,
    "Approximating KL Divergence", http://joschu.net/blog/kl-approx.html): unbiased and never negative,
    as GRPO uses it (DeepSeekMath eq. 4)."""
    log_ratio = ref_logprobs - logprobs
    return torch.exp(log_ratio) - 1 - log_ratio


def kl_penalty(logprobs: torch.Tensor, ref_logprobs: torch.Tensor) -> torch.Tensor:
    """The per-token KL loss term k2 = ½ (log π − log π_ref)², whose gradient on samples of π is the
    gradient of the objective's KL(π‖π_ref).

    Why not k3 as the loss: ∇k3 = (1 − π_ref/π) ∇log π, and E_π[(1 − π_ref/π) ∇log π] = −Σ π_ref ∇log π
    = ∇KL(π_ref‖π), the reverse direction. ∇k2 = (log π − log π_ref) ∇log π, and
    E_π[(log π − log π_ref) ∇log π] = ∇KL(π‖π_ref) (the score-function gradient; E_π[∇log π] = 0). The
    samples here are on-policy (one gradient step a batch of rollouts), so no importance weight is
    needed. k3 stays the logged value: an unbiased, never-negative estimate of KL(π‖π_ref) itself
    (tests/test_soar_defaults.py checks both gradients against the exact KL of a categorical)."""
    return 0.5 * (logprobs - ref_logprobs) ** 2


def learning_rate_at(step: int, peak: float, warmup_steps: int, total_steps: int, schedule: str = "cosine") -> float:
    """Linear warmup, then cosine from the peak to 0 over the remaining steps (step counts from 0).
    The student (SOAR: no warmup) and the teacher (SOAR: warmup 20) both follow it."""
    if step < warmup_steps:
        return peak * (step + 1) / warmup_steps
    if schedule == "constant":
        return peak
    progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
    return peak * 0.5 * (1.0 + math.cos(math.pi * progress))


def policy_gradient_step(
    policy,
    params: Sequence[torch.nn.Parameter],
    optimizer: torch.optim.Optimizer,
    groups: Sequence[tuple[Sequence[int], Sequence[tuple[Sequence[int], float]]]],
    *,
    lr: float,
    kl_coef: float,
    temperature: float,
    max_grad_norm: float,
    micro_batch_size: int,
    where: str = "",
    gradient_checkpointing: bool = False,
    reference=None,
    reference_cache: dict | None = None,
    first_token_logprobs: torch.Tensor | None = None,
) -> dict[str, float]:
    """One on-policy REINFORCE step of the active adapter: groups = [(prompt_ids, [(completion_ids, A)])].

    loss = Σ_{b,i,t} [ −A_{b,i} · log π(y_t) + β · k2_t ] / Σ_{b,i} |y_{b,i}| (k2: `kl_penalty`), the KL taken against
    `reference` (`reference_logprobs`: the student's starting weights, or the initial teacher; `reference_cache`, its
    cache of one-token answers).
    The divisor is known before the first forward, so micro-batches (slices of one prompt's group,
    the prompt computed once each: `group_logprobs`) add up to exactly the full-batch gradient.

    A group whose advantages are all zero carries no signal and is left out, KL term included (docs/design.md
    §4); a step where no group carries any takes no optimizer step at all: the weights, and the optimizer's
    moments, stay exactly as they were (a fresh AdamW's first step is ≈ lr·sign(g) for any non-zero g, so a
    KL-only or rounding gradient would otherwise move every weight by a full lr).
    `first_token_logprobs`: one-token completions whose rollouts kept their graph (`TransformersEngine.first_tokens`:
    log π(· | prompt b) in row b, [groups, vocab]): the step reads log π from it and runs no forward of its own, one
    backward through that graph. The same loss and gradient as the forward it saves, up to float rounding.
    The student trainer and the teacher update both take their step here.
    Raises StudentTrainingError when the loss, the gradient or the weights become non-finite.
    """
    started = time.perf_counter()
    micro_batches = []
    for b, (prompt_ids, scored) in enumerate(groups):
        scored = [(ids, a) for ids, a in scored if len(ids)]
        if not any(a for _, a in scored):
            continue  # no advantage in this group: no gradient from it, KL included
        for start in range(0, len(scored), micro_batch_size):
            micro_batches.append((b, prompt_ids, scored[start : start + micro_batch_size]))
    n_tokens = max(1, sum(len(ids) for _, scored in groups for ids, _ in scored))
    if not micro_batches:  # nothing to learn from: no step, not even weight decay or a moment update
        return {"loss": 0.0, "kl": 0.0, "grad_norm": 0.0, "seconds_forward_backward": time.perf_counter() - started,
                "skipped": 1.0}
    for param_group in optimizer.param_groups:
        param_group["lr"] = lr
    optimizer.zero_grad(set_to_none=True)
    policy.train()
    loss_sum, kl_sum, pending = 0.0, 0.0, []
    for b, prompt_ids, micro in micro_batches:
        completion_ids = [ids for ids, _ in micro]
        if first_token_logprobs is not None:  # the rollouts' own forward: read it, run nothing
            logprobs = first_token_logprobs[b, [ids[0] for ids in completion_ids]].unsqueeze(1)
        else:
            logprobs = _policy_logprobs(policy, prompt_ids, completion_ids, temperature, gradient_checkpointing)
        adv = torch.tensor([a for _, a in micro], device=logprobs.device).unsqueeze(1)
        loss = (-adv * logprobs).sum()  # on-policy REINFORCE: ∇ = −A ∇log π (padding is 0 in logprobs)
        if kl_coef > 0:
            ref_logprobs = reference_logprobs(policy, reference, prompt_ids, completion_ids, temperature,
                                              gradient_checkpointing, reference_cache)
            lengths = torch.tensor([len(ids) for ids in completion_ids], device=logprobs.device)
            real = torch.arange(logprobs.shape[1], device=logprobs.device) < lengths[:, None]
            loss = loss + kl_coef * (kl_penalty(logprobs, ref_logprobs) * real).sum()
            kl_sum += (kl_k3(logprobs.detach(), ref_logprobs) * real).sum().item()
        loss = loss / n_tokens
        if not torch.isfinite(loss):
            raise StudentTrainingError(f"{where}: non-finite loss {loss.item()}")
        loss_sum += loss.item()
        if first_token_logprobs is None:
            loss.backward()  # a micro-batch's graph at a time
        else:
            pending.append(loss)
    if pending:  # one graph under every group: one backward
        torch.stack(pending).sum().backward()
    for param in params:  # a skipped group leaves no grad: make it an explicit zero so AdamW still steps
        if param.grad is None:
            param.grad = torch.zeros_like(param)
    grad_norm = torch.nn.utils.clip_grad_norm_(params, max_grad_norm)
    if not torch.isfinite(grad_norm):
        raise StudentTrainingError(f"{where}: non-finite gradient norm {grad_norm.item()}")
    seconds_forward_backward = time.perf_counter() - started
    optimizer.step()
    policy.eval()
    if not all(torch.isfinite(p).all() for p in params):
        raise StudentTrainingError(f"{where}: adapter weights became non-finite (lr {lr})")
    return {
        "loss": loss_sum,
        "kl": kl_sum / n_tokens,
        "grad_norm": float(grad_norm),
        "seconds_forward_backward": seconds_forward_backward,
        "skipped": 0.0,
    }
