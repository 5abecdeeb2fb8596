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


SCORINGS = ("svbench", "corrected")


def task_rubric(name: str, scoring: str = "svbench", max_parse_chars: int | None = None) -> tuple[vf.Parser, vf.Rubric]:
    """The verifiers parser and rubric that score task `name`.

    scoring="svbench" (default) scores exactly as SV-Bench, under its metric names, so vf-eval numbers
    compare with SV-Bench's. scoring="corrected" is E2's corrected reward (ids de-duplicated, a correct
    "no violations" earns full credit: rubrics/e2.py), the one SOAR's grounding uses; E1 has no
    defects to correct and scores the same either way. `max_parse_chars` caps E1 parsing (off by default).
    """
    if scoring not in SCORINGS:
        raise ValueError(f"scoring must be one of {SCORINGS}, got {scoring!r}")
    if name == "e1":
        parser = E1Parser(max_parse_chars=max_parse_chars)
        return parser, make_e1_rubric(parser)
    if name == "e2":
        if scoring == "svbench":
            from rubrics.e2_svbench import SVBenchE2Parser, make_svbench_e2_rubric

            parser = SVBenchE2Parser()
            return parser, make_svbench_e2_rubric(parser)
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
    "SCORINGS",
]
