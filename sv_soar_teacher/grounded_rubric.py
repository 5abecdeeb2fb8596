"""The teacher's rubric: one group of g·n rollouts is one SOAR outer step (docs/design.md §5).

A hosted RL trainer normalises rewards inside the group of one prompt, so the teacher environment
runs rollouts_per_example = g·n and scores the whole group at once with the group reward function
`grounded_reward`:

    texts      -> validate_batch               each rollout: a TeacherProblem or a Rejection (counted by
                                               reason; hard-set near-duplicates rejected by HardSetIndex)
    valid      -> partition(valid, g, n)       the datasets X_1..X_g (rule below)
    Q_R        -> draw_q_r(D_train, q_r, ...)  a fresh draw each step, seeded by (seed, step)
    X_1..X_g   -> GroundedScorer.score         R_k against the current baseline student
    R_k        -> every rollout of X_k         invalid rollouts: `floor`
    scores     -> promote + commit             promotion state, persisted in the run directory

With every rollout of X_k rewarded R_k, the group-mean baseline of the trainer is RLOO's
leave-one-out baseline up to a factor g/(g−1) (docs/design.md §5).

Partition rule. SOAR resamples invalid rollouts until it has g·n valid ones (docs/design.md §4); a hosted
trainer cannot resample inside a group, so the valid rollouts of the group are used as they are:
the first min(V, g·n) valid rollouts, in rollout order, are cut into min(g, V) contiguous datasets
whose sizes differ by at most one (V = g·n: g datasets of n). Keeping g datasets, even smaller ones,
keeps the RLOO comparison between datasets; each student still trains its full number of steps
(the trainer cycles through a small dataset). Valid rollouts beyond g·n (only when the trainer runs
more than g·n rollouts a prompt) are not scored and get R̂_t, the step's mean reward.

Rewards, and why:
- `floor` (default "neutral", sv_soar.soar_defaults.FLOOR: R̂_t, so that the rollout carries no advantage; or a
  number <= 0 such as −1.0) for an invalid rollout: R_k is a difference of accuracies, so R_k ≥ −1
  (−1 with grounding="correctness"); at −1.0 an invalid rollout never outranks a valid one.
- A dataset whose students all failed (R_k None) gets the floor too, and so does the whole group
  when scoring itself raised (the model failed to load, an engine error): every rollout then has
  the same reward, so the group gives the teacher no gradient, and the error is counted.

Concurrency. verifiers scores groups concurrently, so at most `max_concurrent_scorings` groups are
scored at a time, each by its own GroundedScorer (its own model copy: scorers share nothing
mutable), built on first use; the step index, the baseline and every promotion update are taken
under one lock (a thread lock, and the run directory's file lock for env servers with several worker
processes), so promotions are serialised. Scoring runs in the rubric's own pool of
`max_concurrent_scorings` threads, never on the event loop; groups waiting for a scorer queue there.

Metrics (weight 0, so they never change the reward) are computed by `grounded_reward` into each
rollout's state and read back by one small function per name; verifiers reports them per rollout.
"""

from __future__ import annotations

import asyncio
import logging
import math
import threading
from concurrent.futures import ThreadPoolExecutor
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import verifiers as vf

from sv_soar.backends.pool import ScorerPool
from sv_soar.hard_set import HardSet
from sv_soar.promotion import PromotionDecision
from sv_soar.promotion_run import PromotionRun
from sv_soar.scores import DatasetScore
from sv_soar.scoring.completion_text import completion_text
from sv_soar.soar_defaults import FLOOR, NEUTRAL
from sv_soar.soar_step import partition, soar_step
from sv_soar.student.config import StudentTrainConfig
from sv_soar.tasks import Row
from sv_soar.tasks.teacher import parse_teacher_problem, validate_batch
from sv_soar.teacher.diversity import question_diversity
from sv_soar.teacher.problems import ProblemLimits, RejectReason, Rejection, TeacherProblem

log = logging.getLogger(__name__)

METRICS_KEY = "sv_soar_teacher"  # where grounded_reward leaves each rollout's metrics in its state
# Per rollout: valid, rejected_<reason> (1/0), dataset (k, 1-based; 0 = in none), dataset_reward (R_k, 0 when in
# none), student_reward_mean/min/max (R_kj of its dataset's finished students), students_failed, scoring_error.
# Per group (the same on every rollout of it): the rest.
METRIC_NAMES = (
    "valid",
    "valid_fraction",
    *(f"rejected_{reason.value}" for reason in RejectReason),
    "dataset",
    "dataset_reward",
    "student_reward_mean",
    "student_reward_min",
    "student_reward_max",
    "students_failed",
    "scoring_error",
    "datasets",
    "baseline_accuracy",
    "reward_hat",
    "moving_average",
    "promoted",
    "outer_step",
    "diversity_distinct_2",
    "diversity_distinct_3",
    "diversity_pairwise_jaccard_distance",
    "teacher_label_agreement",  # E2: F1 of the teacher's intended ids against the oracle's relabel
)




class TeacherProblemParser(vf.Parser):
    """verifiers parser for teacher rollouts: `parse` gives a TeacherProblem or a Rejection (never raises)."""

    def __init__(self, task: str = "e1", limits: ProblemLimits | None = None) -> None:
        super().__init__()
        self.task, self.limits = task, limits or ProblemLimits()
        self.options: dict[str, Any] = {}

    def parse(self, text: str) -> TeacherProblem | Rejection:
        return parse_teacher_problem(text, task=self.task, limits=self.limits, options=self.options)

    def parse_answer(self, completion: Any) -> str | None:
        """The problem's question in SV-Bench's format, or None when the rollout is no valid problem."""
        outcome = self.parse(completion_text(completion))
        return outcome.question if isinstance(outcome, TeacherProblem) else None


# --------------------------------------------------------------------------------- the rubric


@dataclass
class StepOutcome:
    """One scored group: a reward and a metrics dict per rollout, and what the step decided."""

    step: int
    rewards: list[float]
    metrics: list[dict[str, float]]
    datasets: list[list[Row]]
    scores: list[DatasetScore] = field(default_factory=list)
    decision: PromotionDecision | None = None
    error: str | None = None


class GroundedTeacherRubric(vf.Rubric):
    """Main reward: the group function `grounded_reward` (R_k per rollout); then weight-0 metrics."""

    def __init__(
        self,
        *,
        task: str,
        hard_set: HardSet,
        run: PromotionRun,
        scorers: ScorerPool,
        config: StudentTrainConfig,
        g: int = 4,
        n: int = 64,
        q_r: int = 64,
        floor: float | str = FLOOR,
        seed: int = 0,
        limits: ProblemLimits | None = None,
        problem_options: dict[str, Any] | None = None,
    ) -> None:
        for name, value in (("g", g), ("n", n), ("q_r", q_r)):
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if floor != NEUTRAL and (isinstance(floor, str) or not math.isfinite(floor)):
            raise ValueError(f"floor must be a finite number or {NEUTRAL!r}, got {floor!r}")
        self.limits = limits or ProblemLimits()
        super().__init__(parser=TeacherProblemParser(task, self.limits))
        self.task, self.hard_set, self.run, self.scorers, self.config = task, hard_set, run, scorers, config
        self.g, self.n, self.q_r, self.seed = g, n, q_r, seed
        self.floor = floor if floor == NEUTRAL else float(floor)
        self.problem_options = dict(problem_options or {})
        self.parser.options = self.problem_options
        self._lock = threading.Lock()  # step indices, the baseline, promotion updates
        self._next_step = run.state.next_step
        self._warned_size: set[int] = set()
        # groups waiting for a scorer wait in this pool's queue, not in threads of the event loop's own pool
        self._executor = ThreadPoolExecutor(max_workers=scorers.size, thread_name_prefix="sv-soar-teacher-scoring")
        self.add_reward_func(self.grounded_reward, weight=1.0)
        for name in METRIC_NAMES:
            self.add_metric(_metric(name))

    async def grounded_reward(self, completions: list, states: list, **kwargs: Any) -> list[float]:
        """R_k for every rollout of dataset X_k, the floor for invalid rollouts (one group = one outer step)."""
        texts = [completion_text(c) for c in completions]
        outcome = await asyncio.get_running_loop().run_in_executor(self._executor, self.score_step, texts)
        for state, metrics in zip(states, outcome.metrics):
            state[METRICS_KEY] = metrics
        return outcome.rewards

    def score_step(self, texts: Sequence[Any]) -> StepOutcome:
        """Score one group of teacher completions as one outer step; blocking (runs in a worker thread)."""
        if len(texts) != self.g * self.n and len(texts) not in self._warned_size:
            self._warned_size.add(len(texts))
            log.warning("sv-soar-teacher: a group of %d rollouts, but g·n = %d: run rollouts_per_example = %d "
                        "(partition rule: sv_soar_teacher.grounded_rubric)", len(texts), self.g * self.n,
                        self.g * self.n)
        batch = validate_batch(list(texts), self.hard_set.index, self.limits, task=self.task,
                               options=self.problem_options)
        if batch.rejected:
            log.info("sv-soar-teacher: rejected %s", dict(batch.rejected))
        parts = partition(batch.valid_indices, self.g, self.n)
        datasets = [[batch.outcomes[i].to_row() for i in part] for part in parts]  # type: ignore[union-attr]

        with self.scorers.slot() as scorer:
            with self._lock, self.run.locked():
                step = max(self._next_step, self.run.state.next_step)
                self._next_step = step + 1
                baseline, promoted = self.run.baseline(), self.run.state.promoted
            # the same step as `sv-soar train`'s (sv_soar.soar_step); a failure gives the group the floor
            result = soar_step(datasets, self.hard_set.d_train, scorer, self.run, q_r=self.q_r, seed=self.seed,
                               step=step, baseline=baseline, promoted=promoted, on_error="record", lock=self._lock,
                               commit=lambda decision: self.run.commit(decision, config=self.config))
        scores, decision, error = result.scores, result.decision, result.error
        for score in scores:  # the adapters were kept for promotion only
            for student in score.students:
                student.adapter_state = None
        return self._outcome(step, texts, batch, parts, datasets, scores, decision, error)

    def _outcome(self, step, texts, batch, parts, datasets, scores, decision, error) -> StepOutcome:
        record = decision.record
        r_hat = record.reward_hat
        group = {
            "valid_fraction": batch.valid_fraction,
            "datasets": float(len(parts)),
            "baseline_accuracy": scores[0].baseline_accuracy if scores else 0.0,
            "reward_hat": r_hat if r_hat is not None else 0.0,
            "moving_average": record.moving_average if record.moving_average is not None else 0.0,
            "promoted": float(record.promoted),
            "outer_step": float(step),
            **question_diversity([p.question for p in batch.problems], seed=step).as_metrics("diversity_"),
        }
        dataset_of = {i: k for k, part in enumerate(parts) for i in part}
        # floor = "neutral": an invalid rollout, or one of a dataset whose students all failed, gets R̂_t,
        # the mean R_k of the datasets that were scored: under the trainer's group-mean baseline its
        # advantage is ~0, as SOAR's own loop discards invalid rollouts and leaves failed datasets out of
        # its RLOO. A number there is the reward itself (−1: a fault or a parse error becomes the
        # strongest signal of the step). With nothing scored at all, every rollout gets the same reward.
        if self.floor == NEUTRAL:
            floor = r_hat if r_hat is not None else 0.0
        else:
            floor = self.floor
        rewards, metrics = [], []
        for i, outcome in enumerate(batch.outcomes):
            row = {name: 0.0 for name in METRIC_NAMES} | group
            row["scoring_error"] = float(error is not None)
            if isinstance(outcome, Rejection):
                row[f"rejected_{outcome.reason.value}"] = 1.0
                reward = floor
            elif i not in dataset_of:  # valid, beyond g·n: not scored
                row["valid"] = 1.0
                reward = r_hat if r_hat is not None else floor
            else:
                row["valid"], k = 1.0, dataset_of[i]
                row["teacher_label_agreement"] = float(getattr(outcome, "teacher_agreement", 0.0))
                row["dataset"] = float(k + 1)
                score = scores[k] if scores else None
                reward = floor
                if score is not None:
                    finished = [r for r in score.student_rewards if r is not None]
                    row["students_failed"] = float(score.n_failed)
                    if score.reward is None:
                        row["scoring_error"] = 1.0
                    else:
                        reward = row["dataset_reward"] = score.reward  # R_k
                    if finished:
                        row["student_reward_mean"] = sum(finished) / len(finished)
                        row["student_reward_min"], row["student_reward_max"] = min(finished), max(finished)
            rewards.append(float(reward))
            metrics.append(row)
        return StepOutcome(step=step, rewards=rewards, metrics=metrics, datasets=datasets, scores=scores,
                           decision=decision, error=error)


def _metric(name: str) -> Callable[..., float]:
    def metric(state: Any) -> float:
        return float((state.get(METRICS_KEY) or {}).get(name, 0.0))

    metric.__name__ = name
    metric.__doc__ = f"{name} of this rollout's outer step (weight 0; see grounded_rubric.METRIC_NAMES)"
    return metric
