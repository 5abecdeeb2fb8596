"""SV-Bench E2 (config audit and remediation), CORRECTED scoring: SOAR's grounding signal and the
student env's `scoring="corrected"` option. The student env scores as SV-Bench by default
(sv_soar/tasks/e2/svbench.py: same functions, weights, metric names and values).

The model answers `{"violations": [{"id": "tool/rule-id", "severity": "low|med|high"}], "patch": str,
"confidence": float}`; the JSON is found as in E1 (raw, a fenced block, the first balanced {...}).

    f1           severity-weighted F1 of the predicted ids against the row's oracle ids
                 (weights low 0.3 / med 0.6 / high 1.0, SV-Bench's SEV_WEIGHT)
    patch_delta  weight of the oracle ids that are gone after the patch is applied and the config
                 re-scanned (sv_soar.tasks.e2.oracle.patches; 0 without a patch or when it does not apply)
    format       0.05 for a valid answer, else -0.25
    reward       clip(f1 + patch_delta + format, -1, 2)

Scored ids follow SV-Bench's contract (sv_env_config_verification.reward_config_auditing): a K8s
config is scored against kube-linter's ids and a Terraform one against semgrep's; ids of the other
tools are dropped from both sides (`scored_tools="primary"`). `scored_tools="all"` keeps them.

Where this module departs from SV-Bench, and why:
- Ids are de-duplicated: SV-Bench sums true positives over the predicted list, so naming a correct
  id twice counts it twice (precision above 1 is possible). Here each id counts once.
- A clean config (no oracle id) answered with no violation scores f1 = 1: SV-Bench's F1 is 0 there,
  so a correct "no violations" earns only the 0.05 format bonus and inventing findings costs nothing.
  Predicting something on a clean config still scores 0.
- A true positive weighs its oracle severity, a false positive its predicted one: SV-Bench weighs
  true positives by the predicted severity, so answering "high" for everything inflates recall.
- patch_delta counts the oracle ids that the oracle itself found before the patch and not after,
  so an oracle miss is never paid for; a patch that removes or renames an object, or whose headers
  reach outside its folder, is not applied (sv_soar.tasks.e2.oracle.patches).
- An answer that does not parse scores format -0.25 (docs/design.md §3); SV-Bench's env returns 0 there.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import Any

from sv_soar.scoring.json_object import extract_json_object
from sv_soar.tasks.e2.oracle import PRIMARY_TOOL, OracleCache, finding_from_dict
from sv_soar.tasks.e2.oracle.patches import PatchRejected, apply_patch
from sv_soar.tasks.e2.oracle.process import ScannerError
from sv_soar.tasks.e2.svbench import answer_object, fixture_type_of, row_config

SEV_WEIGHT = {"low": 0.3, "med": 0.6, "high": 1.0}  # SV-Bench reward.py
FORMAT_BONUS, INVALID_PENALTY = 0.05, -0.25
REWARD_RANGE = (-1.0, 2.0)
F1_SUCCESS = 0.5  # grounding="correctness": an E2 answer "solves" a row at F1 >= this (docs/design.md §4)
TOOL_NAMES = ("kube-linter", "semgrep", "opa")

E2_SYSTEM_PROMPT = (
    "You are a security auditor for Kubernetes and Terraform configurations. Find the violations that "
    "kube-linter (Kubernetes) or semgrep (Terraform) would report, and optionally fix them.\n"
    "Answer with one JSON object and nothing else:\n"
    '{"violations": [{"id": "<tool>/<rule-id>", "severity": "low|med|high"}], '
    '"patch": "<unified diff of the config, or empty>", "confidence": <0.0-1.0>}\n'
    'Ids look like "kube-linter/run-as-non-root", "kube-linter/latest-tag", '
    '"kube-linter/unset-memory-requirements" or '
    '"semgrep/terraform.aws.security.aws-ebs-volume-unencrypted.aws-ebs-volume-unencrypted". '
    'A config without violations is answered with "violations": [].'
)


@dataclass(frozen=True)
class E2Output:
    """One parsed E2 answer: ids de-duplicated (first severity kept), in answer order."""

    violations: dict[str, str]
    patch: str
    confidence: float


def parse_e2_output(text: str) -> E2Output | None:
    """The answer if it is valid under SV-Bench's schema (AuditOutputModel), else None."""
    if not isinstance(text, str):
        return None
    data = extract_json_object(text)
    if data is None:
        return None
    items, confidence, patch = data.get("violations"), data.get("confidence"), data.get("patch", "")
    if not isinstance(items, list):
        return None
    if isinstance(confidence, bool) or not isinstance(confidence, (int, float)) or not math.isfinite(confidence):
        return None
    if patch is None:
        patch = ""
    if not isinstance(patch, str):
        return None
    violations: dict[str, str] = {}
    for item in items:
        if not isinstance(item, dict):
            return None
        vid, severity = item.get("id"), item.get("severity")
        if not isinstance(vid, str) or not isinstance(severity, str) or severity not in SEV_WEIGHT:  # [] is unhashable
            return None
        violations.setdefault(vid.strip(), severity)
    return E2Output(violations, patch, float(confidence))


# --- the oracle side of a row ---------------------------------------------------------------------


def config_of(row: dict[str, Any]) -> str:
    """The config a row audits: `info.config` when the question wraps it (teacher sub-skills), else the question."""
    config = (row.get("info") or {}).get("config")
    return config if isinstance(config, str) and config else row["question"]


def row_lang(row: dict[str, Any]) -> str:
    lang = str((row.get("meta") or {}).get("lang", "k8s")).lower()
    return "tf" if lang in ("tf", "terraform") else "k8s"


def scored_tools(lang: str, mode: str = "primary") -> tuple[str, ...]:
    if mode == "primary":
        return (PRIMARY_TOOL[lang],)
    if mode == "all":
        return TOOL_NAMES
    raise ValueError(f"scored_tools must be 'primary' or 'all', got {mode!r}")


def row_oracle_ids(row: dict[str, Any], tools: tuple[str, ...]) -> dict[str, str]:
    """The row's labelled ids {"tool/rule-id": severity} of `tools`, de-duplicated (highest severity)."""
    out: dict[str, str] = {}
    for item in (row.get("info") or {}).get("violations") or []:
        finding = finding_from_dict(item)
        if finding.tool not in tools:
            continue
        if finding.id not in out or SEV_WEIGHT[finding.level] > SEV_WEIGHT[out[finding.id]]:
            out[finding.id] = finding.level
    return out


def _keep(ids: dict[str, str], tools: tuple[str, ...]) -> dict[str, str]:
    return {vid: sev for vid, sev in ids.items() if vid.split("/", 1)[0] in tools}


# --- components -----------------------------------------------------------------------------------


def weighted_prf(predicted: dict[str, str], oracle: dict[str, str]) -> tuple[float, float, float]:
    """Severity-weighted precision, recall, F1 of de-duplicated ids; (1, 1, 1) when both are empty."""
    if not predicted and not oracle:
        return 1.0, 1.0, 1.0
    tp = sum(SEV_WEIGHT[oracle[v]] for v in predicted if v in oracle)
    fp = sum(SEV_WEIGHT[s] for v, s in predicted.items() if v not in oracle)
    fn = sum(SEV_WEIGHT[s] for v, s in oracle.items() if v not in predicted)
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return precision, recall, f1


@dataclass
class E2Scorer:
    """Scores E2 completions against a row; re-scans patched configs with the oracle (cached)."""

    scored: str = "primary"
    oracle: OracleCache = field(default_factory=OracleCache)

    def patch_delta(self, output: E2Output, row: dict[str, Any], oracle_ids: dict[str, str],
                    tools: tuple[str, ...]) -> tuple[float, str]:
        """(weight of oracle ids removed by the patch, "" or why the patch was not applied)."""
        if not output.patch.strip():
            return 0.0, "no patch"
        lang = row_lang(row)
        try:
            patched = apply_patch(config_of(row), output.patch, lang)
        except (PatchRejected, ScannerError) as exc:
            return 0.0, str(exc)
        if not oracle_ids:  # nothing to remove: no re-scan needed
            return 0.0, ""
        before = self.oracle.scan(config_of(row), lang, tools).ids(tools)
        after = self.oracle.scan(patched.text, lang, tools)
        if after.rejected:
            return 0.0, f"patched config rejected: {after.rejected}"
        gone = after.ids(tools)
        return sum(SEV_WEIGHT[sev] for vid, sev in oracle_ids.items() if vid in before and vid not in gone), ""

    def components(self, text: str, row: dict[str, Any]) -> dict[str, float]:
        """Every component and the total "reward" of one completion on one row."""
        output = parse_e2_output(text)
        lang = row_lang(row)
        tools = scored_tools(lang, self.scored)
        oracle_ids = row_oracle_ids(row, tools)
        if output is None:
            return {"reward": INVALID_PENALTY, "f1": 0.0, "precision": 0.0, "recall": 0.0,
                    "patch_delta": 0.0, "format": 0.0, "patch_applied": 0.0}
        precision, recall, f1 = weighted_prf(_keep(output.violations, tools), oracle_ids)
        delta, why_not = self.patch_delta(output, row, oracle_ids, tools)
        low, high = REWARD_RANGE
        reward = max(low, min(high, f1 + delta + FORMAT_BONUS))
        return {"reward": reward, "f1": f1, "precision": precision, "recall": recall,
                "patch_delta": delta, "format": 1.0, "patch_applied": float(bool(output.patch.strip()) and not why_not)}


DEFAULT_SCORER = E2Scorer()


def e2_components(text: str, row: dict[str, Any], scorer: E2Scorer | None = None) -> dict[str, float]:
    return (scorer or DEFAULT_SCORER).components(text, row)


def row_from_answer(answer: Any, prompt: Any = None) -> dict[str, Any]:
    """The row {"question", "info", "meta"} a dataset record's `answer` stands for.

    Reads SV-Bench's own answer (the JSON of a row's `info`: oracle findings under "violations" or
    "oracle", `fixture_type`, `fixture_path`; the config from "config", the fixture file or the prompt)
    and the older {"question", "info", "meta"} JSON. An answer without an oracle raises ValueError:
    it is never read as a clean config.
    """
    data = json.loads(answer) if isinstance(answer, str) else dict(answer or {})
    if isinstance(data, dict) and isinstance(data.get("info"), dict) and isinstance(data.get("question"), str):
        return data
    obj = answer_object(data)
    config = row_config(obj, prompt)
    if config is None:
        raise ValueError("E2 answer carries no config: no 'config', no readable 'fixture_path', no prompt")
    if "oracle" in obj:
        violations = [{"tool": str(v["id"]).split("/", 1)[0], "rule_id": str(v["id"]).split("/", 1)[-1],
                       "severity": str(v.get("severity", ""))}
                      for v in obj.get("oracle") or [] if isinstance(v, dict) and v.get("id")]
    else:
        violations = [v for v in obj.get("violations") or [] if isinstance(v, dict)]
    meta = obj.get("meta") if isinstance(obj.get("meta"), dict) else {}
    return {"question": config, "info": {"violations": violations, "patch": obj.get("patch")},
            "meta": {**meta, "lang": fixture_type_of(obj, {})}}


def count_tool_calls(completion: Any) -> int:
    """Assistant tool calls in a chat completion (0 for a plain string)."""
    if not isinstance(completion, list):
        return 0
    total = 0
    for message in completion:
        calls = message.get("tool_calls") if isinstance(message, dict) else getattr(message, "tool_calls", None)
        total += len(calls or [])
    return total
