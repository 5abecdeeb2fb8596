"""Teacher rollout -> E2 problem (a K8s or Terraform config relabelled by the oracle), or the reason
it cannot be one.

The teacher writes a config with the violations it intends (seed, E2 plan: "generate synthetic
config files with known violations"). The teacher's labels are never trusted: the oracle scans the
config and its findings become the row's `info.violations` (executable ground truth). The teacher's
own ids are kept in `meta.teacher_violations` for one metric, teacher-label agreement (F1 of the
teacher's ids against the oracle's, on SV-Bench's scored tool).

Accepted shapes (small teachers drift, so the config may also come as a fenced block):
    {"lang": "k8s"|"tf", "config": "<YAML or HCL>", "violations": ["kube-linter/latest-tag", ...]}
    ```yaml (or ```hcl / ```terraform) <config> ```        (then no teacher ids)

Rejections, in order (the first is the reason):
    empty / too_long        the completion itself (ProblemLimits.max_completion_chars)
    not_json                neither a JSON object with "config" nor a fenced config block
    schema                  "config" not a string, "lang" not k8s/tf, "violations" not a list of strings
    config_too_large        over E2ProblemLimits.max_config_chars, or over the YAML limits
    injection               a comment of the config addresses the student or the scorer
    not_config              the oracle cannot read it (not YAML / not HCL, no Kubernetes object)
    duplicate_of_hard_set   near copy of a hard-set config (contamination.py, shingle Jaccard)
    duplicate_in_batch      near copy of an earlier problem of the batch (problems.validate_batch)

Sub-skills (seed: "single-tool invocation, output interpretation, patch generation") shape the
question the student sees; the row's config stays in `info.config` for patching:
    detect            the config (SV-Bench's own E2 question)
    read-tool-output  the config and the real output of SV-Bench's scored tool for it
    patch             the config and an instruction to return a fixing unified diff
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from sv_soar.tasks.e2.options import DIFFICULTIES, SUB_SKILLS
from sv_soar.tasks.e2.scoring import scored_tools, weighted_prf
from sv_soar.tasks.e2.oracle import PRIMARY_TOOL, TOOLS, OracleCache, detect_lang
from sv_soar.tasks.e2.oracle.rego import k8s_objects
from sv_soar.tasks.e2.oracle.safe_yaml import YamlLimits, load_yaml_documents, not_utf8
from sv_soar.teacher.contamination import HardSetIndex, question_hash
from sv_soar.teacher.checks import (
    ProblemLimits,
    RejectReason,
    Rejection,
    TeacherProblem,
    completion_text_rejection,
    extract_json_object,
    find_injection,
)


class E2ProblemLimits(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    max_config_chars: int = Field(
        8192, ge=64, description="SV-Bench's K8s rows are 73-5 800 characters (mini set); a stepping "
        "stone needs no more than a page, and every extra KB costs student context and scan time.")
    min_config_chars: int = Field(20, ge=1, description="'kind: Pod' and a container need more than this.")


@dataclass(frozen=True)
class E2TeacherProblem(TeacherProblem):
    """A validated E2 teacher problem: the question the student sees, relabelled by the oracle."""

    lang: str = "k8s"
    config: str = ""
    violations: tuple[dict[str, str], ...] = ()  # the oracle's findings (all tools)
    teacher_ids: tuple[str, ...] = ()
    teacher_agreement: float = 0.0
    sub_skill: str = "detect"
    difficulty: str | None = None

    def to_row(self) -> dict[str, Any]:
        meta: dict[str, Any] = {"lang": self.lang, "source": "teacher", "hash": self.hash, "sub_skill": self.sub_skill,
                                "teacher_violations": list(self.teacher_ids),
                                "teacher_agreement": self.teacher_agreement}
        if self.difficulty:
            meta["difficulty"] = self.difficulty
        info: dict[str, Any] = {"violations": [dict(v) for v in self.violations], "patch": None}
        if self.question != self.config:
            info["config"] = self.config
        return {"question": self.question, "info": info, "meta": meta}


_FENCE = re.compile(r"```[ \t]*(yaml|yml|hcl|terraform|tf)?[ \t]*\r?\n(.*?)```", re.DOTALL | re.IGNORECASE)
_ORACLE = OracleCache()


def _fields(text: str) -> tuple[str, str | None, list[str]] | Rejection:
    """(config, lang or None, teacher ids) from the completion, or why not."""
    obj = extract_json_object(text)
    if isinstance(obj, dict) and "config" in obj:
        config, lang, ids = obj.get("config"), obj.get("lang"), obj.get("violations", [])
        if not isinstance(config, str):
            return Rejection(RejectReason.SCHEMA, "config must be a string")
        if lang is not None and str(lang).lower() not in ("k8s", "tf", "kubernetes", "terraform"):
            return Rejection(RejectReason.SCHEMA, f"lang {str(lang)[:20]!r} is not 'k8s' or 'tf'")
        if ids is None:
            ids = []
        if not isinstance(ids, list) or not all(isinstance(i, (str, dict)) for i in ids):
            return Rejection(RejectReason.SCHEMA, "violations must be a list of ids")
        ids = [i if isinstance(i, str) else str(i.get("id", "")) for i in ids]
        if any(not_utf8(i) for i in ids):  # the row keeps them (meta.teacher_violations), written as UTF-8
            return Rejection(RejectReason.SCHEMA, "violations hold a lone surrogate (an escape such as \\ud800)")
        lang = None if lang is None else ("tf" if str(lang).lower() in ("tf", "terraform") else "k8s")
        return config, lang, [i.strip() for i in ids if i.strip()]
    fence = _FENCE.search(text)
    if fence is not None:
        kind = (fence.group(1) or "").lower()
        return fence.group(2), ("tf" if kind in ("hcl", "terraform", "tf") else "k8s" if kind else None), []
    if isinstance(obj, Rejection) and obj.reason == RejectReason.SCHEMA:
        return obj
    return Rejection(RejectReason.NOT_JSON, "no JSON object with a config and no fenced config block")


def _candidate(text: Any, limits: ProblemLimits, e2_limits: E2ProblemLimits) -> tuple[str, str, list[str]] | Rejection:
    """(config as the oracle will scan it, lang, teacher ids) of a completion, or why not."""
    rejection = completion_text_rejection(text, limits)
    if rejection is not None:
        return rejection
    fields = _fields(text)
    if isinstance(fields, Rejection):
        return fields
    config, lang, teacher_ids = fields
    config = config.strip("\n") + "\n"
    if len(config) > e2_limits.max_config_chars:
        return Rejection(RejectReason.CONFIG_TOO_LARGE,
                         f"config is {len(config)} characters, over {e2_limits.max_config_chars}")
    if len(config.strip()) < e2_limits.min_config_chars:
        return Rejection(RejectReason.NOT_CONFIG,
                         f"config is {len(config.strip())} characters, under {e2_limits.min_config_chars}")
    return config, lang or detect_lang(config), teacher_ids


def prefetch_oracle(texts: list[Any], limits: ProblemLimits | None = None, e2_limits: E2ProblemLimits | None = None,
                    oracle: OracleCache | None = None) -> None:
    """Scan every config of a teacher batch in one semgrep run a language (OracleCache.scan_many), so
    that relabelling g·n = 256 configs pays semgrep's start-up twice, not 256 times."""
    limits, e2_limits, oracle = limits or ProblemLimits(), e2_limits or E2ProblemLimits(), oracle or _ORACLE
    items = [c[:2] for c in (_candidate(t, limits, e2_limits) for t in texts) if not isinstance(c, Rejection)]
    if items:
        oracle.scan_many(items)


def _comments(config: str) -> str:
    return "\n".join(m.group(1) for m in re.finditer(r"(?:^|\s)(?:#|//)(.*)$", config, re.M))


def build_question(config: str, lang: str, sub_skill: str, oracle_findings: list[dict[str, str]]) -> str:
    """What the student sees for a sub-skill (the config alone for "detect", as in SV-Bench)."""
    if sub_skill == "detect":
        return config
    if sub_skill == "read-tool-output":
        tool = PRIMARY_TOOL[lang]
        shown = [{"tool": f["tool"], "rule_id": f["rule_id"], "severity": f["severity"], "message": f["msg"][:200]}
                 for f in oracle_findings if f["tool"] == tool]
        return f"{config.rstrip()}\n\n# {tool} output for this config:\n{json.dumps(shown, indent=1)}\n"
    if sub_skill == "patch":
        return (f"{config.rstrip()}\n\n# Fix every violation: put a unified diff of this config in \"patch\" "
                f"(headers --- a/config and +++ b/config).\n")
    raise ValueError(f"sub_skill must be one of {SUB_SKILLS}, got {sub_skill!r}")


def parse_e2_problem(
    text: Any,
    *,
    limits: ProblemLimits | None = None,
    e2_limits: E2ProblemLimits | None = None,
    hard_set_index: HardSetIndex | None = None,
    sub_skill: str = "detect",
    difficulty: str | None = None,
    oracle: OracleCache | None = None,
    tools: Iterable[str] = TOOLS,
) -> E2TeacherProblem | Rejection:
    """Validate and relabel one E2 teacher completion. Never raises on any `text`.

    `tools` are the oracle tools whose findings label the row (default all). Leaving semgrep out skips
    its subprocess (~2 s a config): the fuzz target relabels thousands of configs that way, and a
    Terraform config is then neither labelled nor checked as HCL."""
    limits, e2_limits, oracle = limits or ProblemLimits(), e2_limits or E2ProblemLimits(), oracle or _ORACLE
    if sub_skill not in SUB_SKILLS:
        raise ValueError(f"sub_skill must be one of {SUB_SKILLS}, got {sub_skill!r}")
    candidate = _candidate(text, limits, e2_limits)
    if isinstance(candidate, Rejection):
        return candidate
    config, lang, teacher_ids = candidate
    marker = find_injection(_comments(config))
    if marker is not None:
        return Rejection(RejectReason.INJECTION, f"a config comment carries {marker}")
    report = oracle.scan(config, lang, tools)
    if report.rejected:
        reason = RejectReason.CONFIG_TOO_LARGE if "limit" in report.rejected or "expands" in report.rejected \
            or "deeper" in report.rejected else RejectReason.NOT_CONFIG
        return Rejection(reason, report.rejected[:160])
    if report.errors:
        return Rejection(RejectReason.NOT_CONFIG, f"oracle failed: {next(iter(report.errors.values()))[:160]}")
    if lang == "k8s" and not _has_k8s_object(config):
        return Rejection(RejectReason.NOT_CONFIG, "no Kubernetes object (apiVersion/kind) in the YAML")
    if hard_set_index is not None:
        dup, matched, similarity = hard_set_index.is_near_duplicate(config)
        if dup:
            return Rejection(RejectReason.DUPLICATE_OF_HARD_SET,
                             f"matches hard-set item {matched} (similarity {similarity:.3f})")
    violations = tuple(f.to_dict() for f in report.findings)
    scored = scored_tools(lang)
    oracle_ids = report.ids(scored)
    teacher = {i: "med" for i in teacher_ids if i.split("/", 1)[0] in scored}
    _, _, agreement = weighted_prf(teacher, oracle_ids)
    question = build_question(config, lang, sub_skill, list(violations))
    return E2TeacherProblem(
        question=question, answer="", hash=question_hash(config), rationale=None, task="e2",
        lang=lang, config=config, violations=violations, teacher_ids=tuple(teacher_ids),
        teacher_agreement=agreement, sub_skill=sub_skill, difficulty=difficulty,
    )


def _has_k8s_object(config: str) -> bool:
    return bool(k8s_objects(load_yaml_documents(config, YamlLimits())))


__all__ = ["DIFFICULTIES", "SUB_SKILLS", "E2ProblemLimits", "E2TeacherProblem", "build_question", "parse_e2_problem"]
