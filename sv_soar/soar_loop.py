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

Methods (config `run.method`; the table METHODS): `soar` as above; `base-t` samples and promotes the same way but
never updates the teacher (promoted questions from the untrained teacher); `intrinsic-t` updates the
teacher with the learnability reward instead of R_k (per problem: 0 when the baseline student's
success rate s̄ is 0, else 1 − s̄; averaged over the dataset), promotion still grounded; `hard-only`
has no teacher: `train` only prepares the run folder and `evaluate` trains on D_train alone.

The teacher policy (sampling, its update, drift) is sv_soar.teacher_policy; the rules (partition, Q_R, the
teacher's RLOO, promotion) are sv_soar.soar_step and sv_soar.promotion; `outer_step` below is one step, in the
phases above, and `StepLog` the line it writes to steps.jsonl.

Resume: every random draw of step t is seeded by (run.seed, t), the teacher's adapter and optimizer
are checkpointed after each step, and the promotion state (state.json) is the step's commit point,
written last. A run killed anywhere resumes after its last committed step and ends in the state an
uninterrupted run reaches.
"""

from __future__ import annotations

import logging
import shutil
import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Sequence

from sv_soar.baseline import Baseline
from sv_soar.backends import scorer_for
from sv_soar.config import ConfigError, RunConfig
from sv_soar.evaluation.pass_at_k import sample_successes
from sv_soar.jsonl import read_jsonl, remove_temporary_files, write_jsonl
from sv_soar.promotion import PromotionDecision, promote
from sv_soar.promotion_run import PromotionRun
from sv_soar.run_dir import Run, create_run, exclusive_run, open_run
from sv_soar.scores import DatasetScore, Scorer
from sv_soar.soar_step import (class_balance, learnability, partition, problem_mix, rloo_teacher_advantages, soar_step,
                               step_seed)
from sv_soar.tasks import Row, get_task, scoring_task
from sv_soar.teacher.contamination import HardSetIndex
from sv_soar.teacher.diversity import question_diversity
from sv_soar.teacher_policy import TEACHER_SEED_SALT, Teacher, TeacherSample
from sv_soar.tracking import TrackedScorer, flatten, open_tracker

log = logging.getLogger(__name__)

TEACHER_DIR = "teacher"
STEPS_FILE = "steps.jsonl"
LEARNABILITY_SAMPLES = 8  # samples a problem for the intrinsic (learnability) reward


@dataclass(frozen=True)
class Method:
    """What a method does in the outer loop: whether it has a teacher, whether the teacher is updated, and on
    which reward (grounded: R_k; learnability: the Intrinsic-T reward). Promotion is grounded for every method."""

    name: str
    has_teacher: bool
    updates_teacher: bool
    teacher_reward: Literal["grounded", "learnability"] = "grounded"


METHODS = {m.name: m for m in (
    Method("soar", has_teacher=True, updates_teacher=True),
    Method("base-t", has_teacher=True, updates_teacher=False),
    Method("intrinsic-t", has_teacher=True, updates_teacher=True, teacher_reward="learnability"),
    Method("hard-only", has_teacher=False, updates_teacher=False),
)}


@dataclass
class Loop:
    """What every outer step of a run works with: its config and folder, the teacher, the scorer of datasets, the
    promotion state, D_train, and the index that rejects a teacher problem too close to the hard set."""

    config: RunConfig
    run: Run
    teacher: Teacher
    scorer: Scorer
    promotion: PromotionRun
    hard_index: HardSetIndex
    d_train: list[Row]

    @property
    def method(self) -> Method:
        return METHODS[self.config.run.method]


# --- the loop -------------------------------------------------------------------------------------------


def train(config: RunConfig, folder: Path, *, resume: bool = False, progress: bool = True,
          max_steps: int | None = None) -> Run:
    """Run (or resume) the outer loop in `folder` until run.outer_steps are committed."""
    run = open_run(folder) if resume else create_run(folder, config)
    config = run.config
    if not METHODS[config.run.method].has_teacher:
        print(f"{config.run.method}: no teacher; {folder} is ready for `sv-soar evaluate` (students train on "
              "D_train alone)")
        return run
    with exclusive_run(run.folder):
        return _outer_loop(run, config, progress=progress, max_steps=max_steps)


def _outer_loop(run: Run, config: RunConfig, *, progress: bool, max_steps: int | None) -> Run:
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
    if METHODS[config.run.method].teacher_reward == "learnability" and (compute.backend != "local"
                                                                        or compute.students_url):
        raise ConfigError("compute: intrinsic-t measures learnability with this process's student model; "
                          'use backend = "local" and no students_url')
    teacher = Teacher(config)
    if start > 0:
        teacher.load(run.folder / TEACHER_DIR / f"step-{start:06d}")
    d_train = run.d_train()
    scorer = scorer_for(config, task, cache_dir=run.folder / "reward_cache", progress=progress)
    end = config.run.outer_steps if max_steps is None else min(config.run.outer_steps, start + max_steps)
    tracker = open_tracker(config.logging, run.folder, config.resolved())
    scorer = TrackedScorer(scorer) if tracker is not None else scorer
    loop = Loop(config, run, teacher, scorer, promotion, HardSetIndex([*d_train, *run.d_test()]), d_train)
    try:
        for step in range(start, end):
            entry = outer_step(loop, step)
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


@dataclass
class StepLog:
    """One line of steps.jsonl: what an outer step drew, scored, promoted and updated, and what each phase cost.
    A step whose teacher wrote too few valid problems to compare has `error` and no scores."""

    step: int
    method: str
    drawn: int
    valid: int
    valid_rate: float
    rejected: dict[str, int]
    seconds: dict[str, float] = field(default_factory=dict)
    error: str | None = None
    scored: dict[str, Any] = field(default_factory=dict)  # the scores, promotion and update (StepLog.of_scores)

    @staticmethod
    def of_sample(step: int, method: str, sample: TeacherSample) -> StepLog:
        return StepLog(step, method, sample.drawn, len(sample.rows),
                       len(sample.rows) / sample.drawn if sample.drawn else 0.0, sample.rejected)

    def as_dict(self) -> dict[str, Any]:
        entry = {"step": self.step, "method": self.method, "drawn": self.drawn, "valid": self.valid,
                 "valid_rate": self.valid_rate, "rejected": self.rejected}
        if self.error is not None:
            return entry | {"error": self.error, "R_k": [], "seconds": self.seconds}
        return entry | self.scored | {"seconds": self.seconds}


def outer_step(loop: Loop, step: int) -> dict[str, Any]:
    """One outer step, committed: sample, split, score, promote, update (the module's docstring), then the teacher
    checkpoint, the step log and the promotion state, in that order (`_commit`). Returns the step log's line."""
    config, seed = loop.config, loop.config.run.seed
    t0 = time.perf_counter()

    # 1. sample: g·n valid problems from the teacher (rejection sampling)
    sample = loop.teacher.sample(config.teacher.problem_task(config.data.task), loop.hard_index,
                                 step_seed(seed, step) ^ TEACHER_SEED_SALT)
    t_sampled = time.perf_counter()
    record = StepLog.of_sample(step, config.run.method, sample)

    # 2. split: the datasets X_1..X_g (Q_R is drawn inside soar_step)
    groups = partition(range(len(sample.rows)), config.teacher.g, config.teacher.n)
    if len(groups) < 2:  # RLOO compares datasets: with fewer than 2 there is no signal this step
        record.error = (f"the teacher wrote {len(sample.rows)} valid problems in {sample.drawn} rollouts; "
                        "need 2 or more")
        decision = promote(loop.promotion.state, [], [], step=step, error=record.error)
        record.seconds = {"teacher_sampling": t_sampled - t0, "total": time.perf_counter() - t0}
        _commit(loop, decision, record.as_dict(), step)
        return record.as_dict()
    datasets = [[sample.rows[i] for i in group] for group in groups]

    # 3. score and 4. promote: soar_step, as the teacher envs' TeacherStep (sv_soar.teacher_step); committed below,
    # after the teacher checkpoint and the step log
    baseline = loop.promotion.baseline()
    promoted_before = loop.promotion.state.promoted
    result = soar_step(datasets, loop.d_train, loop.scorer, loop.promotion, q_r=config.soar.q_r, seed=seed,
                       step=step, baseline=baseline, promoted=promoted_before)
    t_scored = time.perf_counter()
    teacher_rewards = _teacher_rewards(loop, datasets, result.scores, baseline, step)
    t_intrinsic = time.perf_counter()

    # 5. update: the teacher by RLOO over the datasets' rewards (SOAR, Intrinsic-T)
    update = _update_teacher(loop, sample, groups, teacher_rewards, step) if loop.method.updates_teacher else {}
    t_updated = time.perf_counter()

    record.scored = _scored(loop, sample, datasets, result, teacher_rewards, update, baseline, promoted_before)
    record.seconds = {
        "teacher_sampling": t_sampled - t0,
        "student_training": sum(s.seconds.get("train", 0.0) for s in result.scores),
        "evaluation": sum(s.seconds.get("evaluate", 0.0) + s.seconds.get("baseline_evaluate", 0.0)
                          for s in result.scores),
        "scoring": t_scored - t_sampled,
        "intrinsic_reward": t_intrinsic - t_scored,
        "teacher_update": t_updated - t_intrinsic,
        "total": t_updated - t0,
    }
    _commit(loop, result.decision, record.as_dict(), step)
    return record.as_dict()


def _teacher_rewards(loop: Loop, datasets: list[list[Row]], scores: list[DatasetScore], baseline: Baseline,
                     step: int) -> list[float | None]:
    """Each dataset's reward for the teacher's RLOO: R_k, or (Intrinsic-T) its learnability under the baseline. A
    dataset whose students all failed: None, left out of the RLOO (soar.floor = "neutral", the default); a number
    there is that dataset's reward instead."""
    failed = None if loop.config.soar.floor == "neutral" else loop.config.soar.floor
    if loop.method.teacher_reward == "learnability":
        seed = step_seed(loop.config.run.seed, step)
        return [_learnability(loop.scorer, dataset, baseline, seed + k) if s.reward is not None else None
                for k, (dataset, s) in enumerate(zip(datasets, scores))]
    return [s.reward if s.reward is not None else failed for s in scores]


def _update_teacher(loop: Loop, sample: TeacherSample, groups: list[list[int]], rewards: list[float | None],
                    step: int) -> dict[str, float]:
    """One RLOO step of the teacher: A_k on every rollout of X_k (rollouts in no dataset are not trained on), then
    what the update changed (teacher.measure_drift)."""
    advantages = rloo_teacher_advantages(rewards)
    per_rollout = [0.0] * len(sample.rows)
    for k, group in enumerate(groups):
        for i in group:
            per_rollout[i] = advantages[k]
    used = [i for group in groups for i in group]
    kept = TeacherSample([sample.rows[i] for i in used], [sample.token_ids[i] for i in used],
                         sample.prompt_token_ids, sample.drawn, sample.rejected)
    update = loop.teacher.update(kept, [per_rollout[i] for i in used], step)
    if loop.config.teacher.measure_drift:
        update |= loop.teacher.drift(sample)
    return update


def _scored(loop: Loop, sample: TeacherSample, datasets: list[list[Row]], result, teacher_rewards, update,
            baseline: Baseline, promoted_before: bool) -> dict[str, Any]:
    """The step log's scores, promotion and update (StepLog.scored)."""
    config, scores, decision = loop.config, result.scores, result.decision
    diversity = question_diversity([row["question"] for row in sample.rows])
    return {
        "R_k": [s.reward for s in scores],
        "R_kj": [s.student_rewards for s in scores],
        "R_hat": decision.record.reward_hat,
        "moving_average": decision.record.moving_average,
        "teacher_rewards": teacher_rewards,
        "baseline": baseline.name,
        "baseline_accuracy": scores[0].baseline_accuracy,
        "q_r_balance": class_balance(result.q_r),
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
        "student_steps": sum(len(s.students) for s in scores) * config.student_train_config().steps_for(promoted_before),
        # why, in the step log itself (never a silent floor): "X_k student j: <cause>", and OOM retries
        "student_failures": [f"X_{k + 1} student {j}: {student.failure}" for k, s in enumerate(scores)
                             for j, student in enumerate(s.students) if student.failure is not None],
        "student_retries": sum(student.attempts - 1 for s in scores for student in s.students),
        "cached_datasets": sum(s.cached for s in scores),
        "promoted": decision.promoted,
        "promoted_dataset": decision.record.promoted_dataset,
        "diversity": diversity.as_metrics(prefix=""),
        "teacher_update": update,
    }


def _learnability(scorer: Scorer, dataset: Sequence[Row], baseline: Baseline, seed: int) -> float:
    """Sample the baseline student LEARNABILITY_SAMPLES times a problem; the Intrinsic-T reward. `scorer` is this
    process's GroundedScorer (or its TrackedScorer): Intrinsic-T refuses other backends (`_outer_loop`)."""
    with scorer.baseline_engine(baseline, "learnability-baseline") as (engine, adapter):
        successes = sample_successes(engine, scorer.task, dataset, LEARNABILITY_SAMPLES, seed=seed,
                                     max_new_tokens=scorer.config.tokens_for(scorer.task), adapter=adapter, progress=False)
    return learnability(successes.tolist())


def _commit(loop: Loop, decision: PromotionDecision, entry: dict[str, Any], step: int) -> None:
    """Teacher checkpoint and step log first, then state.json: the promotion commit is the step's commit."""
    folder = loop.run.folder
    loop.teacher.save(folder / TEACHER_DIR / f"step-{step + 1:06d}")
    entries = [e for e in _read_steps(folder) if e["step"] < step] + [entry]
    write_jsonl(folder / STEPS_FILE, entries)
    loop.promotion.commit(decision, config=loop.config.student_train_config())
    stale = folder / TEACHER_DIR / f"step-{step:06d}"
    if step > 0 and stale.is_dir():  # keep the newest checkpoint only
        shutil.rmtree(stale, ignore_errors=True)


def _read_steps(folder: Path) -> list[dict[str, Any]]:
    path = folder / STEPS_FILE
    return read_jsonl(path) if path.is_file() else []


def _truncate_steps(folder: Path, committed: int) -> None:
    """Drop log lines and checkpoints of a step that was killed before its commit."""
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
