"""SOAR's outer loop (arXiv 2601.18778, docs/design.md §4): `sv-soar train --config FILE.toml`.

One outer step t:

    1. sample   g·n teacher rollouts, one problem each; invalid ones are discarded and the teacher is
                resampled (rejection sampling, unbiased for RLOO) until g·n are valid
    2. split    into g datasets X_1..X_g of n problems; Q_R: |Q_R| questions drawn afresh from D_train
    3. score    R_k = mean_j [Acc(student_{k,j}, Q_R) − Acc(baseline, Q_R)]   (sv_soar.grounded)
    4. promote  if the moving average of R̂_t = mean_k R_k exceeds τ, the median student of
                argmax_k R_k becomes the baseline and X_k joins the promoted questions  (sv_soar.promotion)
    5. update   the teacher by RLOO: A_k = R_k − mean_{j≠k} R_j on every rollout of X_k, one
                policy-gradient step on the teacher's LoRA adapter with a KL penalty to the initial
                teacher (its adapter disabled); with teacher.finetune = "full", on every weight of the
                teacher, the KL to a frozen copy of the initial teacher

Methods (config `run.method`): `soar` as above; `base-t` samples and promotes the same way but never
updates the teacher (promoted questions from the untrained teacher); `intrinsic-t` updates the
teacher with the learnability reward instead of R_k (per problem: 0 when the baseline student's
success rate s̄ is 0, else 1 − s̄; averaged over the dataset), promotion still grounded; `hard-only`
has no teacher: `train` only prepares the run folder and `evaluate` trains on D_train alone.

Resume: every random draw of step t is seeded by (run.seed, t), the teacher's adapter and optimizer
are checkpointed after each step, and the promotion state (state.json) is the step's commit point,
written last. A run killed anywhere resumes after its last committed step and ends in the state an
uninterrupted run reaches.
"""

from __future__ import annotations

import logging
import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import torch

from sv_soar.config import ConfigError, RunConfig
from sv_soar.generation import SamplingParams
from sv_soar.jsonl import atomic_path, read_jsonl, remove_temporary_files, write_jsonl
from sv_soar.promotion import promote
from sv_soar.promotion_run import PromotionRun
from sv_soar.run_dir import Run, create_run, exclusive_run, open_run
from sv_soar.student.objective import group_logprobs, learning_rate_at, policy_gradient_step, reference_logprobs
from sv_soar.tasks import Row, get_task, scoring_task
from sv_soar.soar_step import (class_balance, learnability, partition, problem_mix, rloo_teacher_advantages, soar_step,
                               step_seed)

log = logging.getLogger(__name__)

TEACHER_ADAPTER = "teacher"
TEACHER_DIR = "teacher"
STEPS_FILE = "steps.jsonl"
LEARNABILITY_SAMPLES = 8  # samples a problem for the intrinsic (learnability) reward
TEACHER_SEED_SALT = 0x7EAC  # teacher sampling draws from another stream than Q_R and the students


@dataclass
class TeacherSample:
    """The valid problems of one step, with the rollouts that wrote them."""

    rows: list[Row]
    token_ids: list[list[int]]
    prompt_token_ids: list[int]
    drawn: int
    rejected: dict[str, int]
    # every rollout of the first sampling round, valid or not, and that round's seed: after the update
    # the same seed redraws them under the same random numbers, so a changed rollout is the update's doing
    first_round: list[list[int]] = field(default_factory=list)
    first_round_seed: int = 0


def teacher_prompt_of(config: RunConfig):
    from sv_soar.tasks.teacher import teacher_prompt

    return teacher_prompt(config.teacher.problem_task(config.data.task), **config.teacher.prompt_options())


class Teacher:
    """The teacher policy: a LoRA adapter on the teacher model, its optimizer, and its checkpoints.

    "The initial teacher" of the KL penalty is the teacher model itself (the adapter disabled). For
    a model too small to follow the teacher prompt, use a format-warm-started one as the teacher
    model, e.g. `smollm2-135m-instruct+e1-teacher-format` (sv_soar/format_warm_start.py).
    With teacher.finetune = "full" the teacher is the model itself, every weight trained, the initial
    teacher a frozen copy made at load (so a resumed run's reference is the initial model too, not the
    checkpoint), and a checkpoint holds the whole model (model.safetensors).
    """

    def __init__(self, config: RunConfig) -> None:
        from peft import get_peft_model

        from sv_soar.student.adapters import lora_config

        from sv_soar.engines.transformers_engine import TransformersEngine
        from sv_soar.models import load_model
        from sv_soar.student.full_finetune import frozen_copy

        section = config.teacher
        model, tokenizer = load_model(section.model)
        self.full = section.finetune == "full"
        self.adapter = None if self.full else TEACHER_ADAPTER  # what the engine generates under
        self.reference = frozen_copy(model) if self.full else None  # None: the model with the adapter off
        if self.full:
            self.policy = model.eval()
            self.params = list(model.parameters())
        else:
            lora = lora_config(section.lora_rank, section.lora_alpha, section.lora_target_modules)
            torch.manual_seed(config.run.seed)  # lora_A's init: the same initial teacher on every resume
            self.policy = get_peft_model(model, lora, adapter_name=TEACHER_ADAPTER)
            self.policy.eval()
            self.params = [p for name, p in self.policy.named_parameters() if "lora_" in name]
        for param in self.params:
            param.requires_grad_(False)  # trainable only inside update()
        self.optimizer = torch.optim.AdamW(self.params, lr=section.learning_rate, weight_decay=0.0)
        self.engine = TransformersEngine(self.policy, tokenizer, model_name=section.model,
                                         max_batch_size=max(1, min(64, config.rollouts_per_step)))
        self.config = config

    def save(self, folder: Path) -> None:
        """Checkpoint the adapter (the whole model with teacher.finetune = "full") and the optimizer (AdamW's
        moments: resume continues the same run)."""
        from peft import get_peft_model_state_dict

        from sv_soar.student.adapters import write_adapter
        from sv_soar.student.full_finetune import full_state_dict, write_full_weights

        folder.mkdir(parents=True, exist_ok=True)
        if self.full:
            write_full_weights(folder, full_state_dict(self.policy), self.policy.config, atomic=True)
        else:
            state = {k: v.detach().cpu().contiguous() for k, v in
                     get_peft_model_state_dict(self.policy, adapter_name=TEACHER_ADAPTER).items()}
            write_adapter(folder, self.policy.peft_config[TEACHER_ADAPTER], state, atomic=True)
        with atomic_path(folder / "optimizer.pt") as tmp:
            torch.save(self.optimizer.state_dict(), tmp)

    def load(self, folder: Path) -> None:
        from peft import set_peft_model_state_dict
        from safetensors.torch import load_file

        from sv_soar.student.full_finetune import FULL_WEIGHTS, load_full_state

        if self.full:
            load_full_state(self.policy, load_file(str(folder / FULL_WEIGHTS)), where=str(folder / FULL_WEIGHTS))
        else:
            set_peft_model_state_dict(self.policy, load_file(str(folder / "adapter_model.safetensors")),
                                      adapter_name=TEACHER_ADAPTER)
        self.optimizer.load_state_dict(torch.load(folder / "optimizer.pt", weights_only=True))

    def _activate(self) -> None:
        """Make the teacher's adapter the active one (a fully fine-tuned teacher has none)."""
        if not self.full:
            self.policy.set_adapter(TEACHER_ADAPTER)

    def sample(self, task_name: str, hard_set_index, step_seed_: int) -> TeacherSample:
        """Rejection sampling: draw g·n rollouts a round until g·n valid problems (or the round limit)."""
        from sv_soar.tasks.teacher import validate_batch
        from sv_soar.tasks.teacher import teacher_prompt

        section = self.config.teacher
        wanted = self.config.rollouts_per_step
        prompt = teacher_prompt(task_name, **section.prompt_options())
        texts: list[str] = []
        token_ids: list[list[int]] = []
        prompt_ids: list[int] = []
        first_round: list[list[int]] = []
        for round_ in range(section.max_sampling_rounds):
            params = SamplingParams(max_new_tokens=section.max_new_tokens, temperature=section.temperature,
                                    n=wanted, seed=step_seed_ + round_, stop_at_json_end=True)
            completions = self.engine.generate([prompt], params, adapters=self.adapter)[0]
            prompt_ids = completions[0].prompt_token_ids
            texts += [c.text for c in completions]
            token_ids += [c.token_ids for c in completions]
            if round_ == 0:
                first_round = [list(c.token_ids) for c in completions]
            validation = validate_batch(texts, hard_set_index, task=task_name, options=section.problem_options())
            if len(validation.valid_indices) >= wanted:
                break
        valid = validation.valid_indices[:wanted]
        return TeacherSample(
            rows=[validation.outcomes[i].to_row() for i in valid],
            token_ids=[token_ids[i] for i in valid],
            prompt_token_ids=prompt_ids,
            drawn=len(texts),
            rejected={str(reason): count for reason, count in validation.rejected.items()},
            first_round=first_round,
            first_round_seed=step_seed_,
        )

    def drift(self, sample: TeacherSample) -> dict[str, float]:
        """How far the update just taken moved the teacher, measured on its own samples:

        - changed_share: the share of the step's first-round rollouts that come out different when
          redrawn with the same seed (the same random numbers) after the update. 0 means the update
          changed nothing the teacher writes, whatever its loss said.
        - kl_after: KL(π‖π_init) per token, estimated on those redrawn (on-policy) rollouts by the mean
          log-ratio log π − log π_init (k1: unbiased on samples of π). The KL the update's loss logs is
          taken before the step, so at step 0 it is 0 by construction.
        """
        section = self.config.teacher
        if not sample.first_round:
            return {}
        params = SamplingParams(max_new_tokens=section.max_new_tokens, temperature=section.temperature,
                                n=len(sample.first_round), seed=sample.first_round_seed, stop_at_json_end=True)
        self._activate()
        redrawn = self.engine.generate([teacher_prompt_of(self.config)], params, adapters=self.adapter)[0]
        after = [list(c.token_ids) for c in redrawn]
        changed = sum(a != b for a, b in zip(after, sample.first_round)) / len(after)
        prompt_ids = redrawn[0].prompt_token_ids
        log_ratio_sum, tokens = 0.0, 0
        micro = section.micro_batch_size
        with torch.no_grad():
            for start in range(0, len(after), micro):
                chunk = [ids for ids in after[start:start + micro] if ids]
                if not chunk:
                    continue
                logprobs = group_logprobs(self.policy, prompt_ids, chunk, section.temperature)
                ref = reference_logprobs(self.policy, self.reference, prompt_ids, chunk, section.temperature)
                log_ratio_sum += float((logprobs - ref).sum())  # padding is 0 in both
                tokens += sum(len(ids) for ids in chunk)
        return {"changed_share": changed, "kl_after": log_ratio_sum / max(1, tokens)}

    def update(self, sample: TeacherSample, advantages: Sequence[float], step: int) -> dict[str, float]:
        """One RLOO step on the teacher adapter (cosine LR with warmup, KL to the initial teacher)."""
        section = self.config.teacher
        lr = learning_rate_at(step, section.learning_rate, section.warmup_steps, self.config.run.outer_steps)
        self._activate()
        for param in self.params:
            param.requires_grad_(True)
        try:
            return policy_gradient_step(
                self.policy, self.params, self.optimizer,
                [(sample.prompt_token_ids, list(zip(sample.token_ids, advantages)))],
                lr=lr, kl_coef=section.kl_coef, temperature=section.temperature,
                max_grad_norm=section.max_grad_norm, micro_batch_size=section.micro_batch_size,
                where=f"teacher update at step {step}", reference=self.reference,
            ) | {"lr": lr}
        finally:
            for param in self.params:
                param.requires_grad_(False)


# --- the loop -------------------------------------------------------------------------------------------


def train(config: RunConfig, folder: Path, *, resume: bool = False, progress: bool = True,
          max_steps: int | None = None) -> Run:
    """Run (or resume) the outer loop in `folder` until run.outer_steps are committed."""
    run = open_run(folder) if resume else create_run(folder, config)
    config = run.config
    if config.run.method == "hard-only":
        print(f"hard-only: no teacher; {folder} is ready for `sv-soar evaluate` (students train on D_train alone)")
        return run
    with exclusive_run(run.folder):
        return _outer_loop(run, config, progress=progress, max_steps=max_steps)


def _outer_loop(run: Run, config: RunConfig, *, progress: bool, max_steps: int | None) -> Run:
    from sv_soar.backends import scorer_for
    from sv_soar.teacher.contamination import HardSetIndex

    task = scoring_task(config)
    promotion = PromotionRun.open(run.folder, task=task.name, model=config.student.model,
                                  window=config.soar.window, tau=config.soar.tau)
    start = promotion.state.step
    # what a killed run left: temporary files of cut writes, files of a step killed before its commit
    remove_temporary_files(run.folder, skip=["evaluation"])  # `sv-soar evaluate` may be writing there
    promotion.remove_orphans()
    _truncate_steps(run.folder, start)
    # decided before any model is loaded
    if config.run.stop_when_unstuck and _unstuck(_read_steps(run.folder)):
        print(f"{run.folder}: the hard set is no longer all-fail; phase 1 of the two-phase plan is done")
        return run
    compute = config.compute
    if config.run.method == "intrinsic-t" and (compute.backend != "local" or compute.students_url):
        raise ConfigError("compute: intrinsic-t measures learnability with this process's student model; "
                          'use backend = "local" and no students_url')
    teacher = Teacher(config)
    if start > 0:
        teacher.load(run.folder / TEACHER_DIR / f"step-{start:06d}")
    d_train = run.d_train()
    hard_index = HardSetIndex([*d_train, *run.d_test()])
    scorer = scorer_for(config, task, cache_dir=run.folder / "reward_cache", progress=progress)
    end = config.run.outer_steps if max_steps is None else min(config.run.outer_steps, start + max_steps)
    from sv_soar.tracking import TrackedScorer, flatten, open_tracker

    tracker = open_tracker(config.logging, run.folder, config.resolved())
    scorer = TrackedScorer(scorer) if tracker is not None else scorer
    try:
        for step in range(start, end):
            entry = outer_step(config, run, teacher, scorer, promotion, promote, hard_index, d_train, step)
            print(format_step(entry, config.run.outer_steps), flush=True)
            if tracker is not None:
                tracker.log({**flatten(entry, "outer/"), **scorer.last_student_metrics}, step=step + 1)
                scorer.last_student_metrics = {}
            if config.run.stop_when_unstuck and _unstuck([entry]):
                print(f"step {step + 1}: the baseline student solves part of Q_R; stopping (run.stop_when_unstuck)")
                break
    finally:
        if tracker is not None:
            tracker.close()
    return run


def _unstuck(entries: Sequence[dict[str, Any]]) -> bool:
    """Whether a step's baseline student solved part of its Q_R, after that step's promotion: the
    promoted student's accuracy is the median student's of the promoted dataset."""
    for entry in entries:
        if (entry.get("baseline_accuracy") or 0.0) > 0:
            return True
        k = entry.get("promoted_dataset")
        if entry.get("promoted") and k is not None:
            finished = [a for a in entry["student_accuracies"][k] if a is not None]
            if finished and statistics.median_low(finished) > 0:
                return True
    return False


def outer_step(config, run, teacher, scorer, promotion, promote, hard_index, d_train, step) -> dict[str, Any]:
    seed = config.run.seed
    g = config.teacher.g
    t0 = time.perf_counter()
    sample = teacher.sample(config.teacher.problem_task(config.data.task), hard_index,
                            step_seed(seed, step) ^ TEACHER_SEED_SALT)
    t_sampled = time.perf_counter()
    entry: dict[str, Any] = {
        "step": step, "method": config.run.method, "drawn": sample.drawn, "valid": len(sample.rows),
        "valid_rate": len(sample.rows) / sample.drawn if sample.drawn else 0.0, "rejected": sample.rejected,
    }
    groups = partition(range(len(sample.rows)), g, config.teacher.n)
    if len(groups) < 2:  # RLOO compares datasets: with fewer than 2 there is no signal this step
        error = f"the teacher wrote {len(sample.rows)} valid problems in {sample.drawn} rollouts; need 2 or more"
        decision = promote(promotion.state, [], [], step=step, error=error)
        entry |= {"error": error, "R_k": [], "seconds": {"teacher_sampling": t_sampled - t0,
                                                         "total": time.perf_counter() - t0}}
        _commit(run, teacher, promotion, decision, entry, step, config)
        return entry

    from sv_soar.teacher.diversity import question_diversity

    datasets = [[sample.rows[i] for i in group] for group in groups]
    # the same step as the teacher envs' (sv_soar.teacher_step); committed
    # below, after the teacher checkpoint and the step log
    baseline = promotion.baseline()
    promotion_before = promotion.state.promoted
    result = soar_step(datasets, d_train, scorer, promotion, q_r=config.soar.q_r, seed=seed, step=step,
                       baseline=baseline, promoted=promotion_before)
    q_r, scores, decision = result.q_r, result.scores, result.decision
    t_scored = time.perf_counter()
    # a dataset whose students all failed: None, left out of the teacher's RLOO (soar.floor = "neutral",
    # the default); a number there is that dataset's reward instead
    failed = None if config.soar.floor == "neutral" else config.soar.floor
    teacher_rewards: list[float | None] = [s.reward if s.reward is not None else failed for s in scores]
    if config.run.method == "intrinsic-t":
        teacher_rewards = [_learnability(scorer, dataset, baseline, step_seed(seed, step) + k)
                           if s.reward is not None else None for k, (dataset, s) in enumerate(zip(datasets, scores))]
    t_intrinsic = time.perf_counter()
    update: dict[str, float] = {}
    if config.run.method in ("soar", "intrinsic-t"):
        advantages = rloo_teacher_advantages(teacher_rewards)
        per_rollout = [0.0] * len(sample.rows)
        for k, group in enumerate(groups):
            for i in group:
                per_rollout[i] = advantages[k]
        used = [i for group in groups for i in group]
        kept = TeacherSample([sample.rows[i] for i in used], [sample.token_ids[i] for i in used],
                             sample.prompt_token_ids, sample.drawn, sample.rejected)
        update = teacher.update(kept, [per_rollout[i] for i in used], step)
        if config.teacher.measure_drift:
            update |= teacher.drift(sample)
    t_updated = time.perf_counter()
    diversity = question_diversity([row["question"] for row in sample.rows])
    entry |= {
        "R_k": [s.reward for s in scores],
        "R_kj": [s.student_rewards for s in scores],
        "R_hat": decision.record.reward_hat,
        "moving_average": decision.record.moving_average,
        "teacher_rewards": teacher_rewards,
        "baseline": baseline.name,
        "baseline_accuracy": scores[0].baseline_accuracy,
        "q_r_balance": class_balance(q_r),
        "dataset_balance": [class_balance(dataset) for dataset in datasets],
        # the mechanism task: stepping-stone share and agreement with the oracle (gate G4, the comparison's check)
        **problem_mix(get_task(config.teacher.problem_task(config.data.task)), sample.rows),
        # the problems themselves (question and label), so two runs' teachers can be compared step by step
        # (same seed: SOAR and Base-T draw the same step-1 problems; they differ only once SOAR has updated)
        "datasets": [[[row["question"], row["answer"]] for row in dataset] for dataset in datasets],
        "student_accuracies": [s.student_accuracies for s in scores],
        "failed_students": sum(s.n_failed for s in scores),
        # student RL steps behind this step's scores (a cached dataset's were spent when it was first
        # scored, perhaps before a crash): what a compute-matched Hard-only gets (final.compute_matched_steps)
        "student_steps": sum(len(s.students) for s in scores) * config.student_train_config().steps_for(promotion_before),
        # why, in the step log itself (never a silent floor): "X_k student j: <cause>", and OOM retries
        "student_failures": [f"X_{k + 1} student {j}: {student.failure}" for k, s in enumerate(scores)
                             for j, student in enumerate(s.students) if student.failure is not None],
        "student_retries": sum(student.attempts - 1 for s in scores for student in s.students),
        "cached_datasets": sum(s.cached for s in scores),
        "promoted": decision.promoted,
        "promoted_dataset": decision.record.promoted_dataset,
        "diversity": diversity.as_metrics(prefix=""),
        "teacher_update": update,
        "seconds": {
            "teacher_sampling": t_sampled - t0,
            "student_training": sum(s.seconds.get("train", 0.0) for s in scores),
            "evaluation": sum(s.seconds.get("evaluate", 0.0) + s.seconds.get("baseline_evaluate", 0.0)
                              for s in scores),
            "scoring": t_scored - t_sampled,
            "intrinsic_reward": t_intrinsic - t_scored,
            "teacher_update": t_updated - t_intrinsic,
            "total": t_updated - t0,
        },
    }
    _commit(run, teacher, promotion, decision, entry, step, config)
    return entry


def _learnability(scorer, dataset: Sequence[Row], baseline, seed: int) -> float:
    """Sample the baseline student LEARNABILITY_SAMPLES times a problem; the Intrinsic-T reward."""
    from sv_soar.evaluation.pass_at_k import sample_successes

    with scorer.baseline_engine(baseline, "learnability-baseline") as (engine, adapter):
        successes = sample_successes(engine, scorer.task, dataset, LEARNABILITY_SAMPLES, seed=seed,
                                     max_new_tokens=scorer.config.tokens_for(scorer.task), adapter=adapter, progress=False)
    return learnability(successes.tolist())


def _commit(run: Run, teacher: Teacher, promotion, decision, entry: dict[str, Any], step: int,
            config: RunConfig) -> None:
    """Teacher checkpoint and step log first, then state.json: the promotion commit is the step's commit."""
    teacher.save(run.folder / TEACHER_DIR / f"step-{step + 1:06d}")
    entries = [e for e in _read_steps(run.folder) if e["step"] < step] + [entry]
    write_jsonl(run.folder / STEPS_FILE, entries)
    promotion.commit(decision, config=config.student_train_config())
    stale = run.folder / TEACHER_DIR / f"step-{step:06d}"
    if step > 0 and stale.is_dir():  # keep the newest checkpoint only
        import shutil

        shutil.rmtree(stale, ignore_errors=True)


def _read_steps(folder: Path) -> list[dict[str, Any]]:
    path = folder / STEPS_FILE
    return read_jsonl(path) if path.is_file() else []


def _truncate_steps(folder: Path, committed: int) -> None:
    """Drop log lines and checkpoints of a step that was killed before its commit."""
    import shutil

    entries = _read_steps(folder)
    if any(e["step"] >= committed for e in entries):
        write_jsonl(folder / STEPS_FILE, [e for e in entries if e["step"] < committed])
    for checkpoint in (folder / TEACHER_DIR).glob("step-*"):
        if int(checkpoint.name[5:]) != committed:  # a later step's (killed before its commit) or an earlier one's
            shutil.rmtree(checkpoint, ignore_errors=True)


def format_step(entry: dict[str, Any], total: int) -> str:
    seconds = entry["seconds"]
    if entry.get("error"):
        return f"step {entry['step'] + 1}/{total} | {entry['error']} | {seconds['total']:.0f}s"
    r_k = " ".join(f"{r:+.3f}" if r is not None else "fail" for r in entry["R_k"])
    return (f"step {entry['step'] + 1}/{total} | valid {entry['valid']}/{entry['drawn']} | R_k {r_k} "
            f"| R̂ {entry['R_hat'] if entry['R_hat'] is None else format(entry['R_hat'], '+.3f')} "
            f"| {'PROMOTED x' + str(entry['promoted_dataset'] + 1) if entry['promoted'] else 'no promotion'} "
            f"| sample {seconds['teacher_sampling']:.0f}s score {seconds['scoring']:.0f}s "
            f"update {seconds['teacher_update']:.0f}s")
