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
- `floor` (default −1.0; or "neutral": R̂_t, so that the rollout carries no advantage) for an invalid rollout: R_k is a difference of accuracies, so R_k ≥ −1
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
import contextlib
import hashlib
import logging
import math
import queue
import random
import threading
from concurrent.futures import ThreadPoolExecutor
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import verifiers as vf

from rubrics.e1 import completion_text
from sv_soar.grounded import DatasetScore, GroundedScorer
from sv_soar.jsonl import read_jsonl
from sv_soar.promotion import PromotionDecision, PromotionRun, promote
from sv_soar.tasks import Row, get_task
from sv_soar_student.trainer import StudentTrainConfig
from sv_soar_teacher.contamination import HardSetIndex
from sv_soar_teacher.diversity import question_diversity
from sv_soar_teacher.problems import (
    ProblemLimits,
    RejectReason,
    Rejection,
    TeacherProblem,
    parse_teacher_problem,
    validate_batch,
)

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


# --------------------------------------------------------------------------------- the hard set


@dataclass(frozen=True)
class HardSet:
    """D_train (Q_R is drawn from it) and the contamination index over every hard-set question."""

    d_train: list[Row]
    index: HardSetIndex
    source: Path
    guarded: int  # questions the index holds


def load_hard_set(path: str | Path | None, task: str) -> HardSet:
    """A `sv-soar hardset --out` folder (D_train from d_train.jsonl; the guard covers hard_set.jsonl, or
    d_train + d_test), or a D_train JSONL file (the guard covers that file only)."""
    how = (
        f"run `sv-soar hardset --task {task} --model <student> --out DIR` (fail@K mining, docs/design.md §4) "
        "and pass hard_set=DIR"
    )
    if path is None:
        raise ValueError(f"sv-soar-teacher needs a hard set: {how}")
    path = Path(path).expanduser()
    validate = get_task(task).validate_row
    if path.is_dir():
        d_train_file = path / "d_train.jsonl"
        if not d_train_file.is_file():
            raise FileNotFoundError(f"{path}: no d_train.jsonl, not a hard-set folder; {how}")
        guard_files = [path / "hard_set.jsonl"] if (path / "hard_set.jsonl").is_file() else [
            f for f in (d_train_file, path / "d_test.jsonl") if f.is_file()
        ]
    elif path.is_file():
        d_train_file, guard_files = path, [path]
    else:
        raise FileNotFoundError(f"hard_set={str(path)!r}: no such file or folder; {how}")
    d_train = read_jsonl(d_train_file, validate)
    if not d_train:
        raise ValueError(f"{d_train_file}: D_train is empty; Q_R needs at least one question")
    guarded = [row for f in guard_files for row in (d_train if f == d_train_file else read_jsonl(f, validate))]
    return HardSet(d_train=d_train, index=HardSetIndex(guarded), source=d_train_file, guarded=len(guarded))


# --------------------------------------------------------------------------------- one step's pieces


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


NEUTRAL = "neutral"


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


class ScorerPool:
    """`size` scoring slots; each slot's GroundedScorer (its own model copy) is built on first use."""

    def __init__(self, build: Callable[[], GroundedScorer], size: int = 1) -> None:
        if size < 1:
            raise ValueError(f"max_concurrent_scorings must be at least 1, got {size}")
        self._build, self.size = build, size
        self._build_lock = threading.Lock()
        self._free: queue.Queue[int] = queue.Queue()
        for slot in range(size):
            self._free.put(slot)
        self._scorers: dict[int, GroundedScorer] = {}

    @contextlib.contextmanager
    def slot(self) -> Iterator[Callable[[], GroundedScorer]]:
        """Hold one slot (blocks the calling thread while all are busy); yields its scorer's getter."""
        slot = self._free.get()
        try:
            def scorer() -> GroundedScorer:
                # Every slot's scorer is built at the first use of any, one after another, before any scoring:
                # transformers' from_pretrained patches torch process-wide while it loads (new parameters go to
                # the meta device), so two loads at once failed ("Cannot copy out of meta tensor"), and a load
                # beside a scoring thread could catch the LoRA weights that thread was creating.
                with self._build_lock:
                    for s in range(self.size):
                        if s not in self._scorers:
                            self._scorers[s] = self._build()
                return self._scorers[slot]

            yield scorer
        finally:
            self._free.put(slot)


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
        floor: float | str = -1.0,
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
            scores: list[DatasetScore] = []
            error = None if datasets else "no valid teacher rollout in the group"
            if datasets:
                seed = step_seed(self.seed, step)
                phase = f"loading the student model {self.run.state.model!r}"
                try:
                    grounded = scorer()
                    phase = f"scoring {len(datasets)} dataset(s)"
                    scores = grounded.score(datasets, draw_q_r(self.hard_set.d_train, self.q_r, seed), baseline,
                                            seed=seed, promoted=promoted, keep_adapters=True)
                except Exception as exc:  # noqa: BLE001 - counted and given the floor, never fatal to the trainer
                    error = f"step {step}: {phase} failed: {type(exc).__name__}: {exc}"[:1000]
                    log.exception("sv-soar-teacher: %s", error.splitlines()[0])
            with self._lock, self.run.locked():  # re-reads state.json: another process may have promoted
                decision = promote(self.run.state, scores, datasets if scores else [], step=step,
                                   baseline_id=baseline.id, error=error)
                self.run.commit(decision, config=self.config)
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
