"""The one place this env touches the sv-soar core (issue 13's verifiers-free `sv_soar` package).

Everything the env needs from the core is imported here and nowhere else, so a move of the core's modules
is an edit of this file alone. The core imports no verifiers, so it loads beside verifiers 0.4 (the v0
packages sv_soar_teacher / sv_soar_student / rubrics, which import verifiers 0.1.x, are never imported).
"""

from __future__ import annotations

from contextlib import nullcontext
from dataclasses import dataclass, field
from typing import Any

from sv_soar.backends import make_scorer
from sv_soar.backends.pool import ScorerPool
from sv_soar.grounded import Baseline, DatasetScore
from sv_soar.hard_set import HardSet, load_hard_set
from sv_soar.hosted import PackagedDataError, packaged_set
from sv_soar.models import DEFAULT_MODEL, cache_dir
from sv_soar.promotion import TAU, WINDOW, PromotionDecision, PromotionRun, promote
from sv_soar.soar_step import draw_q_r, partition, step_seed
from sv_soar.student.config import StudentTrainConfig, student_config
from sv_soar.tasks import Row, Task, get_task
from sv_soar.teacher.diversity import question_diversity
from sv_soar.teacher.problems import ProblemLimits, RejectReason, Rejection, TeacherProblem, validate_batch
from sv_soar.teacher.prompts import teacher_prompt

__all__ = [
    "DEFAULT_MODEL", "TAU", "WINDOW", "Baseline", "DatasetScore", "HardSet", "PackagedDataError",
    "ProblemLimits", "PromotionDecision", "PromotionRun", "RejectReason", "Rejection", "Row", "ScorerPool",
    "StepResult", "StudentTrainConfig", "Task", "TeacherProblem", "cache_dir", "get_task", "load_hard_set",
    "make_scorer", "packaged_set", "partition", "question_diversity", "soar_step", "student_config",
    "teacher_prompt", "validate_batch",
]


@dataclass
class StepResult:
    """One scored outer step (the fields of the core's planned `sv_soar.soar_step.StepResult`)."""

    step: int
    q_r: list[Row]
    baseline: Baseline
    scores: list[DatasetScore] = field(default_factory=list)
    decision: PromotionDecision | None = None
    error: str | None = None


def soar_step(datasets, d_train, scorer, run: PromotionRun, *, q_r: int, seed: int, step: int, baseline: Baseline,
              promoted: bool, on_error: str = "raise", lock: Any = None) -> StepResult:
    """One SOAR outer step on datasets X_1..X_g: r students each from `baseline`, R_k on a fresh Q_R, then
    SOAR's promotion rule (not committed: the caller commits). Stands in for the core's
    `sv_soar.soar_step.soar_step` (same signature) until that lands; then this function goes and the import
    above names it."""
    seed_t = step_seed(seed, step)
    questions = draw_q_r(d_train, q_r, seed_t)
    scores: list[DatasetScore] = []
    error = None if datasets else "no valid teacher rollout in the episode"
    if datasets:
        try:
            scores = scorer.score(datasets, questions, baseline, seed=seed_t, promoted=promoted,
                                    keep_adapters=True)
        except Exception as exc:  # noqa: BLE001 - "record": the step gets the floor, the trainer keeps going
            if on_error == "raise":
                raise
            error = f"step {step}: scoring {len(datasets)} dataset(s) failed: {type(exc).__name__}: {exc}"[:1000]
    with lock or nullcontext(), run.locked():  # re-reads state.json: another env worker may have promoted
        decision = promote(run.state, scores, datasets if scores else [], step=step, baseline_id=baseline.id,
                           error=error)
    return StepResult(step=step, q_r=questions, baseline=baseline, scores=scores, decision=decision, error=error)
