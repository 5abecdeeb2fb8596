"""SV-Bench's executable E2 rubric as a verifiers parser and rubric; the scoring (a port of SV-Bench's
own reward functions) is sv_soar.tasks.e2.svbench, whose names are all re-exported here."""

from __future__ import annotations

from typing import Any

import verifiers as vf

from sv_soar.tasks.e2.svbench import *  # noqa: F401,F403 - the scoring functions, one import for environments
from sv_soar.tasks.e2.svbench import E2_SVBENCH_WEIGHTS, format_reward, parsed_output, reward_config_auditing, tool_observation_reward


class SVBenchE2Parser(vf.Parser):
    """SV-Bench's ConfigVerificationParser: `parse_answer` is the answer as a dict, {} when invalid."""

    def parse_answer(self, completion: Any) -> dict[str, Any]:
        output = parsed_output(completion)
        if output is None:
            return {}
        violations, patch, confidence = output
        return {"violations": [{"id": v.id, "severity": v.severity} for v in violations],
                "patch": patch or "", "confidence": confidence}

    def get_format_reward_func(self):
        return format_reward


def make_svbench_e2_rubric(parser: vf.Parser | None = None) -> vf.Rubric:
    """SV-Bench's executable E2 rubric: reward_config_auditing 1.0, format_reward 0.05, tool_observation_reward 0.2."""
    return vf.Rubric(funcs=[reward_config_auditing, format_reward, tool_observation_reward],
                     weights=list(E2_SVBENCH_WEIGHTS), parser=parser or SVBenchE2Parser())
