"""SOAR's promotion rule (arXiv 2601.18778; docs/design.md §4).

Each outer step t scores g teacher datasets X_1..X_g against the current baseline student:

    R_k      = mean_j R_{k,j}                  (sv_soar.grounded: r students per dataset)
    R̂_t      = mean_k R_k                      over the datasets that have a reward
    MA_t     = mean(R̂ of the last `window` steps scored against the current baseline)
    promote  when MA_t > tau:
        k*         = argmax_k R_k
        baseline  <- the median-reward student of X_{k*}
        PQ        <- PQ ∪ X_{k*}                 (the promoted questions)

Defaults are the paper's: window = 3 steps, tau = 0.01 (docs/design.md §4).

Decisions where docs/design.md §4 and the seed write-up (docs/design.md §1) are silent, and why:
- The moving-average window restarts after a promotion (docs/design.md §4 and the seed write-up (docs/design.md §1) do not
  say; the rule is "moving average over the last 3 steps"), and it needs `window` full steps before
  it can promote. Why: R_k is an improvement *over the baseline*; after a promotion the baseline is a
  better student, so earlier R̂ measure improvement over another model. Keeping them in the window
  would let the evidence behind one promotion cause the next ones too (a high R̂ stays in the window
  for window−1 more steps), promoting students never shown to beat the new baseline. A full window
  also keeps one lucky first step (r=4 students on 64 questions are noisy) from promoting.
  Implemented as: the window holds the steps whose scores were measured against the current
  baseline (StepRecord.baseline_id). So a step that overlapped a promotion (concurrent scoring in
  the teacher environment) is recorded but neither counts nor promotes.
- A step where every dataset failed (no R_k) is recorded in the history with R̂ = None and is not
  counted in the window: an infrastructure failure is no evidence either way.
- "The median-reward student" of r students (r = 4 is even) is the lower median: sorted by reward
  R_{k,j} (ties by seed), the ((m−1)//2)-th of the m students that finished (statistics.median_low).
  It is always a real student, and of the two middle ones the less lucky, so a promotion does not
  hinge on the best single draw.
- argmax ties go to the lowest k; failed students never become the baseline.

The run directory that keeps the state between steps is sv_soar.promotion_run. This module imports no ML
library and no scorer: it is one of the rules of the algorithm, below the machinery that runs them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from sv_soar.baseline import Baseline
from sv_soar.scores import DatasetScore
from sv_soar.soar_defaults import TAU, WINDOW
from sv_soar.tasks.task import Row

BASELINE_DIR = "baseline"  # run-directory folders the state names (sv_soar.promotion_run)
PROMOTED_DIR = "promoted"
STATE_FORMAT = "sv-soar-promotion"


class BaselineRef(BaseModel):
    """Which student the rewards are measured against. folder None: the bare model."""

    model_config = ConfigDict(extra="forbid")

    name: str = "base"
    id: str = "base"
    folder: str | None = Field(None, description="adapter folder, relative to the run directory")


class StepRecord(BaseModel):
    """One outer step as the promotion rule saw it."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    step: int = Field(ge=0)
    baseline_id: str
    dataset_rewards: list[float | None] = Field(description="R_k of each dataset; None: all its students failed")
    reward_hat: float | None = Field(description="R̂_t = mean_k R_k; None when no dataset has a reward")
    moving_average: float | None = Field(description="mean R̂ over the window; None until the window is full")
    promoted: bool = False
    promoted_dataset: int | None = Field(None, description="k* (0-based) when promoted")
    promoted_student_seed: int | None = None
    error: str | None = None


class PromotionState(BaseModel):
    """Everything the promotion rule remembers between outer steps (persisted as state.json)."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False, validate_assignment=True)

    format: Literal["sv-soar-promotion"] = STATE_FORMAT
    version: Literal[1] = 1
    task: str
    model: str = Field(description="student base model the baselines are adapters of")
    window: int = Field(WINDOW, ge=1, description="steps in the moving average of R̂ (SOAR: 3)")
    tau: float = Field(TAU, description="promotion threshold on the moving average (SOAR: 0.01)")
    step: int = Field(0, ge=0, description="outer steps completed; the next step's index")
    history: list[StepRecord] = Field(default_factory=list)
    baseline: BaselineRef = Field(default_factory=BaselineRef)
    promoted_datasets: list[str] = Field(default_factory=list, description="PQ files, relative to the run directory")
    promotions: int = Field(0, ge=0)
    last_promotion_step: int | None = None

    @property
    def promoted(self) -> bool:
        """Whether the baseline was ever promoted (students then train longer: StudentTrainConfig.steps_for)."""
        return self.promotions > 0

    def window_rewards(self) -> list[float]:
        """R̂ of the scored steps measured against the current baseline, oldest first: the steps since
        the last promotion (a promotion changes the baseline, which restarts the window)."""
        return [r.reward_hat for r in self.history if r.baseline_id == self.baseline.id and r.reward_hat is not None]

    @property
    def next_step(self) -> int:
        """Index for a new step: after every recorded one (steps may complete out of order)."""
        return max([self.step, *(r.step + 1 for r in self.history)])

# --------------------------------------------------------------------------------- the rule


def reward_hat(scores: Sequence[DatasetScore]) -> float | None:
    """R̂_t = mean_k R_k over the datasets with a reward (None when none has one)."""
    rewards = [s.reward for s in scores if s.reward is not None]
    return sum(rewards) / len(rewards) if rewards else None


def moving_average(rewards: Sequence[float], window: int) -> float | None:
    """Mean of the last `window` values; None while fewer than `window` exist."""
    if len(rewards) < window:
        return None
    return sum(rewards[-window:]) / window


def median_student(score: DatasetScore):
    """The lower-median-reward finished student of one dataset (see the module docstring)."""
    finished = [s for s in score.students if s.reward is not None]
    if not finished:
        raise ValueError("no student of this dataset finished; none can become the baseline")
    ranked = sorted(finished, key=lambda s: (s.reward, s.seed))
    return ranked[(len(ranked) - 1) // 2]


@dataclass
class PromotionDecision:
    """What `promote` decided for one step; `state` is the state after it (not yet saved)."""

    state: PromotionState
    record: StepRecord
    baseline: Baseline | None = None  # the new baseline when promoted
    promoted_rows: list[Row] = field(default_factory=list)

    @property
    def promoted(self) -> bool:
        return self.record.promoted


def promote(
    state: PromotionState,
    scores: Sequence[DatasetScore],
    datasets: Sequence[Sequence[Row]],
    *,
    step: int | None = None,
    baseline_id: str | None = None,
    error: str | None = None,
) -> PromotionDecision:
    """Apply SOAR's promotion rule to one outer step's scores. Pure: `state` is left unchanged.

    `scores[k]` must be the score of `datasets[k]`, scored with keep_adapters=True (the promoted
    student's adapter comes from it). `step`: the step's index (default `state.next_step`).
    `baseline_id`: the baseline the scores were measured against (default the current one); scores
    against an older baseline (a step that overlapped a promotion) are recorded but cannot promote.
    No scores (a failed step, with `error`) records the step only.
    """
    if len(scores) != len(datasets):
        raise ValueError(f"promote: {len(scores)} scores for {len(datasets)} datasets")
    step = state.next_step if step is None else step
    baseline_id = state.baseline.id if baseline_id is None else baseline_id
    r_hat = reward_hat(scores)
    current = baseline_id == state.baseline.id
    average = moving_average([*state.window_rewards(), r_hat], state.window) if r_hat is not None and current else None
    record = StepRecord(
        step=step,
        baseline_id=baseline_id,
        dataset_rewards=[s.reward for s in scores],
        reward_hat=r_hat,
        moving_average=average,
        error=error,
    )
    new = state.model_copy(deep=True)
    new.step = state.step + 1
    if average is None or not average > state.tau:
        new.history.append(record)
        return PromotionDecision(state=new, record=record)

    rewarded = [k for k, s in enumerate(scores) if s.reward is not None]
    best = max(rewarded, key=lambda k: (scores[k].reward, -k))  # argmax_k R_k, ties to the lowest k
    student = median_student(scores[best])
    if student.adapter_state is None:
        raise ValueError(
            f"promote: step {step} promotes dataset {best}, but its students carry no adapter_state; "
            "score with keep_adapters=True"
        )
    baseline = Baseline(f"step-{step:06d}-x{best}-s{student.seed}", adapter_state=student.adapter_state)
    record.promoted, record.promoted_dataset, record.promoted_student_seed = True, best, student.seed
    new.history.append(record)
    new.promotions = state.promotions + 1
    # named by promotion number too: unique even when two processes scored steps with the same index
    name = f"{new.promotions:04d}-step-{step:06d}"
    new.baseline = BaselineRef(name=baseline.name, id=baseline.id, folder=f"{BASELINE_DIR}/{name}")
    new.promoted_datasets = [*state.promoted_datasets, f"{PROMOTED_DIR}/{name}.jsonl"]
    new.last_promotion_step = step
    return PromotionDecision(state=new, record=record, baseline=baseline, promoted_rows=list(datasets[best]))
