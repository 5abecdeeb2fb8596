"""One SOAR outer step, in the paper's words (arXiv 2601.18778 §3; docs/design.md §4).

The teacher wrote g·n valid problems; they are cut into g datasets X_1..X_g of n (`partition`). For each
X_k, r students start from the current baseline student and train on X_k; Q_R is q_r hard-set questions
drawn afresh each step (`draw_q_r`). With Acc the accuracy on Q_R:

    R_kj  = Acc(student_kj, Q_R) − Acc(baseline, Q_R)     student j's grounded improvement
    R_k   = mean_j R_kj                                    the teacher's reward for X_k
    R̂_t   = mean_k R_k                                     the step's reward; promote when its moving
                                                           average over `window` steps exceeds τ
    A_k   = R_k − mean_{k'≠k} R_k'                         the teacher's RLOO advantage (rloo_teacher_advantages)

Promotion (sv_soar.promotion.promote): the median student of argmax_k R_k becomes the baseline and X_k
joins the promoted questions. The scorer that trains students and measures R_kj is a `Scorer`
(sv_soar.scores): sv_soar.grounded.GroundedScorer, or a backend of sv_soar.backends.make_scorer. This module
imports neither torch nor a scorer: the rules sit below the machinery that runs them.

Two drivers call `soar_step`: `sv-soar train` (sv_soar.soar_loop: rejection sampling of the teacher
before, the teacher's RLOO update after) and the teacher envs' step (sv_soar.teacher_step: the floor for
invalid rollouts and the metrics after), which the verifiers v0 env (one group = one step) and the v1 env for
hosted training (one episode = one step) both run.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import random
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from sv_soar.baseline import Baseline
from sv_soar.promotion import PromotionDecision, promote
from sv_soar.scores import DatasetScore, Scorer
from sv_soar.tasks.task import Row

if TYPE_CHECKING:  # the run directory loads and saves baselines' weights (torch); the step only locks and reads it
    from sv_soar.promotion_run import PromotionRun

log = logging.getLogger(__name__)


def partition(valid: Sequence[int], g: int, n: int) -> list[list[int]]:
    """The first min(V, g·n) valid rollout indices, cut into min(g, V) contiguous datasets whose sizes
    differ by at most one (the module docstring says why)."""
    used = list(valid[: g * n])
    count = min(g, len(used))
    if count == 0:
        return []
    size, extra = divmod(len(used), count)
    parts, start = [], 0
    for k in range(count):
        end = start + size + (1 if k < extra else 0)
        parts.append(used[start:end])
        start = end
    return parts


def step_seed(seed: int, step: int) -> int:
    """Seed of outer step `step` (Q_R's draw and the students), from (seed, step) only."""
    digest = hashlib.sha256(f"sv-soar-teacher-step:{seed}:{step}".encode()).digest()
    return int.from_bytes(digest[:4], "little") & 0x7FFFFFFF


def draw_q_r(d_train: Sequence[Row], q_r: int, seed: int) -> list[Row]:
    """Q_R: q_r questions of D_train without replacement (all of it when smaller), drawn afresh each step,
    stratified by label when the rows' answers are labels (E1): the labels share Q_R as evenly as D_train
    allows. A fail@K hard set of a binary task is mostly one class; drawn plainly, Q_R is too, and
    R_k = ΔAcc then rewards datasets that flip the student's label prior, not ones that teach it."""
    rows = list(d_train)
    rng = random.Random(seed)
    size = min(q_r, len(rows))
    by_label: dict[str, list[Row]] = {}
    for row in rows:
        answer = row.get("answer") if isinstance(row, dict) else None
        if not isinstance(answer, str):
            return rng.sample(rows, size)  # not a labelled task (E2's answers are findings): a plain draw
        by_label.setdefault(answer, []).append(row)
    for members in by_label.values():
        rng.shuffle(members)
    labels = sorted(by_label)
    taken = {label: 0 for label in labels}
    while sum(taken.values()) < size:  # round robin over the labels that have rows left
        for label in labels:
            if taken[label] < len(by_label[label]) and sum(taken.values()) < size:
                taken[label] += 1
    chosen = [row for label in labels for row in by_label[label][:taken[label]]]
    rng.shuffle(chosen)
    return chosen


def class_balance(rows: Sequence[Row]) -> dict[str, int]:
    """Rows a label (E1); empty for tasks whose answers are not labels."""
    counts: dict[str, int] = {}
    for row in rows:
        answer = row.get("answer") if isinstance(row, dict) else None
        if not isinstance(answer, str):
            return {}
        counts[answer] = counts.get(answer, 0) + 1
    return dict(sorted(counts.items()))


def problem_mix(task, rows: Sequence[Row]) -> dict[str, float]:
    """What the teacher's valid problems of a step are made of, where the task can tell: the share of stepping
    stones (`Task.stepping_stone`, the mechanism task's icmp flows) and, where an oracle relabelled them, the share
    whose teacher label agreed with it (meta.teacher_answer). Empty for tasks that tell neither."""
    mix: dict[str, float] = {}
    if task.stepping_stone is not None and rows:
        mix["stepping_stone_share"] = sum(bool(task.stepping_stone(row)) for row in rows) / len(rows)
    judged = [row for row in rows if "teacher_answer" in (row.get("meta") or {})]
    if judged:
        mix["teacher_label_agreement"] = sum(row["meta"]["teacher_answer"] == row["answer"] for row in judged) / len(judged)
    return mix


def rloo_teacher_advantages(rewards: Sequence[float | None]) -> list[float]:
    """A_k = R_k − mean_{j≠k} R_j over the g datasets of one step (SOAR's teacher RLOO, docs/design.md §4).

    A dataset whose students all failed (R_k None: an error, out of memory, a time limit) says nothing
    about the teacher's problems, so it is left out: advantage 0, and it is no one's baseline. A floor
    of −1 in its place would be the strongest signal of the step (typical R_k are ±0.05) and teach the
    teacher to avoid whatever it wrote when a machine failed."""
    finished = [r for r in rewards if r is not None]
    g = len(finished)
    if g < 2:
        return [0.0] * len(rewards)
    total = sum(finished)
    return [0.0 if r is None else r - (total - r) / (g - 1) for r in rewards]


def learnability(successes: Sequence[Sequence[bool]]) -> float:
    """The Intrinsic-T reward of a dataset: mean over problems of (0 if s̄ = 0 else 1 − s̄)."""
    values = []
    for outcomes in successes:
        s_bar = sum(outcomes) / len(outcomes)
        values.append(0.0 if s_bar == 0 else 1.0 - s_bar)
    return sum(values) / len(values) if values else 0.0


@dataclass
class StepResult:
    """What one outer step measured and decided (the decision is committed by `commit` or the caller)."""

    step: int
    q_r: list[Row]
    baseline: Baseline
    scores: list[DatasetScore]  # one per dataset; empty when scoring failed or there was no dataset
    decision: PromotionDecision
    error: str | None = None

    @property
    def R_kj(self) -> list[list[float | None]]:  # noqa: N802 - the paper's name
        """Student j's grounded improvement on Q_R, for each dataset k (None: the student failed)."""
        return [score.student_rewards for score in self.scores]

    @property
    def R_k(self) -> list[float | None]:  # noqa: N802 - the paper's name
        """mean_j R_kj, the teacher's reward for dataset X_k (None: all its students failed)."""
        return [score.reward for score in self.scores]

    @property
    def R_hat(self) -> float | None:  # noqa: N802 - the paper's name
        """mean_k R_k, the step's reward; its moving average decides promotion."""
        return self.decision.record.reward_hat

    @property
    def promoted(self) -> bool:
        return self.decision.promoted


def soar_step(
    datasets: Sequence[Sequence[Row]],
    d_train: Sequence[Row],
    scorer: Scorer | Callable[[], Scorer],
    run: PromotionRun,
    *,
    q_r: int,
    seed: int,
    step: int,
    baseline: Baseline,
    promoted: bool,
    on_error: Literal["raise", "record"] = "raise",
    lock: AbstractContextManager = contextlib.nullcontext(),
    commit: Callable[[PromotionDecision], None] | None = None,
) -> StepResult:
    """Score X_1..X_g against `baseline` on a fresh Q_R and apply the promotion rule: one outer step.

    `scorer`: a Scorer (GroundedScorer, or any backend of sv_soar.backends.make_scorer), or a function that
    builds one (its failure is reported as loading the student model). `baseline` and `promoted` are the
    run state read when the step began. `on_error="record"`: a failure while scoring becomes
    `result.error` and the step is recorded without scores (the teacher env gives its rollouts the
    floor); "raise" lets it through (`sv-soar train`). The promotion is decided while `lock` and the run
    directory's lock are held, from the newest state.json (another process may have promoted), and
    `commit(decision)` runs under the same locks; without it the caller commits the decision.
    """
    seed_t = step_seed(seed, step)
    q_r_rows = draw_q_r(d_train, q_r, seed_t)
    scores: list[DatasetScore] = []
    error = None if datasets else "no valid teacher rollout in the group"
    if datasets:
        phase = f"loading the student model {run.state.model!r}"
        try:
            grounded = scorer if isinstance(scorer, Scorer) else scorer()
            phase = f"scoring {len(datasets)} dataset(s)"
            scores = grounded.score(datasets, q_r_rows, baseline, seed=seed_t, promoted=promoted, keep_adapters=True)
        except Exception as exc:  # noqa: BLE001 - "record": counted as the step's error, never fatal to a trainer
            if on_error == "raise":
                raise
            error = f"step {step}: {phase} failed: {type(exc).__name__}: {exc}"[:1000]
            log.exception("sv-soar step: %s", error.splitlines()[0])
    with lock, run.locked():
        decision = promote(run.state, scores, datasets if scores else [], step=step, baseline_id=baseline.id,
                           error=error)
        if commit is not None:
            commit(decision)
    return StepResult(step=step, q_r=q_r_rows, baseline=baseline, scores=scores, decision=decision, error=error)
