"""SV-Bench's E2 rubric (the corrected reward SOAR's grounding uses) as a verifiers parser and rubric;
the parsing and scoring are sv_soar.tasks.e2.scoring, whose names are all re-exported here."""

from __future__ import annotations

import json
from typing import Any

import verifiers as vf

from sv_soar.scoring.completion_text import completion_text
from sv_soar.tasks.e2.scoring import *  # noqa: F401,F403 - the scoring functions, one import for environments
from sv_soar.tasks.e2.scoring import E2Output, E2Scorer, count_tool_calls, parse_e2_output, row_from_answer


# --- verifiers parser and reward functions --------------------------------------------------------


class E2Parser(vf.Parser):
    """verifiers parser for E2 answers; `parse_answer` returns the de-duplicated ids or None."""

    def parse(self, text: str) -> E2Output | None:
        return parse_e2_output(text)

    def parse_answer(self, completion: Any) -> list[str] | None:
        output = parse_e2_output(completion_text(completion))
        return list(output.violations) if output is not None else None


def make_e2_rubric(parser: E2Parser | None = None, scorer: E2Scorer | None = None) -> vf.Rubric:
    """SV-Bench's E2 reward (weight 1) and its parts as metrics (weight 0), plus tool calls."""
    scorer = scorer or E2Scorer()
    cache: dict[tuple[str, str], dict[str, float]] = {}

    def parts(completion: Any, answer: Any, prompt: Any = None) -> dict[str, float]:
        text = completion_text(completion)
        key = (text, answer if isinstance(answer, str) else json.dumps(answer, sort_keys=True))
        if key not in cache:
            if len(cache) > 4096:
                cache.clear()
            cache[key] = scorer.components(text, row_from_answer(answer, prompt))
        return cache[key]

    def reward_config_audit(completion: Any, answer: Any, prompt: Any = None, **kwargs: Any) -> float:
        """clip(F1 + patch delta + format bonus, -1, 2): SV-Bench's E2 reward, defects fixed."""
        return parts(completion, answer, prompt)["reward"]

    def detection_f1(completion: Any, answer: Any, **kwargs: Any) -> float:
        """Severity-weighted F1 of the de-duplicated predicted ids (metric)."""
        return parts(completion, answer)["f1"]

    def patch_delta(completion: Any, answer: Any, **kwargs: Any) -> float:
        """Weight of oracle ids removed by the patch (metric)."""
        return parts(completion, answer)["patch_delta"]

    def format_valid(completion: Any, answer: Any, **kwargs: Any) -> float:
        """1 if the answer parses under SV-Bench's schema (metric)."""
        return parts(completion, answer)["format"]

    def tool_calls(completion: Any, **kwargs: Any) -> float:
        """Tool calls the model made in this rollout (metric: tool economy)."""
        return float(count_tool_calls(completion))

    return vf.Rubric(
        funcs=[reward_config_audit, detection_f1, patch_delta, format_valid, tool_calls],
        weights=[1.0, 0.0, 0.0, 0.0, 0.0],
        parser=parser or E2Parser(),
    )
