"""A task's teacher side, by task name: the prompt of one teacher rollout and the check of what it wrote.

The prompts and parsers themselves are the task's (`Task.teacher_prompt`, `Task.parse_problem`; E1's and
E2's live in their packages, sv_soar/tasks/e1/ and e2/); these functions find them in the registry, so a
registered task is written by the teacher, validated and deduplicated the same way as E1 and E2: a batch is
checked here, whatever its task (`validate_problems`).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Callable

from sv_soar.generation import ChatPrompt
from sv_soar.tasks import Task, get_task
from sv_soar.teacher.checks import ProblemLimits, RejectReason, Rejection, TeacherProblem
from sv_soar.teacher.contamination import HardSetIndex


@dataclass
class BatchValidation:
    """Outcome of each teacher completion of a batch, in order."""

    outcomes: list[TeacherProblem | Rejection] = field(default_factory=list)

    @property
    def problems(self) -> list[TeacherProblem]:
        return [o for o in self.outcomes if isinstance(o, TeacherProblem)]

    @property
    def valid_indices(self) -> list[int]:
        return [i for i, o in enumerate(self.outcomes) if isinstance(o, TeacherProblem)]

    @property
    def rejected(self) -> Counter[RejectReason]:
        return Counter(o.reason for o in self.outcomes if isinstance(o, Rejection))

    @property
    def valid_fraction(self) -> float:
        return len(self.problems) / len(self.outcomes) if self.outcomes else 0.0

    def rows(self) -> list[dict[str, Any]]:
        return [p.to_row() for p in self.problems]


def validate_problems(
    texts: list[Any],
    parse: Callable[[Any], TeacherProblem | Rejection],
    limits: ProblemLimits | None = None,
) -> BatchValidation:
    """Parse each teacher completion of a batch with its task's parser (sv_soar.tasks.teacher.validate_batch);
    a later near-copy of an earlier valid problem is rejected as duplicate_in_batch (the first one is kept)."""
    limits = limits or ProblemLimits()
    seen = HardSetIndex((), threshold=limits.batch_duplicate_threshold)
    first_index: dict[str, int] = {}
    result = BatchValidation()
    for i, text in enumerate(texts):
        outcome = parse(text)
        if isinstance(outcome, TeacherProblem):
            dup, matched, similarity = seen.is_near_duplicate(outcome.question)
            if dup:
                outcome = Rejection(
                    RejectReason.DUPLICATE_IN_BATCH,
                    f"copy of completion #{first_index[matched]} (similarity {similarity:.3f})",
                )
            else:
                first_index[seen.add(outcome.question, outcome.hash)] = i
        result.outcomes.append(outcome)
    return result


def teacher_prompt(task: str = "e1", **options: str | None) -> ChatPrompt:
    """The chat messages of one teacher rollout of `task`; `options` are the task's prompt options
    (E2: difficulty, sub_skill, lang), checked by the task's options model (`Task.options`) where it has one; a
    task takes none unless its prompt says so."""
    spec = _teacher_side(task)
    if spec.options is not None:
        options = spec.options.model_validate(options).model_dump(exclude_none=True)  # a ValueError naming the option
    return spec.teacher_prompt(**options)


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
