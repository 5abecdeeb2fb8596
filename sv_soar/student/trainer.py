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

What one step computes (log π, the KL, the learning rate, the loss and its step) is sv_soar.policy_gradient.
No `transformers.Trainer`: the loop below is the whole algorithm, and it prints what it costs.
"""

from __future__ import annotations

import copy
import json
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
from sv_soar.student.checkpoint import StudentCheckpoint, run_fingerprint
from sv_soar.student.config import StudentTrainConfig
from sv_soar.student.estimators import ESTIMATORS, get_estimator
from sv_soar.student.full_finetune import frozen_copy, full_state_dict, load_full_state, write_full_weights
from sv_soar.policy_gradient import StudentTrainingError, learning_rate_at, policy_gradient_step


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


# --- the loop ---------------------------------------------------------------------------------------


def _shuffled_batches(rows: Sequence[Row], batch_prompts: int, rng: random.Random,
                      batching: str = "shuffled") -> Iterator[list[Row]]:
    """Batches of prompts drawn without replacement, reshuffled every pass (a pass of a 64-problem
    teacher dataset takes 8 SOAR steps, so 10 steps see every problem at least once). `batching = "balanced"`:
    each answer's problems are such a stream of their own, and a batch takes one from each answer in turn, the
    answers in an order reshuffled every round (meant for tasks whose answers are a few labels: E1, mechanism; where
    every answer differs it is one more shuffle)."""
    if not rows:
        raise ValueError("no problems to draw batches from")
    if batching == "balanced":
        by_answer: dict[str, list[Row]] = {}
        for row in rows:
            by_answer.setdefault(json.dumps(row["answer"], sort_keys=True), []).append(row)
        streams = [_shuffled_batches(by_answer[key], 1, rng) for key in sorted(by_answer)]
        turns: list[int] = []
        while True:
            batch = []
            for _ in range(batch_prompts):
                if not turns:
                    turns = list(range(len(streams)))
                    rng.shuffle(turns)
                batch += next(streams[turns.pop()])
            yield batch
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


def fused_rollouts(engine, task: Task, config: StudentTrainConfig) -> bool:
    """Whether a step's rollouts and its update share one forward (`TransformersEngine.first_tokens`): one-token
    answers (the mechanism task) sampled at a temperature > 0 by an engine that can keep the graph, a LoRA student
    without dropout, no gradient checkpointing (its forward is its own). Measured on the mechanism student, 8 prompts
    × 8 answers on one CPU thread: 11.72 s a step → 5.63 s (benchmarks/fused_rollouts.py). The same step as a forward
    of its own, up to float rounding (tests/test_fused_rollouts.py), for a model without dropout (Llama, SmolLM2): the
    fused update differentiates the eval-mode forward that sampled, the unfused one runs in train mode. The fused
    forward keeps every prompt's graph at once (micro_batch_size does not split it): small for one-token answers.
    A step's logged seconds_generation then holds the update's forward too, and seconds_forward_backward its backward."""
    return (config.tokens_for(task) == 1 and config.temperature > 0 and hasattr(engine, "first_tokens")
            and config.finetune != "full" and config.lora_dropout == 0 and not config.gradient_checkpointing)


def student_update(policy, params, optimizer, groups, advantages: torch.Tensor, lr: float,
                   config: StudentTrainConfig, step: int, reference=None,
                   reference_cache: dict | None = None, first_token_logprobs: torch.Tensor | None = None
                   ) -> dict[str, float]:
    """One policy-gradient step of a student over every sampled token of the step's groups, with the run's
    KL, clipping and micro-batching (train_student's and the lockstep trainer's step 3). `reference`: where the
    student started, the KL's reference (`reference_logprobs`; `student_reference` makes it); `reference_cache`:
    a dict the run keeps for it (one-token answers: π_ref's forward once a prompt); `first_token_logprobs`: the
    rollouts' own log π when they kept their graph (`fused_rollouts`)."""
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
        reference_cache=reference_cache,
        first_token_logprobs=first_token_logprobs,
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
    checkpoint: StudentCheckpoint | None = None,
    restored: Callable[[list[dict[str, float]]], None] | None = None,
) -> StudentRun:
    """Train a new LoRA adapter `adapter_name` on the shared PeftModel `policy` and return its weights.

    `engine` must generate with `policy` (it shares the model, so the adapter it samples under is the
    one being trained). `steps` defaults to `config.steps` (pass `config.steps_for(promoted)`).
    `log` receives each step's dict; by default a one-line summary is printed. The adapter stays on
    the model afterwards: remove it with `remove_student_adapter` or `with student_adapter(...)`.
    With config.finetune = "full", `policy` is the frozen base model and `engine` generates with the
    student's own copy of it (`engine.over(trainable_copy(base))`), which is loaded with
    `init_adapter_state` (full weights) or the base's weights and trained whole; `adapter_name` only names the run.
    `checkpoint`: keep the run's state there every few minutes and after its last step, and resume from it when it
    holds this run's (sv_soar.student.checkpoint): a resumed run passes its restored steps' entries to `restored`
    (by default to `log`, one by one) first, then takes the steps an unstopped run takes from there. Its `seconds`
    are then the wall time of every process that trained it, each one's setup included.
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
    reference_cache: dict = {}  # π_ref is fixed for the run: one-token answers read its forward once a prompt
    optimizer = config.make_optimizer(params)
    batches = _shuffled_batches(rows, config.batch_prompts, random.Random(seed), config.batching)
    fused = fused_rollouts(engine, task, config)
    history: list[dict[str, float]] = []
    first_step, seconds_before, fingerprint, named = 0, 0.0, "", []
    if checkpoint is not None:
        names = {id(param): name for name, param in model.named_parameters()}
        named = [(names.get(id(param), "?"), param) for param in params]
        fingerprint = run_fingerprint(model=str(getattr(model.config, "_name_or_path", "")), task=task.name, seed=seed,
                                      steps=total_steps, config=config, rows=rows, init_state=init_adapter_state)
        kept = checkpoint.restore(fingerprint, named, optimizer, total_steps)
        if kept is not None:
            first_step, seconds_before, history = kept
            for _ in range(first_step):  # the batches those steps drew
                next(batches)
            if restored is not None:
                restored(list(history))
            else:
                for entry in history:
                    log(entry)
        checkpoint.start_clock()

    for step in range(first_step, total_steps):
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
        prompts = [task.prompt(row) for row in batch]
        first_token_logprobs = None
        if fused:  # one forward for the rollouts and the update (one-token answers)
            groups, first_token_logprobs = engine.first_tokens(prompts, sampling, adapter)
        else:
            groups = engine.generate(prompts, sampling, adapters=adapter)
        t_generated = time.perf_counter()

        # 2. rewards and advantages, one group per prompt
        rewards, successes = group_rewards(task, batch, groups, config, step)
        advantages = estimator(rewards)

        # 3. one policy-gradient step on the adapter over every sampled token
        lr = learning_rate_at(step, config.learning_rate, config.warmup_steps, total_steps, config.lr_schedule)
        update = student_update(model, params, optimizer, groups, advantages, lr, config, step, reference,
                                reference_cache, first_token_logprobs)
        del first_token_logprobs  # its graph
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
        if checkpoint is not None and (checkpoint.due() or step + 1 == total_steps):
            checkpoint.save(fingerprint, step=step + 1, steps=total_steps, params=named, optimizer=optimizer,
                            history=history, seconds=seconds_before + time.perf_counter() - run_start)

    seconds = seconds_before + time.perf_counter() - run_start
    if full:
        return StudentRun(adapter_name=adapter_name, adapter_state=full_state_dict(model), log=history, config=config,
                          base_model_name=str(getattr(policy.config, "_name_or_path", "") or ""),
                          seconds=seconds, model_config=copy.deepcopy(model.config))
    return StudentRun(
        adapter_name=adapter_name,
        adapter_state=adapter_state_dict(policy, adapter_name),
        log=history,
        config=config,
        base_model_name=str(getattr(policy.base_model.model.config, "_name_or_path", "") or ""),
        seconds=seconds,
        lora_config=copy.deepcopy(policy.peft_config[adapter_name]),
    )
