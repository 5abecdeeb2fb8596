"""The student inner loop: a few steps of on-policy RL of one LoRA adapter on one problem set.

SOAR (arXiv 2601.18778, docs/design.md §4) trains r students per teacher dataset, each for 10 RLOO steps
(15 after the first promotion) of 8 prompts × 32 completions. Every student is a LoRA adapter on ONE
shared base model (loaded once per process), so a step is:

    rows      -> engine.generate(..., adapters=adapter_name)      G completions per prompt
    texts     -> task.score(text, row)["reward"]                   r_{b,i}
    rewards   -> estimator over each prompt's group                A_{b,i}
    tokens    -> loss = Σ_{b,i,t} [ −A_{b,i} · log π(y_t) + β · k2_t ] / Σ_{b,i} |y_{b,i}|   (k2: see kl_penalty)
    loss      -> AdamW step (cosine LR, grad clipping) on the adapter's LoRA weights only

Normalisation: the sum over every sampled token divided by the step's total completion-token count
(the "token-level" loss of DAPO, arXiv 2503.14476 §3.3). The divisor is one constant per step, so the
gradient points where the sequence-level RLOO objective Σ_i A_i log π(y_i) does; it is known before
the first forward, so micro-batches add up to exactly the full-batch gradient; and every token weighs
the same, unlike GRPO's per-sequence 1/|y_i| mean, which down-weights the tokens of long completions.
One gradient step per batch of rollouts keeps the update on-policy, so no importance ratio or clip.

    policy = student_policy(model, config)              # once per process: the shared PeftModel
    engine = TransformersEngine(policy, tokenizer)     # generation sees the adapters being trained
    with student_adapter(policy, "x1-s0"):
        run = train_student(policy, engine, task, rows, config, adapter_name="x1-s0", seed=0)
    run.save(folder)                                   # a peft adapter folder + student_log.jsonl

With student.finetune = "full" the student is not an adapter but every weight of its own copy of the base
model (sv_soar.student.full_finetune): `engine` generates with that copy, which the run loads and trains,
and `policy` is the frozen base model, the KL reference.

No `transformers.Trainer`: the loop below is the whole algorithm, and it prints what it costs.
"""

from __future__ import annotations

import contextlib
import copy
import json
import math
import random
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import torch

from sv_soar.baseline import is_full_state
from sv_soar.generation import GenerationEngine, SamplingParams
from sv_soar.tasks import Row, Task
from sv_soar.student.adapters import (  # noqa: F401 - re-exported: the trainer's adapters on the shared model
    BASE_POLICY_ADAPTER,
    add_reference_adapter,
    adapter_state_dict,
    add_student_adapter,
    remove_student_adapter,
    student_adapter,
    student_policy,
    write_adapter,
)
from sv_soar.student.config import StudentTrainConfig
from sv_soar.student.estimators import ESTIMATORS, get_estimator
from sv_soar.student.full_finetune import frozen_copy, full_state_dict, load_full_state, write_full_weights

class StudentTrainingError(RuntimeError):
    """A student run diverged (non-finite reward, loss, gradient or weights); the caller counts it."""



@dataclass
class StudentRun:
    """What a student run leaves behind: its LoRA weights (peft's key format, CPU), or with
    config.finetune = "full" every weight of its model (the model's own keys, CPU), and its log."""

    adapter_name: str
    adapter_state: dict[str, torch.Tensor]
    log: list[dict[str, float]]
    config: StudentTrainConfig
    base_model_name: str = ""
    seconds: float = 0.0
    lora_config: Any = field(default=None, repr=False)
    model_config: Any = field(default=None, repr=False)  # full fine-tuning: the model's transformers config

    def save(self, path: str | Path) -> Path:
        """Write a peft adapter folder (loadable by PeftModel.load_adapter / the engines) plus the log; a
        fully fine-tuned student's folder holds model.safetensors and config.json instead (a model folder,
        less the tokenizer)."""
        folder = Path(path)
        folder.mkdir(parents=True, exist_ok=True)
        if is_full_state(self.adapter_state):
            write_full_weights(folder, self.adapter_state, self.model_config)
        else:
            lora_config = copy.deepcopy(self.lora_config) if self.lora_config else self.config.lora_config()
            lora_config.base_model_name_or_path = self.base_model_name or lora_config.base_model_name_or_path
            write_adapter(folder, lora_config, self.adapter_state)
        (folder / "student_config.json").write_text(self.config.model_dump_json(indent=2))
        with open(folder / "student_log.jsonl", "w") as f:
            for entry in self.log:
                f.write(json.dumps(entry) + "\n")
        return folder


# --- the objective --------------------------------------------------------------------------------


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


def reference_logprobs(policy, reference, prompt_ids: Sequence[int], completion_ids: Sequence[Sequence[int]],
                       temperature: float, gradient_checkpointing: bool = False) -> torch.Tensor:
    """log π_ref of the completions, no gradient. `reference` is one of: the name of a frozen adapter on `policy`
    (a LoRA student's starting weights, `add_reference_adapter`); a frozen model (full fine-tuning: the student's
    starting weights, or the initial teacher); None, `policy` with its adapters disabled (the base model: a LoRA
    student that starts from it, or the LoRA teacher's initial policy)."""
    with torch.no_grad():
        if isinstance(reference, str):
            active = policy.active_adapter
            policy.set_adapter(reference, inference_mode=True)
            try:
                return _policy_logprobs(policy, prompt_ids, completion_ids, temperature, gradient_checkpointing)
            finally:
                policy.set_adapter(active)  # the student's weights trainable again, the reference's frozen
        if reference is not None:
            return _policy_logprobs(reference, prompt_ids, completion_ids, temperature, gradient_checkpointing)
        with policy.disable_adapter():
            return _policy_logprobs(policy, prompt_ids, completion_ids, temperature, gradient_checkpointing)


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
    (tests/test_student_trainer.py checks both gradients against the exact KL of a categorical)."""
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


def _shuffled_batches(rows: Sequence[Row], batch_prompts: int, rng: random.Random) -> Iterator[list[Row]]:
    """Batches of prompts drawn without replacement, reshuffled every pass (a pass of a 64-problem
    teacher dataset takes 8 SOAR steps, so 10 steps see every problem at least once)."""
    order: list[int] = []
    while True:
        batch = []
        while len(batch) < batch_prompts:
            if not order:
                order = list(range(len(rows)))
                rng.shuffle(order)
            batch.append(rows[order.pop()])
        yield batch


def format_step(entry: dict[str, float], total_steps: int) -> str:
    return (
        f"step {entry['step']:>2}/{total_steps} | reward {entry['mean_reward']:+.3f} pass {entry['pass_rate']:.2f} "
        f"| loss {entry['loss']:+.4f} kl {entry['kl']:.4f} gnorm {entry['grad_norm']:.3f} lr {entry['lr']:.2e} "
        f"| {entry['gen_tokens']:.0f} tok {entry['tokens_per_s']:.1f} tok/s "
        f"| gen {entry['seconds_generation']:.1f}s fwd/bwd {entry['seconds_forward_backward']:.1f}s "
        f"other {entry['seconds_other']:.1f}s"
    )


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
) -> dict[str, float]:
    """One on-policy REINFORCE step of the active adapter: groups = [(prompt_ids, [(completion_ids, A)])].

    loss = Σ_{b,i,t} [ −A_{b,i} · log π(y_t) + β · k2_t ] / Σ_{b,i} |y_{b,i}| (k2: `kl_penalty`), the KL taken against
    `reference` (`reference_logprobs`: the student's starting weights, or the initial teacher).
    The divisor is known before the first forward, so micro-batches (slices of one prompt's group,
    the prompt computed once each: `group_logprobs`) add up to exactly the full-batch gradient.

    A group whose advantages are all zero carries no signal and is left out, KL term included (docs/design.md
    §4); a step where no group carries any takes no optimizer step at all: the weights, and the optimizer's
    moments, stay exactly as they were (a fresh AdamW's first step is ≈ lr·sign(g) for any non-zero g, so a
    KL-only or rounding gradient would otherwise move every weight by a full lr).
    The student trainer and the teacher update both take their step here.
    Raises StudentTrainingError when the loss, the gradient or the weights become non-finite.
    """
    started = time.perf_counter()
    micro_batches = []
    for prompt_ids, scored in groups:
        scored = [(ids, a) for ids, a in scored if len(ids)]
        if not any(a for _, a in scored):
            continue  # no advantage in this group: no gradient from it, KL included
        for start in range(0, len(scored), micro_batch_size):
            micro_batches.append((prompt_ids, scored[start : start + micro_batch_size]))
    n_tokens = max(1, sum(len(ids) for _, scored in groups for ids, _ in scored))
    if not micro_batches:  # nothing to learn from: no step, not even weight decay or a moment update
        return {"loss": 0.0, "kl": 0.0, "grad_norm": 0.0, "seconds_forward_backward": time.perf_counter() - started,
                "skipped": 1.0}
    for param_group in optimizer.param_groups:
        param_group["lr"] = lr
    optimizer.zero_grad(set_to_none=True)
    policy.train()
    loss_sum, kl_sum = 0.0, 0.0
    for prompt_ids, micro in micro_batches:
        completion_ids = [ids for ids, _ in micro]
        logprobs = _policy_logprobs(policy, prompt_ids, completion_ids, temperature, gradient_checkpointing)
        adv = torch.tensor([a for _, a in micro], device=logprobs.device).unsqueeze(1)
        loss = (-adv * logprobs).sum()  # on-policy REINFORCE: ∇ = −A ∇log π (padding is 0 in logprobs)
        if kl_coef > 0:
            ref_logprobs = reference_logprobs(policy, reference, prompt_ids, completion_ids, temperature,
                                              gradient_checkpointing)
            lengths = torch.tensor([len(ids) for ids in completion_ids], device=logprobs.device)
            real = torch.arange(logprobs.shape[1], device=logprobs.device) < lengths[:, None]
            loss = loss + kl_coef * (kl_penalty(logprobs, ref_logprobs) * real).sum()
            kl_sum += (kl_k3(logprobs.detach(), ref_logprobs) * real).sum().item()
        loss = loss / n_tokens
        if not torch.isfinite(loss):
            raise StudentTrainingError(f"{where}: non-finite loss {loss.item()}")
        loss.backward()
        loss_sum += loss.item()
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


# --- the loop ---------------------------------------------------------------------------------------


def student_reference(policy, adapter_name: str, config: StudentTrainConfig, init_adapter_state):
    """The KL reference of a student: where it starts (docs/design.md §4), not the original base model.
    From the base model (no `init_adapter_state`): the base (None: `policy` with adapters disabled; full
    fine-tuning: `policy`, the frozen base). From a promoted baseline: a frozen copy of the baseline's weights,
    a reference adapter on `policy` (LoRA) or a frozen model holding them (full fine-tuning)."""
    if init_adapter_state is None:
        return policy if config.finetune == "full" else None
    if config.finetune == "full":
        reference = frozen_copy(policy)
        load_full_state(reference, init_adapter_state, where=f"student {adapter_name}: init_adapter_state")
        return reference
    return add_reference_adapter(policy, adapter_name, config, init_adapter_state)


def group_rewards(task: Task, batch: Sequence[Row], groups, config: StudentTrainConfig,
                  step: int) -> tuple[torch.Tensor, int]:
    """The (prompts x group) reward matrix of one step and its count of successes: the task's success
    (0/1) under reward="correctness", else its full rubric's reward. Shared by train_student and the
    lockstep trainer, so the two paths score rollouts the same way."""
    rewards = torch.zeros(len(batch), config.group_size)
    successes = 0
    for b, (row, group) in enumerate(zip(batch, groups)):
        for i, completion in enumerate(group):
            success = bool(task.is_success(completion.text, row))
            successes += success
            if config.reward == "correctness":
                rewards[b, i] = float(success)
            else:
                rewards[b, i] = task.score(completion.text, row)["reward"]
    if not torch.isfinite(rewards).all():
        raise StudentTrainingError(f"step {step + 1}: task {task.name!r} returned a non-finite reward")
    return rewards, successes


def mixed_group_share(rewards: torch.Tensor) -> float:
    """The share of a (prompts x group) reward matrix's groups that are not unanimous."""
    return (rewards.max(dim=1).values != rewards.min(dim=1).values).float().mean().item()


def student_update(policy, params, optimizer, groups, advantages: torch.Tensor, lr: float,
                   config: StudentTrainConfig, step: int, reference=None) -> dict[str, float]:
    """One policy-gradient step of a student over every sampled token of the step's groups, with the run's
    KL, clipping and micro-batching (train_student's and the lockstep trainer's step 3). `reference`: where the
    student started, the KL's reference (`reference_logprobs`; `student_reference` makes it)."""
    return policy_gradient_step(
        policy,
        params,
        optimizer,
        [(group[0].prompt_token_ids, [(c.token_ids, advantages[b, i].item()) for i, c in enumerate(group)])
         for b, group in enumerate(groups)],
        lr=lr,
        kl_coef=config.kl_coef,
        temperature=config.temperature,
        max_grad_norm=config.max_grad_norm,
        micro_batch_size=config.micro_batch_size,
        where=f"step {step + 1}",
        gradient_checkpointing=config.gradient_checkpointing,
        reference=reference,
    )


def train_student(
    policy,
    engine: GenerationEngine,
    task: Task,
    rows: Sequence[Row],
    config: StudentTrainConfig,
    *,
    adapter_name: str,
    init_adapter_state: dict[str, torch.Tensor] | None = None,
    seed: int,
    steps: int | None = None,
    log: Callable[[dict[str, float]], None] | None = None,
) -> StudentRun:
    """Train a new LoRA adapter `adapter_name` on the shared PeftModel `policy` and return its weights.

    `engine` must generate with `policy` (it shares the model, so the adapter it samples under is the
    one being trained). `steps` defaults to `config.steps` (pass `config.steps_for(promoted)`).
    `log` receives each step's dict; by default a one-line summary is printed. The adapter stays on
    the model afterwards: remove it with `remove_student_adapter` or `with student_adapter(...)`.
    With config.finetune = "full", `policy` is the frozen base model and `engine` generates with the
    student's own copy of it (`engine.over(trainable_copy(base))`), which is loaded with
    `init_adapter_state` (full weights) or the base's weights and trained whole; `adapter_name` only names the run.
    Raises StudentTrainingError when a reward, the loss, the gradient or the weights become non-finite.
    """
    if not rows:
        raise ValueError("train_student needs at least one row")
    full = config.finetune == "full"
    if full and engine.model is policy:
        raise ValueError("train_student: student.finetune = 'full' trains the student's own copy of the base model: "
                         "pass an engine over it, engine.over(trainable_copy(policy)), not one over `policy`")
    total_steps = steps if steps is not None else config.steps
    estimator = get_estimator(config.estimator)
    if config.estimator == "grpo":
        estimator = lambda r: ESTIMATORS["grpo"](r, eps=config.grpo_eps)  # noqa: E731
    log = log or (lambda entry: print(format_step(entry, total_steps), flush=True))

    run_start = time.perf_counter()
    torch.manual_seed(seed)  # peft's default init of lora_A draws from torch's global generator
    if full:  # the student's own model is trained, from its starting weights
        model, adapter = engine.model, None
        load_full_state(model, init_adapter_state if init_adapter_state is not None else policy.state_dict(),
                        where=f"student {adapter_name}: init_adapter_state")
        params = list(model.parameters())
    else:
        model, adapter = policy, adapter_name
        params = add_student_adapter(policy, adapter_name, config, init_adapter_state)
    reference = student_reference(policy, adapter_name, config, init_adapter_state)
    optimizer = config.make_optimizer(params)
    batches = _shuffled_batches(rows, config.batch_prompts, random.Random(seed))
    history: list[dict[str, float]] = []

    for step in range(total_steps):
        t0 = time.perf_counter()
        batch = next(batches)

        # 1. rollouts: G completions per prompt from the current adapter (on-policy)
        model.eval()
        sampling = SamplingParams(
            max_new_tokens=config.tokens_for(task),
            temperature=config.temperature,
            n=config.group_size,
            seed=seed * 100_003 + step,
            stop_at_json_end=True,
        )
        groups = engine.generate([task.prompt(row) for row in batch], sampling, adapters=adapter)
        t_generated = time.perf_counter()

        # 2. rewards and advantages, one group per prompt
        rewards, successes = group_rewards(task, batch, groups, config, step)
        advantages = estimator(rewards)

        # 3. one policy-gradient step on the adapter over every sampled token
        lr = learning_rate_at(step, config.learning_rate, config.warmup_steps, total_steps, config.lr_schedule)
        update = student_update(model, params, optimizer, groups, advantages, lr, config, step, reference)
        t_end = time.perf_counter()

        gen_tokens = sum(len(c.token_ids) for group in groups for c in group)
        seconds_generation = t_generated - t0
        seconds_forward_backward = update["seconds_forward_backward"]
        entry = {
            "step": step + 1,
            "mean_reward": rewards.mean().item(),
            "pass_rate": successes / rewards.numel(),
            # share of the step's groups whose rewards differ: the only ones that carry a policy gradient
            "mixed_groups": mixed_group_share(rewards),
            "kl": update["kl"],  # mean per-token k3 estimate of KL(π‖π_ref), π_ref where the student started
            "loss": update["loss"],
            "lr": lr,
            "grad_norm": update["grad_norm"],
            "gen_tokens": gen_tokens,
            "tokens_per_s": gen_tokens / (t_end - t0),
            "generation_tokens_per_s": gen_tokens / seconds_generation if seconds_generation > 0 else 0.0,
            "seconds_generation": seconds_generation,
            "seconds_forward_backward": seconds_forward_backward,
            "seconds_other": (t_end - t0) - seconds_generation - seconds_forward_backward,
        }
        history.append(entry)
        log(entry)

    if full:
        return StudentRun(adapter_name=adapter_name, adapter_state=full_state_dict(model), log=history, config=config,
                          base_model_name=str(getattr(policy.config, "_name_or_path", "") or ""),
                          seconds=time.perf_counter() - run_start, model_config=copy.deepcopy(model.config))
    return StudentRun(
        adapter_name=adapter_name,
        adapter_state=adapter_state_dict(policy, adapter_name),
        log=history,
        config=config,
        base_model_name=str(getattr(policy.base_model.model.config, "_name_or_path", "") or ""),
        seconds=time.perf_counter() - run_start,
        lora_config=copy.deepcopy(policy.peft_config[adapter_name]),
    )
