"""One SOAR outer step as a teacher env runs it (docs/design.md §5): g·n teacher completions in, one reward and
one metrics row per completion out. Both teacher envs are adapters of `TeacherStep`: the v0 env scores a group
of rollouts_per_example = g·n (sv_soar_teacher), the v1 env an episode of g·n traces (sv_soar_teacher_v1).

    texts      -> validate_batch              each completion: a TeacherProblem or a Rejection (counted by reason;
                                              hard-set near-duplicates rejected; None: the generation itself failed)
    valid      -> partition(valid, g, n)      X_1..X_g (sv_soar.soar_step.partition: the rule, and why)
    X_1..X_g   -> soar_step                   R_k on a fresh Q_R against the current baseline, SOAR's promotion
                                              rule, committed to the run folder (sv_soar.promotion_run)
    R_k        -> every completion of X_k     the rest get `floor`

With every completion of X_k rewarded R_k, reward − the mean over the group is SOAR's RLOO advantage up to a factor
(g−1)/g. Completions that cannot be scored get the floor: "neutral" gives R̂_t (the step's mean R_k), so they carry
~0 advantage, as SOAR's own loop discards invalid rollouts and leaves failed datasets out of its RLOO; a number
there (−1) would make a parse error or a machine fault the strongest signal of the step (typical R_k are ±0.05).
With nothing scored, every completion gets the same reward: the step gives the teacher no gradient.

Committing. A step is committed to the run folder unless it was cancelled (`score_async`'s caller dropped it: its
students finish in their thread and their result is discarded), or, with `redo_untrained`, its students could not
train (datasets but no R_k: the student model failed to load, every student failed); either way the step's number
is given back and the next step redoes it. Without `redo_untrained` (v0) such a step is recorded with its error.

Concurrency. At most `max_concurrent_scorings` steps are scored at once, each by its own scorer (a ScorerPool
slot: its own model copy), in this step's own threads, never on an event loop. The step index, the baseline and
every promotion are taken under one lock (a thread lock, and the run folder's file lock for env servers with
several worker processes). `one_at_a_time()` holds the run folder's episode lock across a whole episode (v1).
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import hashlib
import json
import logging
import re
import threading
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from sv_soar.backends import make_scorer
from sv_soar.backends.pool import ScorerPool
from sv_soar.hard_set import HardSet, load_hard_set
from sv_soar.models import cache_dir
from sv_soar.promotion import PromotionDecision
from sv_soar.promotion_run import PromotionRun
from sv_soar.scores import DatasetScore
from sv_soar.soar_defaults import NEUTRAL
from sv_soar.soar_step import StepResult, partition, soar_step
from sv_soar.student.config import StudentTrainConfig
from sv_soar.tasks import Row, get_task
from sv_soar.tasks.teacher import BatchValidation, validate_batch
from sv_soar.teacher.diversity import question_diversity
from sv_soar.teacher.checks import ProblemLimits, RejectReason, Rejection
from sv_soar.teacher_env_config import TeacherEnvConfig

log = logging.getLogger(__name__)

EPISODE_LOCK = "episode.lock"
# Per completion: valid, rejected_<reason> (1/0), dataset (k, 1-based; 0 = in none), dataset_reward (R_k, 0 when in
# none), student_reward_mean/min/max (R_kj of its dataset's finished students), students_failed, scoring_error,
# teacher_label_agreement (E2: F1 of the teacher's intended ids against the oracle's relabel). Per step (the same on
# every completion of it): the rest.
METRIC_NAMES = (
    "valid", "valid_fraction", *(f"rejected_{reason.value}" for reason in RejectReason), "rejected_agent_error",
    "dataset", "dataset_reward", "student_reward_mean", "student_reward_min", "student_reward_max",
    "students_failed", "scoring_error", "committed", "datasets", "baseline_accuracy", "reward_hat",
    "moving_average", "promoted", "outer_step", "diversity_distinct_2", "diversity_distinct_3",
    "diversity_pairwise_jaccard_distance", "teacher_label_agreement",
)


@dataclass
class ScoredStep:
    """One scored step: a reward and a metrics row per completion, and what the step measured and decided."""

    step: int
    rewards: list[float]
    metrics: list[dict[str, float]]
    datasets: list[list[Row]]
    scores: list[DatasetScore] = field(default_factory=list)
    decision: PromotionDecision | None = None
    error: str | None = None
    committed: bool = True


class StepCancelled(RuntimeError):
    """The step was cancelled before it took a step number: nothing was trained, nothing committed."""


class TeacherStep:
    """SOAR's outer step around a hard set, a run folder and a pool of scorers (module docstring)."""

    def __init__(self, config: TeacherEnvConfig, *, hard_set: HardSet, run: PromotionRun, scorers: ScorerPool,
                 redo_untrained: bool = False, limits: ProblemLimits | None = None) -> None:
        if redo_untrained and scorers.size != 1:
            raise ValueError("a step that redoes untrained steps scores one at a time: max_concurrent_scorings = 1")
        self.config, self.hard_set, self.run, self.scorers = config, hard_set, run, scorers
        self.redo_untrained, self.limits = redo_untrained, limits or ProblemLimits()
        self.task, self.problem_options = config.svbench_task, config.problem_options()
        self.student = config.student_train_config()
        self._lock = threading.Lock()  # step indices, the baseline, promotion updates
        self._next_step = run.state.next_step
        self._warned_size: set[int] = set()
        # steps waiting for a scorer wait in this pool's queue, not in threads of the event loop's own pool
        self._executor = ThreadPoolExecutor(max_workers=scorers.size, thread_name_prefix="sv-soar-teacher-step")

    @classmethod
    def open(cls, config: TeacherEnvConfig, hard_set_folder: str | Path | None, *, env: str = "teacher",
             students_token: str | None = None, redo_untrained: bool = False) -> TeacherStep:
        """The step of an env: the hard set in `hard_set_folder`, the run folder config.run_dir (default:
        `default_run_dir`), students built as config says (in this process, on Ray, or at students_url)."""
        spec = get_task(config.svbench_task)
        hard_spec = get_task(config.hard_set_task or spec.name)
        # the seed's experiment E: e1 problems trained with e1's rubric, measured on an e2 hard set (tasks/mixed.py)
        scoring = spec if hard_spec.name == spec.name else get_task(f"{spec.name}+{hard_spec.name}")
        hard = load_hard_set(hard_set_folder, hard_spec.name)
        student = config.student_train_config()
        run_dir = Path(config.run_dir) if config.run_dir else default_run_dir(config, hard, student, env)
        run = PromotionRun.open(run_dir, task=scoring.name, model=config.model, window=config.window, tau=config.tau)
        scorers = ScorerPool(
            lambda: make_scorer(config.model, scoring, student, backend=config.backend, ray_address=config.ray_address,
                                ray_actors=config.ray_actors, students_url=config.students_url,
                                students_token=students_token, students=config.students, grounding=config.grounding,
                                time_limit_s=config.time_limit_s, cache_dir=config.reward_cache, progress=False),
            size=config.max_concurrent_scorings,
        )
        log.info("sv-soar %s: hard set %s (%d D_train rows), run folder %s", env, hard.source, len(hard.d_train),
                 run_dir)
        return cls(config, hard_set=hard, run=run, scorers=scorers, redo_untrained=redo_untrained)

    async def score_async(self, texts: Sequence[str | None]) -> ScoredStep:
        """`score` in this step's threads. Cancelled, the step commits nothing: cancelled while it waits for a scorer, it
        never starts (StepCancelled, read by the done callback); once started, its students finish in their thread."""
        cancelled = threading.Event()
        scoring = asyncio.ensure_future(
            asyncio.get_running_loop().run_in_executor(self._executor, self.score, texts, cancelled))
        scoring.add_done_callback(lambda done: done.cancelled() or done.exception())  # read when abandoned
        try:
            return await asyncio.shield(scoring)
        except asyncio.CancelledError:  # a stale episode dropped, or a deadline
            cancelled.set()
            raise

    def score(self, texts: Sequence[str | None], cancelled: threading.Event | None = None) -> ScoredStep:
        """Rewards and metrics of one step's completions (None: its generation failed); blocking."""
        config = self.config
        g, n = config.g, config.n
        if len(texts) != g * n and len(texts) not in self._warned_size:
            self._warned_size.add(len(texts))
            log.warning("sv-soar teacher step: %d completions, but g·n = %d (run rollouts_per_example = %d; the "
                        "partition rule: sv_soar.soar_step.partition)", len(texts), g * n, g * n)
        batch = validate_batch([t or "" for t in texts], self.hard_set.index, self.limits, task=self.task,
                               options=self.problem_options)
        if batch.rejected:
            log.info("sv-soar teacher step: rejected %s", dict(batch.rejected))
        parts = partition([i for i in batch.valid_indices if texts[i] is not None], g, n)
        datasets = [[batch.outcomes[i].to_row() for i in part] for part in parts]  # type: ignore[union-attr]
        committed = False

        def commit(decision: PromotionDecision) -> None:  # under the run folder's lock
            nonlocal committed
            trained = not datasets or decision.record.reward_hat is not None
            if (trained or not self.redo_untrained) and not (cancelled is not None and cancelled.is_set()):
                self.run.commit(decision, config=self.student)
                committed = True

        with self.scorers.slot() as scorer:
            if cancelled is not None and cancelled.is_set():  # dropped while it waited for a scorer: no step taken
                raise StepCancelled("cancelled before it started; no step number taken, no student trained")
            with self._lock, self.run.locked():
                step = max(self._next_step, self.run.state.next_step)
                self._next_step = step + 1
                baseline, promoted = self.run.baseline(), self.run.state.promoted
            # the same step as `sv-soar train`'s; a failure is recorded and gives the step the floor
            result = soar_step(datasets, self.hard_set.d_train, scorer, self.run, q_r=config.q_r, seed=config.seed,
                               step=step, baseline=baseline, promoted=promoted, on_error="record", lock=self._lock,
                               commit=commit)
            if not committed:
                with self._lock:
                    if self._next_step == step + 1:  # no later step took a number: the next one redoes this one
                        self._next_step = step
        if not committed:
            log.warning("sv-soar teacher step %d not committed (%s); the next step redoes it", step,
                        "cancelled" if cancelled is not None and cancelled.is_set()
                        else result.error or "every student failed")
        for score in result.scores:  # the adapters were kept for promotion only
            for student in score.students:
                student.adapter_state = None
        rewards, metrics = self._rewards(texts, batch, parts, result, committed)
        return ScoredStep(step=step, rewards=rewards, metrics=metrics, datasets=datasets, scores=result.scores,
                          decision=result.decision, error=result.error, committed=committed)

    def _rewards(self, texts: Sequence[str | None], batch: BatchValidation, parts: list[list[int]],
                 result: StepResult, committed: bool) -> tuple[list[float], list[dict[str, float]]]:
        record, scores = result.decision.record, result.scores
        r_hat = record.reward_hat
        floor = (r_hat if r_hat is not None else 0.0) if self.config.floor == NEUTRAL else float(self.config.floor)
        step_row = {
            "valid_fraction": batch.valid_fraction,
            "datasets": float(len(parts)),
            "baseline_accuracy": scores[0].baseline_accuracy if scores else 0.0,
            "reward_hat": r_hat if r_hat is not None else 0.0,
            "moving_average": record.moving_average if record.moving_average is not None else 0.0,
            "promoted": float(record.promoted),
            "outer_step": float(result.step),
            "scoring_error": float(result.error is not None),
            "committed": float(committed),
            **question_diversity([p.question for p in batch.problems], seed=result.step).as_metrics("diversity_"),
        }
        dataset_of = {i: k for k, part in enumerate(parts) for i in part}
        rewards, metrics = [], []
        for i, outcome in enumerate(batch.outcomes):
            row = {name: 0.0 for name in METRIC_NAMES} | step_row
            reward = floor
            if texts[i] is None:
                row["rejected_agent_error"] = 1.0
            elif isinstance(outcome, Rejection):
                row[f"rejected_{outcome.reason.value}"] = 1.0
            elif i not in dataset_of:  # valid, beyond g·n (a trainer running more rollouts a prompt): not scored
                row["valid"] = 1.0
                reward = r_hat if r_hat is not None else floor
            else:
                k = dataset_of[i]
                row["valid"], row["dataset"] = 1.0, float(k + 1)
                row["teacher_label_agreement"] = float(getattr(outcome, "teacher_agreement", 0.0))
                if scores:
                    finished = [r for r in scores[k].student_rewards if r is not None]
                    row["students_failed"] = float(scores[k].n_failed)
                    if scores[k].reward is None:
                        row["scoring_error"] = 1.0
                    else:
                        reward = row["dataset_reward"] = scores[k].reward  # R_k
                    if finished:
                        row["student_reward_mean"] = sum(finished) / len(finished)
                        row["student_reward_min"], row["student_reward_max"] = min(finished), max(finished)
            rewards.append(float(reward))
            metrics.append({name: float(value) for name, value in row.items()})
        return rewards, metrics

    @contextlib.asynccontextmanager
    async def one_at_a_time(self):
        """Hold the run folder's episode lock (a file lock: env-server workers are processes) while an episode runs,
        so each outer step starts from the state the previous one committed. Polled rather than awaited in a
        thread, so an episode cancelled while it waits leaves nothing behind that takes the lock later."""
        self.run.run_dir.mkdir(parents=True, exist_ok=True)
        with open(self.run.run_dir / EPISODE_LOCK, "a+") as handle:
            while True:
                try:
                    fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    await asyncio.sleep(0.1)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)


# where the students train and how many prompts the env offers: not what the run is
NOT_IDENTITY = {"hard_set", "run_dir", "num_prompts", "students_url", "backend", "ray_address", "ray_actors",
                "max_concurrent_scorings", "reward_cache"}


def default_run_dir(config: TeacherEnvConfig, hard: HardSet, student: StudentTrainConfig, env: str) -> Path:
    """$SV_SOAR_CACHE/runs/<env>-<task>-<model>-<hash>: the same arguments and hard set give the same folder, so a
    restarted env resumes its promotion state without being told where it is."""
    identity = config.model_dump(mode="json", include=set(TeacherEnvConfig.model_fields) - NOT_IDENTITY)
    digest = hashlib.sha256(json.dumps([identity, student.model_dump(mode="json")], sort_keys=True).encode()
                            + hard.source.read_bytes()).hexdigest()[:12]
    slug = re.sub(r"[^A-Za-z0-9.-]+", "-", Path(config.model).name or config.model)[:40]
    return cache_dir() / "runs" / f"{env}-{config.svbench_task}-{slug}-{digest}"
