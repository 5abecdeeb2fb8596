"""SV-Bench's E1 rubric as a verifiers parser and rubric; the parsing and scoring are sv_soar.tasks.e1.scoring.

Every name of sv_soar.tasks.e1.scoring is re-exported here, so an environment (and the SV-Bench parity tests)
import the whole E1 rubric from one module.
"""

from __future__ import annotations

from typing import Any

import verifiers as vf

from sv_soar.scoring.completion_text import completion_text  # noqa: F401 - what the rubric reads, for environments
from sv_soar.scoring.completion_text import response_text
from sv_soar.tasks.e1.scoring import *  # noqa: F401,F403 - the scoring functions, one import for environments
from sv_soar.tasks.e1.scoring import (
    E1_WEIGHTS,
    E1Output,
    accuracy,
    asymmetric_cost,
    calibration,
    format_ok,
    parse_e1_output,
)


# --- verifiers parser and reward functions ------------------------------------------------------


class E1Parser(vf.Parser):
    """verifiers parser for E1 answers; `parse_answer` returns the label or None.

    `max_parse_chars` (off by default, SV-Bench has no cap) reads only the first N characters.
    """

    def __init__(self, max_parse_chars: int | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.max_parse_chars = max_parse_chars

    def parse(self, text: str) -> E1Output | None:
        return parse_e1_output(text, self.max_parse_chars)

    def parse_output(self, completion: Any) -> E1Output | None:
        return parse_e1_output(response_text(completion), self.max_parse_chars)

    def parse_answer(self, completion: Any) -> str | None:
        output = self.parse_output(completion)
        return output.label if output is not None else None

    def get_format_reward_func(self):
        return format_reward


def _parsed(parser: Any, completion: Any) -> E1Output | None:
    if isinstance(parser, E1Parser):
        return parser.parse_output(completion)
    return parse_e1_output(response_text(completion))


def reward_accuracy(completion: Any, answer: Any, parser: Any = None, **kwargs: Any) -> float:
    """1 if the parsed label equals the answer (case-insensitive), else 0."""
    return accuracy(_parsed(parser, completion), answer)


def format_reward(completion: Any, parser: Any = None, **kwargs: Any) -> float:
    """1 if the answer has an allowed label and a JSON-number confidence in [0, 1], else 0."""
    return format_ok(_parsed(parser, completion))


def reward_calibration(completion: Any, answer: Any, parser: Any = None, **kwargs: Any) -> float:
    """1 - |confidence - correct| when a label parsed (missing or out-of-range confidence counts as 0), else 0."""
    return calibration(_parsed(parser, completion), answer)


def reward_asymmetric_cost(completion: Any, answer: Any, parser: Any = None, **kwargs: Any) -> float:
    """+1 if correct, -1 for Benign on a Malicious item (a missed attack), else 0."""
    return asymmetric_cost(_parsed(parser, completion), answer)


def make_e1_rubric(parser: E1Parser | None = None) -> vf.Rubric:
    """SV-Bench's E1 rubric: accuracy, format, calibration, asymmetric cost (1.0, 0.1, 0.2, 0.5)."""
    return vf.Rubric(
        funcs=[reward_accuracy, format_reward, reward_calibration, reward_asymmetric_cost],
        weights=list(E1_WEIGHTS),
        parser=parser or E1Parser(),
    )
