"""The r students of a dataset in lockstep: one mixed-adapter generate per step, then one update each.

SOAR scores a teacher dataset by training r = 4 students on it (arXiv 2601.18778, docs/design.md §4). Trained one
after another, a dataset costs r student runs of wall time. On one device the students are LoRA adapters
on one shared base model, so their rollouts can share the batch: each step generates the r students'
8 × 32 completions in ONE `generate_many` call (rows under different adapters, peft's mixed-adapter
inference), which on a GPU costs little more than one student's batch, since decoding is bound by
reading the weights, not by the number of rows. Then each student scores its own rollouts and takes its
own policy-gradient step with its own optimizer, exactly as `train_student` does.

Every student keeps its own randomness, as in `train_student` with the same seed: its adapter's init
(torch.manual_seed(seed)), its prompt order (random.Random(seed)) and its sampling streams (the engine
draws each row from its request's seed, prompt index and sample index). So a lockstep student equals
the sequential one up to float rounding of the batched forward (rows in another batch composition).

    runs = train_students_lockstep(policy, engine, task,
                                   [LockstepStudent("x1-s0", rows, seed=0), LockstepStudent("x1-s1", rows, seed=1)],
                                   config, steps=10)
    # one StudentRun per student, or the exception that stopped it (the others carry on)
"""

from __future__ import annotations

import copy
import random
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import torch

from sv_soar.generation import GenerationEngine, SamplingParams
from sv_soar.tasks import Row, Task
from sv_soar.student.estimators import ESTIMATORS, get_estimator
from sv_soar.policy_gradient import learning_rate_at
from sv_soar.student.trainer import (
    StudentRun,
    StudentTrainConfig,
    _shuffled_batches,
    add_student_adapter,
    adapter_state_dict,
    format_step,
    group_rewards,
    mixed_group_share,
    student_reference,
    student_update,
)


@dataclass
class LockstepStudent:
    """One student of a lockstep group: what `train_student` takes for one run."""

    adapter_name: str
    rows: Sequence[Row]
    seed: int
    init_adapter_state: dict[str, torch.Tensor] | None = None
    # receives each step's dict; an exception it raises (a time limit) stops this student only
    log: Callable[[dict[str, float]], None] | None = None


@dataclass
class _State:
    student: LockstepStudent
    params: list
    optimizer: torch.optim.Optimizer
    batches: Any
    reference: str | None  # the KL's reference: the student's starting weights (trainer.student_reference)
    reference_cache: dict = field(default_factory=dict)  # its one-token answers' forwards (reference_logprobs)
    history: list[dict[str, float]] = field(default_factory=list)
    seconds: float = 0.0
    failure: BaseException | None = None


def activate_student(policy, adapter_name: str) -> None:
    """Make `adapter_name` the active adapter and its LoRA weights the only trainable ones."""
    policy.set_adapter(adapter_name)
    for name, param in policy.named_parameters():
        param.requires_grad_("lora_" in name and f".{adapter_name}." in name)


def train_students_lockstep(
    policy,
    engine: GenerationEngine,
    task: Task,
    students: Sequence[LockstepStudent],
    config: StudentTrainConfig,
    *,
    steps: int | None = None,
) -> list[StudentRun | BaseException]:
    """Train each student as `train_student(policy, engine, task, s.rows, config, adapter_name=s.adapter_name,
    init_adapter_state=s.init_adapter_state, seed=s.seed, steps=steps)` would, with the rollouts of all
    students generated together each step. Returns, per student in order, its StudentRun or the exception
    that stopped it (a non-finite reward, a diverged update, an exception from its `log`); the others go on.
    An exception in the shared generation (out of memory) stops every student and is raised.
    Adapters stay on the model afterwards, failed students' too: remove them with `remove_student_adapter`.
    """
    if config.finetune == "full":
        raise ValueError("student.finetune = 'full': lockstep students are adapters sharing one batch, and fully "
                         "fine-tuned students are separate models; train them one after another (train_student)")
    names = [s.adapter_name for s in students]
    if len(set(names)) != len(names):
        raise ValueError(f"lockstep students need distinct adapter names, got {names}")
    if any(not s.rows for s in students):
        raise ValueError("train_students_lockstep: every student needs at least one row")
    total_steps = steps if steps is not None else config.steps
    estimator = get_estimator(config.estimator)
    if config.estimator == "grpo":
        estimator = lambda r: ESTIMATORS["grpo"](r, eps=config.grpo_eps)  # noqa: E731

    states: list[_State] = []
    for student in students:
        started = time.perf_counter()
        torch.manual_seed(student.seed)  # peft's default init of lora_A draws from torch's global generator
        params = add_student_adapter(policy, student.adapter_name, config, student.init_adapter_state)
        reference = student_reference(policy, student.adapter_name, config, student.init_adapter_state)
        optimizer = config.make_optimizer(params)
        batches = _shuffled_batches(student.rows, config.batch_prompts, random.Random(student.seed), config.batching)
        states.append(_State(student, params, optimizer, batches, reference, seconds=time.perf_counter() - started))

    for step in range(total_steps):
        active = [state for state in states if state.failure is None]
        if not active:
            break
        t0 = time.perf_counter()
        batches = [next(state.batches) for state in active]
        requests = []
        for state, batch in zip(active, batches):
            sampling = SamplingParams(max_new_tokens=config.tokens_for(task), temperature=config.temperature,
                                      n=config.group_size, seed=state.student.seed * 100_003 + step,
                                      stop_at_json_end=True)
            requests.append(([task.prompt(row) for row in batch], sampling, state.student.adapter_name))
        policy.eval()
        if hasattr(engine, "generate_many"):
            outputs = engine.generate_many(requests)
        else:  # an engine without lockstep batches (vLLM schedules its own): one call a student
            outputs = [engine.generate(*request) for request in requests]
        seconds_generation = (time.perf_counter() - t0) / len(active)  # each student's share of the wall

        for state, batch, groups in zip(active, batches, outputs, strict=True):
            try:
                entry = _update(policy, state, task, batch, groups, config, estimator, step, total_steps,
                                seconds_generation)
                state.history.append(entry)
                (state.student.log or (lambda e: print(format_step(e, total_steps), flush=True)))(entry)
            except Exception as exc:  # noqa: BLE001 - one student's failure is its own (the caller counts it)
                state.failure = exc

    results: list[StudentRun | BaseException] = []
    for state in states:
        if state.failure is not None:
            results.append(state.failure)
            continue
        name = state.student.adapter_name
        results.append(StudentRun(
            adapter_name=name,
            adapter_state=adapter_state_dict(policy, name),
            log=state.history,
            config=config,
            base_model_name=str(getattr(policy.base_model.model.config, "_name_or_path", "") or ""),
            seconds=state.seconds,
            lora_config=copy.deepcopy(policy.peft_config[name]),
        ))
    return results


def _update(policy, state: _State, task: Task, batch: Sequence[Row], groups, config: StudentTrainConfig,
            estimator, step: int, total_steps: int, seconds_generation: float) -> dict[str, float]:
    """Rewards, advantages and one policy-gradient step of one student: train_student's steps 2 and 3."""
    t0 = time.perf_counter()
    rewards, successes = group_rewards(task, batch, groups, config, step)
    advantages = estimator(rewards)

    activate_student(policy, state.student.adapter_name)
    lr = learning_rate_at(step, config.learning_rate, config.warmup_steps, total_steps, config.lr_schedule)
    update = student_update(policy, state.params, state.optimizer, groups, advantages, lr, config, step,
                            state.reference, state.reference_cache)
    seconds_own = time.perf_counter() - t0
    seconds = seconds_generation + seconds_own
    state.seconds += seconds
    gen_tokens = sum(len(c.token_ids) for group in groups for c in group)
    return {
        "step": step + 1,
        "mean_reward": rewards.mean().item(),
        "pass_rate": successes / rewards.numel(),
        # share of the step's groups whose rewards differ: the only ones that carry a policy gradient
        "mixed_groups": mixed_group_share(rewards),
        "kl": update["kl"],
        "loss": update["loss"],
        "lr": lr,
        "grad_norm": update["grad_norm"],
        "gen_tokens": gen_tokens,
        "tokens_per_s": gen_tokens / seconds,
        "generation_tokens_per_s": gen_tokens / seconds_generation if seconds_generation > 0 else 0.0,
        "seconds_generation": seconds_generation,  # this student's share of the shared generate
        "seconds_forward_backward": update["seconds_forward_backward"],
        "seconds_other": seconds_own - update["seconds_forward_backward"],
    }
