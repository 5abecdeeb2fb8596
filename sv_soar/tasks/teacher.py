"""A task's teacher side, by task name: the prompt of one teacher rollout and the check of what it wrote.

The prompts and parsers themselves are the task's (`Task.teacher_prompt`, `Task.parse_problem`; E1's and
E2's live in sv_soar.teacher); these functions find them in the registry, so a registered task is
written by the teacher, validated and deduplicated the same way as E1 and E2.
"""

from __future__ import annotations

from typing import Any

from sv_soar.generation import ChatPrompt
from sv_soar.tasks import Task, get_task
from sv_soar.teacher.checks import ProblemLimits, Rejection, TeacherProblem
from sv_soar.teacher.contamination import HardSetIndex
from sv_soar.teacher.problems import BatchValidation, validate_problems


def teacher_prompt(task: str = "e1", **options: str | None) -> ChatPrompt:
    """The chat messages of one teacher rollout of `task`; `options` are the task's prompt options
    (E2: difficulty, sub_skill, lang); a task takes none unless its prompt says so."""
    return _teacher_side(task).teacher_prompt(**options)


def parse_teacher_problem(
    text: Any,
    *,
    task: str = "e1",
    limits: ProblemLimits | None = None,
    hard_set_index: HardSetIndex | None = None,
    options: dict[str, Any] | None = None,
) -> TeacherProblem | Rejection:
    """Validate one teacher completion of `task`. Never raises on any `text`; raises ValueError on an
    unknown `task`. `options` are the task's problem options (E2: sub_skill, difficulty)."""
    return _teacher_side(task).parse_problem(text, limits=limits or ProblemLimits(), hard_set_index=hard_set_index,
                                             options=options or {})


def validate_batch(
    texts: list[Any],
    hard_set_index: HardSetIndex | None = None,
    limits: ProblemLimits | None = None,
    *,
    task: str = "e1",
    options: dict[str, Any] | None = None,
) -> BatchValidation:
    """Validate a batch of teacher completions of `task`; a later near-copy of an earlier valid problem is
    rejected as duplicate_in_batch (the first one is kept)."""
    spec, limits = _teacher_side(task), limits or ProblemLimits()
    if spec.prefetch_problems is not None:
        spec.prefetch_problems(list(texts), limits)
    return validate_problems(
        texts, lambda text: parse_teacher_problem(text, task=task, limits=limits, hard_set_index=hard_set_index,
                                                  options=options),
        limits)


def _teacher_side(name: str) -> Task:
    spec = get_task(name)
    if spec.teacher_prompt is None or spec.parse_problem is None:
        raise ValueError(f"task {name!r} has no teacher side: its Task sets no teacher_prompt / parse_problem")
    return spec
