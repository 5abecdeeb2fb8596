"""SV-Bench rubrics as verifiers parsers and rubrics (E1 now, E2 later).

`task_rubric(name)` is the one place that maps a task name to its verifiers parser and rubric, so
that environments (`sv_soar_student`) never branch on the task themselves.
"""

from __future__ import annotations

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


def task_rubric(name: str) -> tuple[vf.Parser, vf.Rubric]:
    """The verifiers parser and rubric that score task `name` the way SV-Bench does."""
    if name == "e1":
        parser = E1Parser()
        return parser, make_e1_rubric(parser)
    if name == "e2":
        from rubrics.e2 import E2Parser, make_e2_rubric

        parser = E2Parser()
        return parser, make_e2_rubric(parser)
    raise ValueError(f"no rubric for task {name!r}: expected one of 'e1', 'e2'")


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
]
