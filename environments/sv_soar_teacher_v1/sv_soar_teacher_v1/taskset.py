"""sv-soar-teacher-v1: the SOAR teacher as a verifiers v1 env (verifiers >= 0.4; prime-rl loads only these).

One episode is one SOAR outer step (arXiv 2601.18778 §3). prime-rl scores each episode on its own and has
no group reward over the rollouts of one prompt (the v0 env's design), so the whole step lives inside one
episode, run with group_size = 1:

    run()       g·n runs of the `teacher` agent on the teacher prompt, one problem each (one trace each)
    finalize()  validate_batch -> partition into X_1..X_g -> r students each on the core's scorer -> R_k
                on a fresh Q_R -> SOAR's promotion rule, committed to the run directory; then every trace
                of X_k records reward R_k ("grounded_improvement") and the step's metrics

Invalid rollouts (a parse error, a hard-set near-duplicate) and traces of a dataset whose students all failed
get the `floor`: by default "neutral", R̂_t (the step's mean R_k), so that under the trainer's baseline (the
mean reward of the episode's traces) they carry ~0 advantage, as SOAR's own loop discards invalid rollouts; a
number there (−1) would make a parse error the strongest signal of the step (typical R_k are ±0.05). With
every trace of X_k rewarded R_k, reward − mean over the episode is SOAR's RLOO advantage R_k − mean_{k'≠k} R_k'
up to the factor (g−1)/g.

What a real run must survive (prime-rl's run semantics, docs/hosted.md "Failures and concurrency"):
- A failed teacher generation (model error, timeout, an agent run that raised) stays inside the episode: its
  trace is made ok and untrainable (`agent.trainable = False`), so it carries no advantage and the episode
  stays ok. prime-rl fails every trace of an episode that is not ok ("A sibling trace in this episode
  failed", prime_rl/orchestrator/envs.py) and trains only ok, trainable traces (algo/base.py,
  iter_trainable_traces); verifiers' episode is ok only when all its traces are (Env.run_episode).
- A step whose students could not be trained (the student model failed to load, every student failed)
  commits nothing; its traces get the floor and the next episode redoes the step.
- One outer step at a time: episodes of one run directory run one after another (a lock file in the run
  directory, across env-server workers), and an episode cancelled mid-step (prime-rl drops stale
  episodes) commits nothing; its students finish in their thread, their result is discarded.

The taskset's arguments are `SoarTeacherConfig` (TOML: [orchestrator.train.source.env.taskset]); the hard
set is a *name* packaged into this env (`sv-soar package-env`), never a path. Students train in the env
server's process (`backend = "local"`), or on `sv-soar serve-students` at `students_url` with the token from
the env server's environment variable SV_SOAR_STUDENTS_TOKEN (README, "Hosted training").
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import hashlib
import json
import logging
import math
import os
import re
import threading
from pathlib import Path
from typing import Any, Literal

import verifiers.v1 as vf
from pydantic import Field, field_validator

from sv_soar_teacher_v1 import core

log = logging.getLogger(__name__)

NEUTRAL = core.NEUTRAL
REWARD = "grounded_improvement"
STUDENTS_TOKEN_VAR = "SV_SOAR_STUDENTS_TOKEN"
EPISODE_LOCK = "episode.lock"
# per trace: valid, rejected_<reason>, dataset (k, 1-based; 0 = in none), dataset_reward (R_k), students_failed;
# per step (the same on every trace of the episode): the rest
METRIC_NAMES = (
    "valid",
    "valid_fraction",
    *(f"rejected_{reason.value}" for reason in core.RejectReason),
    "rejected_agent_error",
    "dataset",
    "dataset_reward",
    "students_failed",
    "scoring_error",
    "committed",
    "datasets",
    "baseline_accuracy",
    "reward_hat",
    "moving_average",
    "promoted",
    "outer_step",
    "diversity_distinct_2",
    "diversity_distinct_3",
    "diversity_pairwise_jaccard_distance",
)


class SoarTeacherConfig(vf.TasksetConfig):
    """The teacher env's arguments. `task` is the taskset's reserved per-task config, hence `svbench_task`."""

    svbench_task: Literal[core.task_names()] = "e1"
    """SV-Bench environment the teacher writes problems for (E1 network logs, E2 config audit)."""
    hard_set: str = ""
    """Name of the hard set packaged into this env (`sv-soar package-env DIR --env ... --name NAME`)."""
    hard_set_task: Literal[core.task_names()] | None = None
    """The hard set's task when it differs from svbench_task (experiment E: e1 problems, e2 hard set)."""
    model: str = core.DEFAULT_MODEL
    """The student model the r students start from (a HF id on a cluster; the embedded model here)."""
    preset: Literal[core.PRESETS] = "paper"
    """Student-training preset (sv_soar.student.config.PRESETS); `student` overrides single fields."""
    student: dict[str, Any] = Field(default_factory=dict)
    g: int = Field(4, ge=1)
    """Datasets an outer step (SOAR: 4)."""
    n: int = Field(64, ge=1)
    """Problems a dataset (SOAR: 64): an episode runs g·n teacher generations."""
    students: int = Field(4, ge=1)
    """r, students trained on each dataset (SOAR: 4)."""
    q_r: int = Field(64, ge=1)
    """|Q_R|, hard-set questions drawn afresh each step to measure the students."""
    grounding: Literal["correctness", "full"] = "correctness"
    floor: float | Literal["neutral"] = core.FLOOR  # the one default (sv_soar/soar_defaults.py)
    """Reward of an invalid rollout: "neutral" (R̂_t, ~0 advantage) or a number."""
    seed: int = 0
    tau: float = core.TAU
    window: int = Field(core.WINDOW, ge=1)
    num_prompts: int = Field(200, ge=1)
    """Episodes (outer steps) the taskset offers: SOAR runs 200 teacher updates."""
    run_dir: str | None = None
    """Where the promotion state lives (default: a folder under the sv-soar cache named by these
    arguments, so a restarted env server resumes it)."""
    students_url: str | None = None
    """`sv-soar serve-students` URL for an env server without a GPU; token: $SV_SOAR_STUDENTS_TOKEN."""
    time_limit_s: float | None = Field(None, gt=0)
    difficulty: str | None = None
    sub_skill: str | None = None
    lang: str | None = None

    @field_validator("floor")
    @classmethod
    def _finite_floor(cls, value):
        if value != NEUTRAL and not math.isfinite(value):
            raise ValueError(f"floor must be a finite number or {NEUTRAL!r}, got {value!r}")
        return value


class TeacherPromptData(vf.TaskData):
    svbench_task: str


class TeacherPromptTask(vf.Task[TeacherPromptData]):
    """The teacher prompt; no per-trace reward: the teacher is judged by what its problems do to students."""

    @vf.stop
    async def one_problem(self, trace: vf.Trace) -> bool:
        return trace.num_turns >= 1  # one reply, one problem


class SoarTeacherTaskset(vf.Taskset[TeacherPromptTask, SoarTeacherConfig]):
    """num_prompts copies of the teacher prompt: SOAR's teacher sees no seed questions (sv_soar.teacher.prompts)."""

    def load(self) -> list[TeacherPromptTask]:
        options = {k: v for k in ("difficulty", "sub_skill", "lang") if (v := getattr(self.config, k))}
        system, user = core.teacher_prompt(self.config.svbench_task, **options)
        return [
            TeacherPromptTask(
                TeacherPromptData(idx=i, name=f"outer-step-{i}", prompt=user["content"],
                                  system_prompt=system["content"], svbench_task=self.config.svbench_task),
                self.config.task,
            )
            for i in range(self.config.num_prompts)
        ]


class SoarTeacherEnvConfig(vf.EnvConfig):
    teacher: vf.AgentConfig = vf.AgentConfig()
    """The trained policy, run g·n times an episode."""


class SoarTeacherEnv(vf.Env[SoarTeacherEnvConfig]):
    """One episode = one SOAR outer step (module docstring)."""

    def __init__(self, config: SoarTeacherEnvConfig) -> None:
        super().__init__(config)
        self.args: SoarTeacherConfig = self.taskset.config
        self._step_lock = threading.Lock()
        self._outer: OuterStep | None = None

    def outer(self) -> OuterStep:
        with self._step_lock:
            if self._outer is None:
                self._outer = OuterStep(self.args)
            return self._outer

    async def run_episode(self, task: vf.Task, ctx, **hooks) -> vf.Episode:
        """verifiers' episode (setup, run, finalize), one at a time per run directory: an outer step starts
        from the state the previous one committed (module docstring)."""
        try:
            outer = await asyncio.to_thread(self.outer)  # builds the hard set's index and the run dir once
        except Exception:  # noqa: BLE001 - finalize meets the same error and records it on the episode
            return await super().run_episode(task, ctx, **hooks)
        async with one_outer_step_at_a_time(outer.run.run_dir):
            return await super().run_episode(task, ctx, **hooks)

    async def run(self, task: vf.Task, agents: vf.Agents) -> None:
        # TaskGroup: a raising run cancels its siblings; a failed agent run is data on its trace (finalize
        # decides what it means). How many run at once is --env.max-concurrent-agents.
        async with asyncio.TaskGroup() as tg:
            for _ in range(self.args.g * self.args.n):
                tg.create_task(agents.teacher.run(task))

    async def finalize(self, task: vf.Task, episode: vf.Episode) -> None:
        traces = [t for t in episode.traces if t.agent.name == "teacher"]
        texts = [(t.last_reply or "") if t.ok else None for t in traces]
        for trace in traces:
            if not trace.ok:  # a failed generation: ok, so its siblings train; untrainable, so it carries nothing
                trace.ok = True
                trace.agent.trainable = False
        outer = await asyncio.to_thread(self.outer)
        cancelled = threading.Event()
        scoring = asyncio.ensure_future(asyncio.to_thread(outer.score, texts, cancelled))
        scoring.add_done_callback(lambda done: done.cancelled() or done.exception())  # read when abandoned
        try:
            rewards, metrics = await asyncio.shield(scoring)
        except asyncio.CancelledError:  # a stale episode dropped, or a finalize deadline: nothing is committed
            cancelled.set()
            raise
        for trace, reward, row in zip(traces, rewards, metrics):
            trace.record_metrics(row)
            trace.record_reward(REWARD, reward)

    def complete(self, episode: vf.Episode) -> bool:
        # a failed teacher run is scored (the floor), not redone: the step is committed either way
        return not episode.errors


class OuterStep:
    """The scoring half of an episode: the core's SOAR step around a packaged hard set and a run directory."""

    def __init__(self, args: SoarTeacherConfig) -> None:
        self.args = args
        spec = core.get_task(args.svbench_task)
        hard_spec = core.get_task(args.hard_set_task or spec.name)
        self.task = spec.name
        self.scoring = spec if hard_spec.name == spec.name else core.get_task(f"{spec.name}+{hard_spec.name}")
        folder = core.packaged_set(__package__, args.hard_set, arg="hard_set")
        self.hard = core.load_hard_set(folder, hard_spec.name)
        self.config = core.student_config(args.preset, args.student or None)
        run_dir = Path(args.run_dir) if args.run_dir else default_run_dir(args, self.hard, self.config)
        self.run = core.PromotionRun.open(run_dir, task=self.scoring.name, model=args.model, window=args.window,
                                          tau=args.tau)
        token = os.environ.get(STUDENTS_TOKEN_VAR) if args.students_url else None
        self.scorers = core.ScorerPool(
            lambda: core.make_scorer(args.model, self.scoring, self.config, students_url=args.students_url,
                                     students_token=token, students=args.students, grounding=args.grounding,
                                     time_limit_s=args.time_limit_s, progress=False),
            size=1,
        )
        self.problem_options = {k: v for k in ("difficulty", "sub_skill") if (v := getattr(args, k))}
        self.limits = core.ProblemLimits()
        log.info("sv-soar-teacher-v1: hard set %r (%d D_train rows), run dir %s", args.hard_set,
                 len(self.hard.d_train), run_dir)

    def score(self, texts: list[str | None], cancelled: threading.Event | None = None,
              ) -> tuple[list[float], list[dict[str, float]]]:
        """Rewards and metrics of one episode's traces (None: the agent run failed); blocking.

        The step is committed unless its students could not be trained (there were datasets but no R_k: the
        student model failed to load, or every student failed) or `cancelled` was set (the episode was
        dropped): then the run directory is left as it was and the next episode redoes the step."""
        args = self.args
        batch = core.validate_batch([t or "" for t in texts], self.hard.index, self.limits, task=self.task,
                                    options=self.problem_options)
        valid = [i for i in batch.valid_indices if texts[i] is not None]
        parts = core.partition(valid, args.g, args.n)
        datasets = [[batch.outcomes[i].to_row() for i in part] for part in parts]
        committed = False

        def commit(decision: core.PromotionDecision) -> None:  # under the run directory's lock
            nonlocal committed
            trained = not datasets or decision.record.reward_hat is not None
            if trained and not (cancelled is not None and cancelled.is_set()):
                self.run.commit(decision, config=self.config)
                committed = True

        with self.scorers.slot() as build:  # one scorer: a cancelled step's students finish before the next's
            with self.run.locked():
                step = self.run.state.next_step
                baseline, promoted = self.run.baseline(), self.run.state.promoted
            result = core.soar_step(datasets, self.hard.d_train, build if datasets else None, self.run, q_r=args.q_r,
                                    seed=args.seed, step=step, baseline=baseline, promoted=promoted,
                                    on_error="record", commit=commit)
        if not committed:
            log.warning("sv-soar-teacher-v1: step %d not committed (%s); the next episode redoes it", step,
                        "episode cancelled" if cancelled is not None and cancelled.is_set() else result.error
                        or "every student failed")
        for score in result.scores:  # adapters were kept for promotion only
            for student in score.students:
                student.adapter_state = None
        return self._rewards(texts, batch, parts, result, committed)

    def _rewards(self, texts, batch, parts, result, committed) -> tuple[list[float], list[dict[str, float]]]:
        record = result.decision.record
        r_hat = record.reward_hat
        floor = (r_hat if r_hat is not None else 0.0) if self.args.floor == NEUTRAL else float(self.args.floor)
        scores = result.scores
        step_row = {
            "valid_fraction": sum(1 for i in batch.valid_indices if texts[i] is not None) / max(len(texts), 1),
            "datasets": float(len(parts)),
            "baseline_accuracy": scores[0].baseline_accuracy if scores else 0.0,
            "reward_hat": r_hat if r_hat is not None else 0.0,
            "moving_average": record.moving_average if record.moving_average is not None else 0.0,
            "promoted": float(record.promoted),
            "outer_step": float(result.step),
            "scoring_error": float(result.error is not None),
            "committed": float(committed),
            **core.question_diversity([p.question for p in batch.problems], seed=result.step).as_metrics("diversity_"),
        }
        dataset_of = {i: k for k, part in enumerate(parts) for i in part}
        rewards, metrics = [], []
        for i, outcome in enumerate(batch.outcomes):
            row = {name: 0.0 for name in METRIC_NAMES} | step_row
            reward = floor
            if texts[i] is None:
                row["rejected_agent_error"] = 1.0
            elif isinstance(outcome, core.Rejection):
                row[f"rejected_{outcome.reason.value}"] = 1.0
            elif i not in dataset_of:  # valid, beyond g·n: cannot happen with g·n runs an episode
                row["valid"] = 1.0
            else:
                k = dataset_of[i]
                row["valid"], row["dataset"] = 1.0, float(k + 1)
                if scores:
                    row["students_failed"] = float(scores[k].n_failed)
                    if scores[k].reward is not None:
                        reward = row["dataset_reward"] = scores[k].reward  # R_k
            rewards.append(float(reward))
            metrics.append({k: float(v) for k, v in row.items()})
        return rewards, metrics


def default_run_dir(args: SoarTeacherConfig, hard: core.HardSet, config: core.StudentTrainConfig) -> Path:
    """$SV_SOAR_CACHE/runs/teacher-v1-<task>-<model>-<hash>: the same arguments and hard set give the same
    folder, so a restarted env server resumes its promotion state without being told where it is."""
    identity = json.dumps([args.model_dump(mode="json", exclude={"num_prompts", "task"}), config.model_dump()],
                          sort_keys=True, default=str)
    digest = hashlib.sha256(identity.encode() + hard.source.read_bytes()).hexdigest()[:12]
    slug = re.sub(r"[^A-Za-z0-9.-]+", "-", Path(args.model).name or args.model)[:40]
    return core.cache_dir() / "runs" / f"teacher-v1-{args.svbench_task}-{slug}-{digest}"


@contextlib.asynccontextmanager
async def one_outer_step_at_a_time(run_dir: Path):
    """Hold the run directory's episode lock (a file lock: env-server workers are processes) while an
    episode runs. Polled rather than awaited in a thread, so an episode cancelled while it waits leaves
    nothing behind that takes the lock later."""
    run_dir.mkdir(parents=True, exist_ok=True)
    with open(run_dir / EPISODE_LOCK, "a+") as handle:
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
