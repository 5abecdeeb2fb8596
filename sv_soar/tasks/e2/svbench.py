"""SV-Bench's E2 executable rubric, reproduced: same functions, weights, metric names and scores.

Reference: SV-Bench `environments/sv-env-config-verification` (sv_env_config_verification.py,
reward.py, schema.py, patching.py; github.com/intertwine/security-verifiers). Its rubric is

    reward_config_auditing   1.0   max(0, clip(F1 + patch delta + 0.05, -1, 2)); 0 when the answer is
                                   not valid JSON under its schema or names no violation
    format_reward            0.05  1 if the answer is valid JSON under its schema, else 0
    tool_observation_reward  0.2   max(0, F1 of the findings the rollout's tool messages surfaced)

and this module follows it case by case (tests/test_e2_svbench.py, one test per behaviour):
- The answer is the raw text as JSON, else the first ``` fenced block; nothing else (prose around
  the JSON, or two objects, is not an answer). The schema is SV-Bench's pydantic AuditOutputModel
  (severity exactly low|med|high, confidence a float, which pydantic's lax mode also reads from "0.9").
- `answer` is the JSON of the row's `info` as SV-Bench stores it: oracle findings under "oracle"
  ({"id", "severity"}) or "violations" ({"tool", "rule_id", "severity"}), `fixture_type` ("tf" for
  Terraform, default "k8s"), `fixture_path`. Only the primary tool's ids are scored (kube-linter for
  K8s, semgrep for Terraform) when either side uses tool-style ids.
- F1 is SV-Bench's score_detection: true positives summed over the predicted list (a repeated
  correct id counts twice), a clean config has F1 0 (so it never scores above 0.05).

Deliberate differences, each because SV-Bench's behaviour cannot run here or loses data:
- An `answer` that is not a JSON object holding "oracle" or "violations" raises ValueError naming
  what it got (verifiers logs it and scores 0); SV-Bench reads it as a clean config, so any valid
  answer scored as if no violation existed.
- The patch is applied (GNU `patch`, as SV-Bench) to the config text the row carries: `config` in
  the answer when present (rows written by this project), else the file at `fixture_path` when it
  exists, else the configuration block of the prompt. SV-Bench reads `fixture_path` only and crashes
  when the file is absent. The patched config is re-scanned with the project's offline oracle
  (kube-linter when on PATH, else its Rego port; local semgrep rules), not the semgrep registry.
  A JSON-patch ("[...]") is not applied: SV-Bench applies one only to a JSON config.
- A chat message that is an object is read through its `content` (SV-Bench reads `str(message)`).
"""

from __future__ import annotations

import ast
import json
import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field, ValidationError

from sv_soar.scoring.completion_text import response_text
from sv_soar.tasks.e2.oracle import OracleCache
from sv_soar.tasks.e2.oracle.process import ScannerError

SEV_WEIGHT = {"low": 0.3, "med": 0.6, "high": 1.0}  # SV-Bench reward.py
E2_SVBENCH_WEIGHTS = (1.0, 0.05, 0.2)  # SV-Bench _build_executable_rubric
PRIMARY_PREFIX = {"k8s": "kube-linter/", "tf": "semgrep/"}
PATCH_TIMEOUT_S = 10

_FENCE = re.compile(r"```(?:json)?\s*\n?(.*?)\n?```", re.DOTALL | re.IGNORECASE)  # sv_shared.parsers
# SV-Bench's prompt around a config (_convert_e2_format): File path line, then a ```text block
PROMPT_CONFIG = re.compile(r"File path: (?P<path>[^\n]*)\n\nConfiguration:\n```text\n(?P<config>.*)\n```", re.DOTALL)


class ViolationModel(BaseModel):
    """SV-Bench schema.py ViolationModel."""

    id: str
    severity: str = Field(pattern="^(low|med|high)$")


class AuditOutputModel(BaseModel):
    """SV-Bench schema.py AuditOutputModel."""

    violations: list[ViolationModel]
    patch: str | None = ""
    confidence: float


@dataclass(frozen=True)
class Violation:
    id: str
    severity: str


def _json_loads(text: str) -> tuple[bool, Any]:
    try:
        return True, json.loads(text)
    except (json.JSONDecodeError, RecursionError):
        return False, None


def parse_answer_json(text: str) -> tuple[bool, Any]:
    """SV-Bench's reading of an answer: the raw text as JSON, else the first fenced block."""
    ok, data = _json_loads(text)
    if ok:
        return True, data
    match = _FENCE.search(text)
    return _json_loads(match.group(1).strip() if match else text)


def parse_model_output(data: Any) -> tuple[list[Violation], str | None, float] | None:
    """SV-Bench's parse_model_output, None where it raises ValueError (pydantic's ValidationError)."""
    try:
        parsed = AuditOutputModel.model_validate(data)
    except ValidationError:
        return None
    return [Violation(v.id, v.severity) for v in parsed.violations], parsed.patch, parsed.confidence


def parsed_output(completion: Any) -> tuple[list[Violation], str | None, float] | None:
    ok, data = parse_answer_json(response_text(completion))
    return parse_model_output(data) if ok else None


# --- the oracle side: SV-Bench's answer JSON ------------------------------------------------------


def normalize_severity(value: Any) -> str:
    """SV-Bench's _normalize_severity: medium -> med, critical -> high, anything else -> med."""
    sev = str(value).lower().strip() if value is not None else "med"
    sev = {"medium": "med", "critical": "high"}.get(sev, sev)
    return sev if sev in SEV_WEIGHT else "med"


def answer_object(answer: Any) -> dict[str, Any]:
    """The row's answer as an object holding its oracle; ValueError (never "clean") when unreadable."""
    if isinstance(answer, str):
        try:
            answer = json.loads(answer)
        except json.JSONDecodeError as exc:
            raise ValueError(f"E2 answer is not JSON ({exc.msg} at char {exc.pos}): {answer[:80]!r}") from None
    if not isinstance(answer, dict):
        raise ValueError(f"E2 answer is a JSON {type(answer).__name__}, expected the object of a row's info")
    if "oracle" not in answer and "violations" not in answer:
        raise ValueError(f"E2 answer has no oracle: neither 'oracle' nor 'violations' among keys {sorted(answer)[:8]}")
    key = "oracle" if "oracle" in answer else "violations"
    if not isinstance(answer[key], (list, type(None))):  # SV-Bench iterates it (TypeError) or skips it (clean)
        raise ValueError(f"E2 answer's {key!r} is a JSON {type(answer[key]).__name__}, expected a list of findings")
    return answer


def fixture_type_of(answer_obj: dict[str, Any], kwargs: dict[str, Any]) -> str:
    fixture_type = str(answer_obj.get("fixture_type") or kwargs.get("fixture_type") or "k8s").lower().strip()
    return "tf" if fixture_type in {"tf", "terraform"} else "k8s"


def oracle_violations(answer_obj: dict[str, Any]) -> list[Violation]:
    """SV-Bench's _oracle_from_answer: the "oracle" list ({id, severity}) or the build format's
    "violations" ({tool, rule_id, severity}), in order, duplicates kept."""
    oracle: list[Violation] = []
    if "oracle" in answer_obj:
        for v in answer_obj.get("oracle") or []:
            if isinstance(v, dict) and v.get("id"):
                oracle.append(Violation(str(v["id"]), normalize_severity(v.get("severity"))))
        return oracle
    findings = answer_obj.get("violations") or []
    if isinstance(findings, list):
        for f in findings:
            if not isinstance(f, dict):
                continue
            tool, rule_id = f.get("tool"), f.get("rule_id")
            vid = f.get("id") or (f"{tool}/{rule_id}" if tool and rule_id else None)
            if vid:
                oracle.append(Violation(str(vid), normalize_severity(f.get("severity"))))
    return oracle


def primary_tool_filter(predicted: list[Violation], oracle: list[Violation],
                        fixture_type: str) -> tuple[list[Violation], list[Violation]]:
    """SV-Bench's scoring contract: K8s is scored on kube-linter ids, Terraform on semgrep ids."""
    tool_style = any(v.id.startswith(("kube-linter/", "semgrep/", "opa/")) for v in [*oracle, *predicted])
    if not tool_style:
        return predicted, oracle
    prefix = PRIMARY_PREFIX[fixture_type]
    return [v for v in predicted if v.id.startswith(prefix)], [v for v in oracle if v.id.startswith(prefix)]


# --- SV-Bench reward.py ---------------------------------------------------------------------------


def score_detection(pred: list[Violation], oracle: list[Violation]) -> tuple[float, float, float]:
    """Weighted precision, recall, F1; true positives summed over the predicted LIST (SV-Bench)."""
    o_ids = {v.id: SEV_WEIGHT[v.severity] for v in oracle}
    p_ids = {v.id: SEV_WEIGHT[v.severity] for v in pred}
    tp = sum(o_ids[v.id] for v in pred if v.id in o_ids)
    fp = sum(SEV_WEIGHT[v.severity] for v in pred if v.id not in o_ids)
    fn = sum(w for vid, w in o_ids.items() if vid not in p_ids)
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return precision, recall, f1


def score_patch_delta(oracle: list[Violation], post: list[Violation]) -> float:
    o = {v.id: SEV_WEIGHT[v.severity] for v in oracle}
    p = {v.id for v in post}
    return sum(w for vid, w in o.items() if vid not in p)


def final_reward(pred: list[Violation], oracle: list[Violation], format_bonus: float = 0.05,
                 post_patch: list[Violation] | None = None) -> float:
    """SV-Bench's final_reward with had_valid_json=True: clip(F1 + patch delta + bonus, -1, 2)."""
    reward = score_detection(pred, oracle)[2]
    if post_patch is not None:
        reward += score_patch_delta(oracle, post_patch)
    reward += format_bonus
    return max(-1.0, min(2.0, reward))


# --- patch: applied to the row's config, re-scanned -----------------------------------------------


def row_config(answer_obj: dict[str, Any], prompt: Any) -> str | None:
    """The config text a row audits: answer "config", else the fixture file, else the prompt's block."""
    config = answer_obj.get("config")
    if isinstance(config, str):
        return config
    fixture = _fixture_text(answer_obj.get("fixture_path"))
    if fixture is not None:
        return fixture
    text = prompt_user_text(prompt)
    match = PROMPT_CONFIG.search(text)
    return match.group("config") if match else (text or None)


MAX_FIXTURE_BYTES = 1 << 20  # SV-Bench's fixtures are a few KB; a path to anything larger is not one


def _fixture_text(fixture_path: Any) -> str | None:
    """The config at `fixture_path` where that is a readable UTF-8 file of fixture size, else None (the caller
    then reads the prompt): the path comes from a row, so a name too long, a binary or unreadable file, or a
    device never raises here."""
    if not isinstance(fixture_path, str) or not fixture_path:
        return None
    try:
        path = Path(fixture_path)
        if not path.is_file() or path.stat().st_size > MAX_FIXTURE_BYTES:
            return None
        return path.read_text(encoding="utf-8")
    except (OSError, ValueError):  # ENAMETOOLONG, EACCES, a NUL in the path, not UTF-8
        return None


def prompt_user_text(prompt: Any) -> str:
    if isinstance(prompt, str):
        return prompt
    if not isinstance(prompt, (list, tuple)):  # a row's prompt from a file: anything (a number, an object)
        return ""
    for message in reversed(prompt):
        role = message.get("role") if isinstance(message, dict) else getattr(message, "role", None)
        if role == "user":
            content = message.get("content") if isinstance(message, dict) else getattr(message, "content", None)
            return content if isinstance(content, str) else ""
    return ""


def apply_unified_diff(original: str, patch: str) -> str | None:
    """SV-Bench's apply_patch_to_text: GNU `patch FILE` in a temp folder; None when it fails.

    --forward answers "no" to "reversed patch, apply anyway?", the answer `patch` takes in SV-Bench's
    headless runs, without ever waiting on a terminal.
    """
    if patch.strip().startswith("[") or shutil.which("patch") is None:
        return None
    with tempfile.TemporaryDirectory(prefix="sv-soar-patch-") as folder:
        path = Path(folder, "file.txt")
        try:  # a lone surrogate (JSON "\ud800") in the config or the patch has no UTF-8: no patch applies
            path.write_text(original, encoding="utf-8")
            proc = subprocess.run(["patch", "--forward", "--silent", str(path)], input=patch, text=True,
                                  encoding="utf-8", errors="replace", capture_output=True, check=False, cwd=folder, timeout=PATCH_TIMEOUT_S)
        except (subprocess.TimeoutExpired, UnicodeEncodeError):
            return None
        if proc.returncode != 0:
            return None
        try:
            return path.read_text(encoding="utf-8")
        except UnicodeDecodeError:  # GNU patch writes bytes as given; a result that is not UTF-8 is no config
            return None


_POST_PATCH_ORACLE = OracleCache()


def post_patch_findings(config: str, patch: str, fixture_type: str) -> list[Violation] | None:
    """The primary tool's findings on the patched config, or None when the patch did not apply."""
    patched = apply_unified_diff(config, patch)
    if patched is None:
        return None
    tool = "kube-linter" if fixture_type == "k8s" else "semgrep"
    try:
        report = _POST_PATCH_ORACLE.scan(patched, fixture_type, (tool,))
    except ScannerError:
        return None
    return [Violation(f.id, f.level) for f in report.findings if f.tool == tool]


# --- tool observations ----------------------------------------------------------------------------


def _message_value(message: Any, key: str) -> Any:
    return message.get(key) if isinstance(message, dict) else getattr(message, key, None)


def _parse_tool_content(content: Any) -> Any:
    if not isinstance(content, str):
        return content
    try:
        return json.loads(content)
    except (json.JSONDecodeError, RecursionError):
        try:
            return ast.literal_eval(content)
        except (SyntaxError, ValueError, TypeError, MemoryError, RecursionError):
            return content


def _walk_tool_findings(value: Any) -> list[Violation]:
    if isinstance(value, dict):
        tool, rule_id = value.get("tool"), value.get("rule_id")
        if tool and rule_id:
            return [Violation(f"{tool}/{rule_id}", normalize_severity(value.get("severity")))]
        return [f for child in value.values() for f in _walk_tool_findings(child)]
    if isinstance(value, list):
        return [f for child in value for f in _walk_tool_findings(child)]
    return []


def tool_observations(completion: Any) -> list[Violation]:
    """Findings the rollout's tool messages surfaced, each id once (first severity kept)."""
    if not isinstance(completion, list):
        return []
    deduped: dict[str, Violation] = {}
    for message in completion:
        if _message_value(message, "role") == "tool":
            for finding in _walk_tool_findings(_parse_tool_content(_message_value(message, "content"))):
                deduped.setdefault(finding.id, finding)
    return list(deduped.values())


# --- the three reward functions, under SV-Bench's names -------------------------------------------


def reward_config_auditing(completion: Any, answer: Any = None, prompt: Any = None, **kwargs: Any) -> float:
    """max(0, clip(F1 + patch delta + 0.05, -1, 2)); 0 for an invalid answer or no violation named."""
    output = parsed_output(completion)
    if output is None:
        return 0.0
    violations_pred, patch, _ = output
    if not violations_pred:
        return 0.0
    answer_obj = answer_object(answer)
    fixture_type = fixture_type_of(answer_obj, kwargs)
    violations_pred, oracle = primary_tool_filter(violations_pred, oracle_violations(answer_obj), fixture_type)
    post = None
    if patch:
        config = row_config(answer_obj, prompt)
        if config is not None:
            post = post_patch_findings(config, patch, fixture_type)
    return max(0.0, final_reward(violations_pred, oracle, post_patch=post))


def format_reward(completion: Any, answer: Any = "", **kwargs: Any) -> float:
    """1 if the answer is JSON (raw or fenced) valid under SV-Bench's schema, else 0."""
    return 1.0 if parsed_output(completion) is not None else 0.0


def tool_observation_reward(completion: Any, answer: Any = None, **kwargs: Any) -> float:
    """max(0, F1 of the findings the tool messages surfaced against the oracle), no format bonus."""
    observed = tool_observations(completion)
    if not observed:
        return 0.0
    answer_obj = answer_object(answer)
    fixture_type = fixture_type_of(answer_obj, kwargs)
    observed, oracle = primary_tool_filter(observed, oracle_violations(answer_obj), fixture_type)
    if not observed or not oracle:
        return 0.0
    return max(0.0, final_reward(observed, oracle, format_bonus=0.0))
