"""E2 as a `Task`: SV-Bench's config audit and remediation (Kubernetes YAML, Terraform HCL).

Scoring is `sv_soar.tasks.e2.scoring` (SV-Bench's reward without its two defects); success (docs/design.md §4,
grounding="correctness") is a severity-weighted F1 of at least `F1_SUCCESS` against the row's
oracle ids. The breakdown key is the language and how many scored ids the row has ("k8s:clean",
"k8s:1-2", "k8s:3-5", "k8s:6+", "tf:..."), the seed's difficulty axis for E2 (one violation, two,
several).

A row is SV-Bench's: `{"question": config, "info": {"violations": [...], "patch": null},
"meta": {"lang": "k8s"|"tf", ...}}`. Datasets hand it to the rubric as `answer`, the JSON of the row's
`info` as SV-Bench's own E2 environment stores it (`_convert_e2_format`), with `fixture_type` and
`fixture_path` as SV-Bench's builds write them, plus the config text itself ("config") and "meta",
which SV-Bench's rubric ignores and ours reads instead of a fixture file that exists only on
SV-Bench's machines.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from sv_soar.tasks.e2.options import E2Options
from sv_soar.tasks.e2.scoring import (E2_SYSTEM_PROMPT, F1_SUCCESS, config_of, e2_components, row_from_answer, row_lang,
                                     row_oracle_ids, scored_tools)
from sv_soar.tasks.e2.svbench import PROMPT_CONFIG
from sv_soar.tasks.task import Row, Task
from sv_soar.teacher.checks import ProblemLimits, Rejection
from sv_soar.teacher.contamination import HardSetIndex
from sv_soar.tasks.e2.teacher_problems import E2TeacherProblem, parse_e2_problem, prefetch_oracle
from sv_soar.tasks.e2.teacher_prompt import e2_teacher_prompt

LANG_ALIASES = {"k8s": "k8s", "kubernetes": "k8s", "tf": "tf", "terraform": "tf"}


def score(text: str, row: Row) -> dict[str, float]:
    """Every E2 component and the total "reward" of one completion."""
    return e2_components(text, row)


def is_success(text: str, row: Row) -> bool:
    """Severity-weighted F1 of the answer's ids >= F1_SUCCESS (a correct "no violations" included)."""
    return e2_components(text, row)["f1"] >= F1_SUCCESS


def breakdown(row: Row) -> str:
    lang = row_lang(row)
    n = len(row_oracle_ids(row, scored_tools(lang)))
    bucket = "clean" if n == 0 else "1-2" if n <= 2 else "3-5" if n <= 5 else "6+"
    return f"{lang}:{bucket}"


def fixture_path(row: Row) -> str:
    """The relative path a row's config has in the student env's private folder (the `File path:` line)."""
    lang = row_lang(row)
    digest = str((row.get("meta") or {}).get("hash") or "") or hashlib.sha256(config_of(row).encode()).hexdigest()[:16]
    safe = "".join(c for c in digest if c.isalnum() or c in "-_")[:40] or "config"
    return f"configs/{safe}.{'tf' if lang == 'tf' else 'yaml'}"


def answer(row: Row) -> str:
    """What a dataset record carries as `answer`: SV-Bench's answer JSON (the row's info, fixture_type,
    fixture_path) plus the config and meta, so that both rubrics and the tools re-read the row from it."""
    info = row["info"]
    return json.dumps({"violations": info["violations"], "patch": info.get("patch"),
                       "fixture_type": row_lang(row), "fixture_path": fixture_path(row),
                       "config": config_of(row), "meta": row.get("meta") or {}})


def svbench_question(row: Row) -> str:
    """SV-Bench's E2 prompt (_convert_e2_format): a `File path:` line, then the config in a text block."""
    return f"File path: {fixture_path(row)}\n\nConfiguration:\n```text\n{config_of(row)}\n```"


def validate_row(value: Any) -> Row:
    """Check one SV-Bench E2 row and return {"question", "info", "meta"}; ValueError says why.

    Accepts "prompt" for "question" (SV-Bench's build format) and an `answer` JSON string holding
    the row (a dataset record written by this project).
    """
    if not isinstance(value, dict):
        raise ValueError(f"row is a JSON {type(value).__name__}, expected an object")
    if "info" not in value and isinstance(value.get("answer"), str):
        try:
            inner = json.loads(value["answer"])
        except (json.JSONDecodeError, RecursionError):
            raise ValueError("'answer' is not the JSON of an E2 row") from None
        if not isinstance(inner, dict):
            raise ValueError(f"'answer' is the JSON of a {type(inner).__name__}, not of an E2 row (an object)")
        if isinstance(inner, dict) and "info" not in inner:  # SV-Bench's env format: answer = JSON of info
            inner = row_from_answer(inner, value.get("question"))
            outer_meta = value.get("meta") if isinstance(value.get("meta"), dict) else {}
            value = {"meta": {**inner["meta"], **outer_meta}}
        value = {**inner, **{k: v for k, v in value.items() if k in ("question", "meta") and v}}
    question = value.get("question", value.get("prompt"))
    if not isinstance(question, str) or not question.strip():
        raise ValueError("'question' must be a non-empty config text")
    wrapped = PROMPT_CONFIG.fullmatch(question.strip())
    if wrapped:  # SV-Bench's env prompt around the config: keep the config itself
        question = wrapped.group("config")
        if not question.strip():
            raise ValueError("'question' wraps an empty config (SV-Bench's `File path:` prompt with no configuration)")
    info = value.get("info")
    if not isinstance(info, dict):
        raise ValueError("'info' must be an object with 'violations'")
    violations = info.get("violations")
    if not isinstance(violations, list):
        raise ValueError("'info.violations' must be a list")
    for i, item in enumerate(violations):
        if not (isinstance(item, dict) and isinstance(item.get("tool"), str) and isinstance(item.get("rule_id"), str)):
            raise ValueError(f"'info.violations[{i}]' must be an object with string 'tool' and 'rule_id'")
    meta = value.get("meta") or {}
    if not isinstance(meta, dict):
        raise ValueError("'meta' must be an object")
    lang = LANG_ALIASES.get(str(meta.get("lang") or info.get("fixture_type") or "k8s").lower())
    if lang is None:
        raise ValueError(f"'meta.lang' is {_describe(meta.get('lang') or info.get('fixture_type'))}: expected 'k8s' or 'tf'")
    clean = [{"tool": v["tool"], "rule_id": v["rule_id"], "severity": str(v.get("severity", "")),
              "msg": str(v.get("msg", "")), "loc": str(v.get("loc", ""))} for v in violations]
    out_info: dict[str, Any] = {"violations": clean, "patch": info.get("patch")}
    if isinstance(info.get("config"), str) and info["config"].strip():
        out_info["config"] = info["config"]  # the config itself when the question wraps it (sub-skills)
    return {"question": question, "info": out_info, "meta": {**meta, "lang": lang}}


def _describe(value: Any) -> str:
    """A value as a reason quotes it: its repr, cut to 60 characters (a row is untrusted; never echo it whole)."""
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def parse_problem(text: Any, *, limits: ProblemLimits | None = None, hard_set_index: HardSetIndex | None = None,
                  options: dict[str, Any] | None = None) -> E2TeacherProblem | Rejection:
    """One E2 teacher completion, relabelled by the oracle (teacher_problems.py). `options`: E2Options' sub_skill and
    difficulty shape the question (lang, only the prompt); any other key is parse_e2_problem's own (a test's oracle)."""
    rest = dict(options or {})
    chosen = E2Options.model_validate({name: rest.pop(name) for name in list(rest) if name in E2Options.model_fields})
    return parse_e2_problem(text, limits=limits, hard_set_index=hard_set_index, sub_skill=chosen.sub_skill or "detect",
                            difficulty=chosen.difficulty, **rest)


def student_question(row: Row) -> str:
    """SV-Bench's E2 audit question (`File path:` line, then the config), unless the question wraps the config
    itself (a sub-skill problem, whose info carries the config)."""
    return row["question"] if (row.get("info") or {}).get("config") else svbench_question(row)


E2_TASK = Task(
    name="e2",
    system_prompt=E2_SYSTEM_PROMPT,
    score=score,
    is_success=is_success,
    breakdown=breakdown,
    validate_row=validate_row,
    answer_of=answer,
    answer_tokens=384,  # ids of ~25 tokens each and maybe a patch (configs/experiment-C-soar-e2.toml)
    student_question=student_question,
    # the grounding's F1 >= 0.5 (docs/design.md §4), read from our corrected env's detection_f1, else from
    # SV-Bench's reward_config_auditing, which is F1 + 0.05 (+ a patch delta, so a good patch with F1 below 0.5
    # can also pass there)
    success_metrics=(("detection_f1", 0.5), ("reward_config_auditing", 0.55)),
    svbench_envs=("sv-env-config-verification",),
    teacher_prompt=e2_teacher_prompt,
    options=E2Options,
    parse_problem=parse_problem,
    prefetch_problems=prefetch_oracle,
    hub_dataset="intertwine-ai/security-verifiers-e2-private",  # SV-Bench's E2_HF_REPO default
    hub_dataset_env="E2_HF_REPO",
    svbench_paths=("e2.jsonl", "datasets/public_mini/e2.jsonl",
                   "environments/sv-env-config-verification/data/k8s-labeled-v1.jsonl"),
)
