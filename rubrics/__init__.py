"""SV-Bench rubrics as verifiers parsers and rubrics (E1, E2), and one for any registered task.

`task_rubric(task)` is the one place that finds a task's verifiers parser and rubric: the factory registered for
the task's name in `RUBRICS` (`register_rubric`), else one scored by `Task.score`, so that environments
(`sv_soar_student`) never branch on the task themselves. The registry lives here, not on the `Task`, because the
core imports no verifiers; a factory is a function, so import-linter sees which rubric a task gets.
"""

from __future__ import annotations

from typing import Callable

import verifiers as vf

from rubrics.e1 import (
    E1_LABELS,
    E1_SYSTEM_PROMPT,
    E1_WEIGHTS,
    MAX_PARSE_CHARS,
    E1Output,
    E1Parser,
    e1_components,
    format_reward,
    make_e1_rubric,
    parse_e1_output,
    reward_accuracy,
    reward_asymmetric_cost,
    reward_calibration,
)
from rubrics.e2 import E2Parser, make_e2_rubric
from rubrics.e2_svbench import SVBenchE2Parser, make_svbench_e2_rubric
from sv_soar.scoring.completion_text import completion_text
from sv_soar.tasks import Task, get_task

SCORINGS = ("svbench", "corrected")
# (scoring=, max_parse_chars=) -> the student env's parser and rubric of one task
RubricFactory = Callable[..., tuple[vf.Parser, vf.Rubric]]


def task_rubric(task: str | Task, scoring: str = "svbench", max_parse_chars: int | None = None
                ) -> tuple[vf.Parser, vf.Rubric]:
    """The verifiers parser and rubric that score `task` (a Task or a registered name): the factory registered
    for its name (RUBRICS), else `score_rubric(task)`.

    scoring="svbench" (default) scores exactly as SV-Bench, under its metric names, so vf-eval numbers
    compare with SV-Bench's. scoring="corrected" is E2's corrected reward (ids de-duplicated, a correct
    "no violations" earns full credit: rubrics/e2.py), the one SOAR's grounding uses; E1 has no
    defects to correct and scores the same either way. `max_parse_chars` caps E1 parsing (off by default).
    """
    if scoring not in SCORINGS:
        raise ValueError(f"scoring must be one of {SCORINGS}, got {scoring!r}")
    task = get_task(task) if isinstance(task, str) else task
    factory = RUBRICS.get(task.name)
    if factory is None:
        return score_rubric(task)
    return factory(scoring=scoring, max_parse_chars=max_parse_chars)


def e1_rubric(scoring: str, max_parse_chars: int | None) -> tuple[vf.Parser, vf.Rubric]:
    """SV-Bench's E1 parser and rubric (one scoring: E1 has no defects to correct)."""
    parser = E1Parser(max_parse_chars=max_parse_chars)
    return parser, make_e1_rubric(parser)


def e2_rubric(scoring: str, max_parse_chars: int | None) -> tuple[vf.Parser, vf.Rubric]:
    """SV-Bench's E2 parser and rubric (scoring="svbench"), or the corrected one."""
    if scoring == "svbench":
        parser = SVBenchE2Parser()
        return parser, make_svbench_e2_rubric(parser)
    parser = E2Parser()
    return parser, make_e2_rubric(parser)


# The rubric factory of each task that has its own; a task not named here is scored by `score_rubric`.
RUBRICS: dict[str, RubricFactory] = {"e1": e1_rubric, "e2": e2_rubric}


def register_rubric(task: str, factory: RubricFactory) -> None:
    """Score task `task`'s student env with `factory(scoring=, max_parse_chars=) -> (parser, rubric)`, as E1 and E2
    are; a task already given one is an error (unregister it first)."""
    if task in RUBRICS:
        raise ValueError(f"task {task!r} has a rubric already")
    RUBRICS[task] = factory


def unregister_rubric(task: str) -> None:
    """Remove a registered task's rubric (a test's toy task at its end); E1's and E2's stay."""
    if task in ("e1", "e2"):
        raise ValueError(f"task {task!r}'s rubric is built in and cannot be unregistered")
    RUBRICS.pop(task, None)


def score_rubric(task: Task) -> tuple[vf.Parser, vf.Rubric]:
    """A rubric for a task without its own: one reward function, `task.score`'s "reward" of the last message
    against the record's answer. A task whose score reads more of the row than its answer names its own
    factory with `register_rubric`, as E2 does."""

    def reward(completion, answer, **kwargs) -> float:
        """The task's weighted total (Task.score) of the answer."""
        return float(task.score(completion_text(completion), {"answer": answer})["reward"])

    parser = vf.Parser()
    return parser, vf.Rubric(funcs=[reward], weights=[1.0], parser=parser)


__all__ = [
    "E1_LABELS",
    "E1_SYSTEM_PROMPT",
    "E1_WEIGHTS",
    "MAX_PARSE_CHARS",
    "E1Output",
    "E1Parser",
    "e1_components",
    "format_reward",
    "make_e1_rubric",
    "parse_e1_output",
    "reward_accuracy",
    "reward_asymmetric_cost",
    "reward_calibration",
    "task_rubric",
    "RUBRICS",
    "register_rubric",
    "unregister_rubric",
    "e1_rubric",
    "e2_rubric",
    "score_rubric",
    "SCORINGS",
]
