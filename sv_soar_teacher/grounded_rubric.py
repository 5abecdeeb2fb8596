"""The teacher's rubric: one group of g·n rollouts is one SOAR outer step (sv_soar.teacher_step, docs/design.md §5).

A hosted RL trainer normalises rewards inside the group of one prompt, so the env runs rollouts_per_example = g·n
and scores the whole group at once with the group reward function `grounded_reward`: R_k for every rollout of
dataset X_k, the floor for the rest. Metrics (weight 0, so they never change the reward) are left in each
rollout's state by `grounded_reward` and read back by one small function per name.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import verifiers as vf

from sv_soar.scoring.completion_text import completion_text
from sv_soar.tasks.teacher import parse_teacher_problem
from sv_soar.teacher.checks import Rejection, TeacherProblem
from sv_soar.teacher_step import METRIC_NAMES, TeacherStep

METRICS_KEY = "sv_soar_teacher"  # where grounded_reward leaves each rollout's metrics in its state


class TeacherProblemParser(vf.Parser):
    """verifiers parser for teacher rollouts: `parse` gives a TeacherProblem or a Rejection (never raises)."""

    def __init__(self, step: TeacherStep) -> None:
        super().__init__()
        self.step = step

    def parse(self, text: str) -> TeacherProblem | Rejection:
        return parse_teacher_problem(text, task=self.step.task, limits=self.step.limits,
                                     options=self.step.problem_options)

    def parse_answer(self, completion: Any) -> str | None:
        """The problem's question in SV-Bench's format, or None when the rollout is no valid problem."""
        outcome = self.parse(completion_text(completion))
        return outcome.question if isinstance(outcome, TeacherProblem) else None


class GroundedTeacherRubric(vf.Rubric):
    """Main reward: the group function `grounded_reward` (R_k per rollout); then weight-0 metrics."""

    def __init__(self, step: TeacherStep) -> None:
        super().__init__(parser=TeacherProblemParser(step))
        self.step = step
        self.add_reward_func(self.grounded_reward, weight=1.0)
        for name in METRIC_NAMES:
            self.add_metric(_metric(name))

    async def grounded_reward(self, completions: list, states: list, **kwargs: Any) -> list[float]:
        """R_k for every rollout of dataset X_k, the floor for the rest (one group = one outer step)."""
        scored = await self.step.score_async([completion_text(c) for c in completions])
        for state, metrics in zip(states, scored.metrics):
            state[METRICS_KEY] = metrics
        return scored.rewards


def _metric(name: str) -> Callable[..., float]:
    def metric(state: Any) -> float:
        return float((state.get(METRICS_KEY) or {}).get(name, 0.0))

    metric.__name__ = name
    metric.__doc__ = f"{name} of this rollout's outer step (weight 0; see sv_soar.teacher_step.METRIC_NAMES)"
    return metric
