"""A task over rows of two tasks, each row scored by its own: the seed's experiment E (stepping stones
written for E1, students evaluated on E2). A row is E2 when it carries `info.violations`, else E1.

`get_task("e1+e2")` builds it. The student trains on the teacher's E1 rows with E1's rubric and is
measured on E2 hard-set rows with E2's, so GroundedScorer, the trainer and the final evaluation need
no change: they call task.prompt / task.score / task.is_success row by row.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sv_soar.generation import ChatPrompt
from sv_soar.tasks.task import Row, Task


@dataclass(frozen=True)
class MixedTask(Task):
    parts: tuple[Task, ...] = ()

    def part(self, row: Row) -> Task:
        info = row.get("info") if isinstance(row, dict) else None
        name = "e2" if isinstance(info, dict) and "violations" in info else "e1"
        return next(p for p in self.parts if p.name == name)

    def prompt(self, row: Row) -> ChatPrompt:
        return self.part(row).prompt(row)

    def answer(self, row: Row) -> str:
        return self.part(row).answer(row)


def mixed_task(*parts: Task) -> MixedTask:
    if sorted(p.name for p in parts) != ["e1", "e2"]:  # rows are routed by E2's info.violations (part())
        names = "+".join(p.name for p in parts)
        raise ValueError(f"a mixed task is e1+e2 (E1 stepping stones, E2 hard set), got {names!r}")
    holder: dict[str, MixedTask] = {}

    def route(row: Any) -> Task:
        return holder["task"].part(row)

    def validate_row(value: Any) -> Row:
        return route(value if isinstance(value, dict) else {}).validate_row(value)

    def calibration_point(text: str, row: Row):
        part = route(row)
        return part.calibration_point(text, row) if part.calibration_point is not None else None

    task = MixedTask(
        name="+".join(p.name for p in parts),
        system_prompt="",
        score=lambda text, row: route(row).score(text, row),
        is_success=lambda text, row: route(row).is_success(text, row),
        breakdown=lambda row: f"{route(row).name}:{route(row).breakdown(row)}",
        validate_row=validate_row,
        calibration_point=calibration_point,
        answer_tokens=max(p.answer_tokens for p in parts),
        parts=tuple(parts),
    )
    holder["task"] = task
    return task
