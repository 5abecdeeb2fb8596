"""E2's teacher options: what the seed's E2 plan varies from one teacher prompt to the next, as one model.

E2's `Task.options`: `sv_soar.tasks.teacher` checks a prompt's options with it, E2's prompt and problem parser read
them from it, and a registered task supplies its own model the same way. The run config (`[teacher]` difficulty,
sub_skill, lang) and the teacher envs' config name the same three keys; they check the same values at load, from
sv_soar.config's own copy of these types, because the config is a leaf that loads no task (tests/test_e2_teacher.py
holds the two equal).
"""

from __future__ import annotations

from typing import Literal, get_args

from pydantic import BaseModel, ConfigDict

# the seed's E2 plan: "configs of controlled complexity (1 violation -> 2 -> 3 -> multi-tool)"
Difficulty = Literal["one", "two", "several", "multi-tool"]
# the seed's sub-skills: "single-tool invocation, output interpretation, patch generation"
SubSkill = Literal["detect", "read-tool-output", "patch"]
Lang = Literal["k8s", "tf"]

DIFFICULTIES: tuple[str, ...] = get_args(Difficulty)
SUB_SKILLS: tuple[str, ...] = get_args(SubSkill)


class E2Options(BaseModel):
    """One E2 teacher rollout's options; each unset is the teacher's choice."""

    model_config = ConfigDict(extra="forbid", frozen=True, use_attribute_docstrings=True)

    difficulty: Difficulty | None = None
    """Violations a config: one, two, several (three to five), multi-tool (more than one tool reports them)."""
    sub_skill: SubSkill | None = None
    """What the student practises: detect (SV-Bench's question), read-tool-output (the question shows the scored
    tool's output), patch (the question asks for a fixing diff); unset is detect."""
    lang: Lang | None = None
    """Kubernetes (k8s) or Terraform (tf) configs only; unset, either."""
