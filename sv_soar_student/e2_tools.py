"""E2's tool-use environment: SV-Bench's tools (`run_kubelinter`, `run_semgrep`, `run_opa`) backed by
the offline oracle, so that a student trained here calls the tools SV-Bench's E2 environment offers.

Each tool scans the task's config when called without arguments, or a config text the model passes
as `config` (its patched version, to re-verify before answering: the seed's "generate patch ->
verify" step). The task's config and language are injected from the rollout state and hidden from
the tool schema. A tool answers with a JSON list of findings in SV-Bench's tool-output shape
(tool, rule_id, severity, message, file), at most `MAX_FINDINGS`; an unreadable config answers
{"error": ...}. verifiers' ToolEnv counts calls per tool and in total (tool economy).
"""

from __future__ import annotations

import json
from typing import Any

import verifiers as vf

from rubrics.e2 import E2_SYSTEM_PROMPT, row_lang
from sv_soar.oracle import OracleCache, OracleReport

MAX_FINDINGS = 50
MAX_CONFIG_CHARS = 64 * 1024
E2_TOOL_SYSTEM_PROMPT = E2_SYSTEM_PROMPT + (
    "\nTools: run_kubelinter (Kubernetes), run_semgrep (Kubernetes and Terraform) and run_opa "
    "(Kubernetes policies) scan this task's config when called without arguments, or the config text "
    "you pass as `config` (for example your patched version). Call them, then answer with the JSON object."
)

_ORACLE = OracleCache()
_REGO = OracleCache(kube_linter="rego")  # run_opa: the Rego policies, even where the binary is on PATH


def _render(report: OracleReport, tool: str) -> str:
    if report.rejected:
        return json.dumps({"error": f"config not scanned: {report.rejected}"})
    if tool in report.errors:
        return json.dumps({"error": report.errors[tool]})
    findings = [
        {"tool": f.tool, "rule_id": f.rule_id, "id": f.id, "severity": f.level, "message": f.msg[:300], "file": f.loc}
        for f in report.findings if f.tool == tool
    ][:MAX_FINDINGS]
    return json.dumps(findings)


def _scan(tool: str, config: str, task_config: str, lang: str) -> str:
    text = config if isinstance(config, str) and config.strip() else task_config
    if len(text) > MAX_CONFIG_CHARS:
        return json.dumps({"error": f"config over {MAX_CONFIG_CHARS} characters"})
    if tool == "kube-linter" and lang != "k8s":
        return json.dumps([])  # kube-linter reads Kubernetes YAML only
    return _render(_ORACLE.scan(text, lang, (tool,)), tool)


def run_kubelinter(config: str = "", task_config: str = "", lang: str = "k8s") -> str:
    """Run kube-linter on the task's Kubernetes config (or on `config`, a YAML text); returns findings as JSON."""
    return _scan("kube-linter", config, task_config, lang)


def run_semgrep(config: str = "", task_config: str = "", lang: str = "k8s") -> str:
    """Run semgrep's Kubernetes or Terraform rules on the task's config (or on `config`); returns findings as JSON."""
    return _scan("semgrep", config, task_config, lang)


def run_opa(config: str = "", task_config: str = "", lang: str = "k8s") -> str:
    """Evaluate the Rego (OPA) policies on the task's Kubernetes config (or on `config`); returns findings as JSON."""
    if lang != "k8s":
        return json.dumps([])
    text = config if isinstance(config, str) and config.strip() else task_config
    if len(text) > MAX_CONFIG_CHARS:
        return json.dumps({"error": f"config over {MAX_CONFIG_CHARS} characters"})
    return _render(_REGO.scan(text, "k8s", ("kube-linter",)), "kube-linter")


E2_TOOLS = (run_kubelinter, run_semgrep, run_opa)
HIDDEN_ARGS = ["task_config", "lang"]


class E2ToolEnv(vf.StatefulToolEnv):
    """Multi-turn E2: the model may call the three scanners, then answers with SV-Bench's JSON."""

    def __init__(self, max_turns: int = 6, **kwargs: Any) -> None:
        super().__init__(tools=[], max_turns=max_turns, **kwargs)
        for tool in E2_TOOLS:
            self.add_tool(tool, args_to_skip=HIDDEN_ARGS)

    def update_tool_args(self, tool_name: str, tool_args: dict, messages: vf.Messages, state: vf.State,
                         **kwargs: Any) -> dict:
        row = json.loads(state["answer"])
        return {**{k: v for k, v in tool_args.items() if k == "config"},
                "task_config": row["question"], "lang": row_lang(row)}
