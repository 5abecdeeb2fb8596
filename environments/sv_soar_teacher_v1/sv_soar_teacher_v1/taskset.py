"""sv-soar-teacher-v1: the SOAR teacher as a verifiers v1 env (verifiers >= 0.4; prime-rl loads only these).

One episode is one SOAR outer step (arXiv 2601.18778 §3), run with group_size = 1: prime-rl scores each episode
on its own and has no group reward over the rollouts of one prompt (the v0 env's design).

    run()       g·n runs of the `teacher` agent on the teacher prompt, one problem each (one trace each)
    finalize()  the core's step (sv_soar.teacher_step.TeacherStep, as the v0 env's) scores the g·n replies: every
                trace of X_k records reward R_k ("grounded_improvement"), the rest the `floor`, all the metrics

What a real run must survive (prime-rl's run semantics, docs/hosted.md "Failures and concurrency"):
- A failed teacher generation (model error, timeout, an agent run that raised) stays inside the episode: its
  trace is made ok and untrainable (`agent.trainable = False`), so it carries no advantage and the episode stays
  ok. prime-rl fails every trace of an episode that is not ok (prime_rl/orchestrator/envs.py) and trains only
  ok, trainable traces (algo/base.py, iter_trainable_traces); verifiers' episode is ok only when all its traces are.
- A step whose students could not be trained commits nothing; its traces get the floor, the next episode redoes it.
- One outer step at a time: episodes of one run directory run one after another (a lock file in the run
  directory, across env-server workers); an episode cancelled mid-step (prime-rl drops stale episodes) commits
  nothing, its students finish in their thread.

The taskset's arguments are the core's TeacherEnvConfig (TOML: [orchestrator.train.source.env.taskset]); the hard
set is a *name* packaged into this env (`sv-soar package-env`), never a path; a `students_url` service's token comes
from the env server's $SV_SOAR_STUDENTS_TOKEN (README, "Hosted training").
"""

from __future__ import annotations

import asyncio
import threading

import verifiers.v1 as vf
from pydantic import field_validator

from sv_soar_teacher_v1 import core

REWARD = "grounded_improvement"


class SoarTeacherConfig(vf.TasksetConfig, core.TeacherEnvConfig):
    """The teacher env's arguments (sv_soar.teacher_env_config): `task` is the taskset's reserved per-task config,
    hence `svbench_task`; `hard_set` is the name of a set packaged into this env (`sv-soar package-env`)."""

    @field_validator("max_concurrent_scorings")
    @classmethod
    def _one_step_at_a_time(cls, value: int) -> int:  # refused at load, not at the first episode
        if value != 1:
            raise ValueError(f"max_concurrent_scorings is {value}: this env runs one outer step at a time (episodes "
                             "of a run directory one after another), so it must be 1")
        return value


class TeacherPromptData(vf.TaskData):
    svbench_task: str


class TeacherPromptTask(vf.Task[TeacherPromptData]):
    """The teacher prompt; no per-trace reward: the teacher is judged by what its problems do to students."""

    @vf.stop
    async def one_problem(self, trace: vf.Trace) -> bool:
        return trace.num_turns >= 1  # one reply, one problem


class SoarTeacherTaskset(vf.Taskset[TeacherPromptTask, SoarTeacherConfig]):
    """num_prompts copies of the teacher prompt: SOAR's teacher sees no seed questions
    (sv_soar.tasks.e1.teacher_prompt)."""

    def load(self) -> list[TeacherPromptTask]:
        system, user = core.teacher_prompt(self.config.svbench_task, **self.config.prompt_options())
        data = dict(prompt=user["content"], system_prompt=system["content"], svbench_task=self.config.svbench_task)
        return [TeacherPromptTask(TeacherPromptData(idx=i, name=f"outer-step-{i}", **data), self.config.task)
                for i in range(self.config.num_prompts)]


class SoarTeacherEnvConfig(vf.EnvConfig):
    teacher: vf.AgentConfig = vf.AgentConfig()
    """The trained policy, run g·n times an episode."""


class SoarTeacherEnv(vf.Env[SoarTeacherEnvConfig]):
    """One episode = one SOAR outer step (module docstring)."""

    def __init__(self, config: SoarTeacherEnvConfig) -> None:
        super().__init__(config)
        self.args: SoarTeacherConfig = self.taskset.config
        self._build_lock = threading.Lock()
        self._step: core.TeacherStep | None = None

    def teacher_step(self) -> core.TeacherStep:
        with self._build_lock:  # built once: the hard set's index, the run folder, the scorer
            if self._step is None:
                self._step = open_teacher_step(self.args)
            return self._step

    async def run_episode(self, task: vf.Task, ctx, **hooks) -> vf.Episode:
        """verifiers' episode (setup, run, finalize), one at a time per run folder (module docstring)."""
        try:
            step = await asyncio.to_thread(self.teacher_step)
        except Exception:  # noqa: BLE001 - finalize meets the same error and records it on the episode
            return await super().run_episode(task, ctx, **hooks)
        async with step.one_at_a_time():
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
        step = await asyncio.to_thread(self.teacher_step)
        scored = await step.score_async(texts)  # cancelled (a stale episode dropped): nothing is committed
        for trace, reward, row in zip(traces, scored.rewards, scored.metrics):
            trace.record_metrics(row)
            trace.record_reward(REWARD, reward)

    def complete(self, episode: vf.Episode) -> bool:
        # a failed teacher run is scored (the floor), not redone: the step is committed either way
        return not episode.errors


def open_teacher_step(args: SoarTeacherConfig) -> core.TeacherStep:
    """The core's teacher step on the hard set packaged into this env: a step whose students could not train
    commits nothing and is redone (module docstring)."""
    folder = core.packaged_set(__package__, args.hard_set, arg="hard_set")
    return core.TeacherStep.open(args, folder, env="teacher-v1", redo_untrained=True)
