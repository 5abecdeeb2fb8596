"""A task: everything that differs between E1 and E2 (prompt, scoring, success, row validation)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

from sv_soar.generation import ChatPrompt

Row = dict[str, Any]


@dataclass(frozen=True)
class Task:
    name: str
    system_prompt: str
    # full SV-Bench rubric of one completion: {"reward": weighted total, <component>: value, ...}
    score: Callable[[str, Row], dict[str, float]]
    # grounding="correctness": did the completion solve the row (E1: label == answer)
    is_success: Callable[[str, Row], bool]
    # the row's breakdown key for cold-start reports (E1: attack family / scenario)
    breakdown: Callable[[Row], str]
    # validate and normalise one SV-Bench row; raises ValueError with a reason
    validate_row: Callable[[Any], Row]
    # for tasks whose answers state a confidence (E1): (confidence or None, correct, abstained), or
    # None when nothing parsed; feeds ECE and the abstain rate of the final evaluation
    calibration_point: Callable[[str, Row], tuple[float | None, bool, bool] | None] | None = None
    # what a dataset record carries as `answer` (E1: the label; E2: the row as JSON, for its rubric)
    answer_of: Callable[[Row], str] | None = None
    # tokens a complete answer needs, the default where a command samples answers (`sv-soar hardset`)
    answer_tokens: int = 96

    def answer(self, row: Row) -> str:
        return self.answer_of(row) if self.answer_of is not None else row["answer"]

    def prompt(self, row: Row) -> ChatPrompt:
        return [
            {"role": "system", "content": self.system_prompt},
            {"role": "user", "content": row["question"]},
        ]
