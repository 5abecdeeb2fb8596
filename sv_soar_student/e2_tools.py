"""E2's tool-use environment: SV-Bench's tools (`run_kubelinter`, `run_semgrep`, `run_opa`) backed by
the offline oracle, so that a student trained here calls the tools SV-Bench's E2 environment offers.

Each tool takes SV-Bench's argument, `paths: list[str]` (the prompt's `File path:` line names the
task's config, materialised in the env's private folder; paths are confined to that folder and any
other is refused with a tool error), or a config text the model passes as `config` (its patched
version, to re-verify before answering: the seed's "generate patch -> verify" step), or nothing (the
task's config). The task's config, language and folder are injected from the rollout state and
hidden from the tool schema. A tool answers with a JSON list of findings in SV-Bench's tool-output shape
(tool, rule_id, severity, message, file), at most `MAX_FINDINGS`; an unreadable config answers
{"error": ...}. verifiers' ToolEnv counts calls per tool and in total (tool economy).
"""

from __future__ import annotations

import atexit
import json
import shutil
import tempfile
from pathlib import Path
from typing import Any, Callable

import verifiers as vf

from sv_soar.tasks.e2.oracle import OracleCache, OracleReport
from sv_soar.tasks.e2.scoring import E2_SYSTEM_PROMPT, config_of, row_from_answer, row_lang

MAX_FINDINGS = 50
MAX_CONFIG_CHARS = 64 * 1024
E2_TOOL_SYSTEM_PROMPT = E2_SYSTEM_PROMPT + (
    "\nThe task includes a `File path:` line followed by the configuration content. Tools: "
    "run_kubelinter (Kubernetes), run_semgrep (Kubernetes and Terraform) and run_opa (Kubernetes "
    "policies) scan the files you pass as paths=[the provided file path], or the config text you pass "
    "as `config` (for example your patched version). Call them, then answer with the JSON object."
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


class ToolInputError(ValueError):
    """A tool argument the tool refuses (a path outside the task's folder, an unreadable file)."""


def _confined(path: Any, root: str) -> Path:
    """`path` resolved inside `root` (relative paths are relative to it); ToolInputError otherwise."""
    if not isinstance(path, str) or not path.strip():
        raise ToolInputError(f"paths must be a list of file paths, got {path!r}")
    if not root:
        raise ToolInputError("this task has no file folder: pass the config text as `config`")
    base = Path(root).resolve()
    candidate = Path(path.strip())
    resolved = (candidate if candidate.is_absolute() else base / candidate).resolve()
    if not resolved.is_relative_to(base):
        raise ToolInputError(f"path {path!r} is outside this task's folder: pass the `File path:` of the task")
    if not resolved.is_file():
        raise ToolInputError(f"no such file: {path!r}")
    return resolved


def _texts(paths: Any, config: str, task_config: str, root: str, lang: str) -> list[tuple[str, str, str]]:
    """(label, text, lang) of each thing to scan: the given paths, else `config`, else the task's config."""
    if paths:
        if isinstance(paths, str):
            paths = [paths]
        if not isinstance(paths, list):
            raise ToolInputError(f"paths must be a list of file paths, got {type(paths).__name__}")
        out = []
        for path in paths:
            file = _confined(path, root)
            if file.stat().st_size > MAX_CONFIG_CHARS:
                raise ToolInputError(f"{path!r} is over {MAX_CONFIG_CHARS} characters")
            out.append((path, file.read_text(encoding="utf-8", errors="replace"), "tf" if file.suffix == ".tf" else "k8s"))
        return out
    text = config if isinstance(config, str) and config.strip() else task_config
    if len(text) > MAX_CONFIG_CHARS:
        raise ToolInputError(f"config over {MAX_CONFIG_CHARS} characters")
    return [("", text, lang)]


def _scan(tool: str, paths: Any, config: str, task_config: str, lang: str, root: str) -> str:
    try:
        items = _texts(paths, config, task_config, root, lang)
    except ToolInputError as exc:
        return json.dumps({"error": str(exc)})
    findings: list[Any] = []
    for label, text, item_lang in items:
        if tool == "opa":
            if item_lang != "k8s":  # SV-Bench's run_opa skips Terraform
                continue
            rendered = json.loads(_render(_REGO.scan(text, "k8s", ("kube-linter",)), "kube-linter"))
        elif tool == "kube-linter" and item_lang != "k8s":
            continue  # kube-linter reads Kubernetes YAML only
        else:
            rendered = json.loads(_render(_ORACLE.scan(text, item_lang, (tool,)), tool))
        if isinstance(rendered, dict):  # an error
            return json.dumps(rendered)
        for finding in rendered:
            if label:
                finding["file"] = label
        findings.extend(rendered)
    return json.dumps(findings[:MAX_FINDINGS])


def run_kubelinter(paths: list[str] | None = None, config: str = "", task_config: str = "", lang: str = "k8s",
                   root: str = "") -> str:
    """Run kube-linter on Kubernetes YAML files (`paths`) or on a YAML text (`config`); returns findings as JSON."""
    return _scan("kube-linter", paths, config, task_config, lang, root)


def run_semgrep(paths: list[str] | None = None, config: str = "", task_config: str = "", lang: str = "k8s",
                root: str = "") -> str:
    """Run semgrep's Kubernetes or Terraform rules on files (`paths`) or on a config text (`config`); returns findings as JSON."""
    return _scan("semgrep", paths, config, task_config, lang, root)


def run_opa(paths: list[str] | None = None, config: str = "", task_config: str = "", lang: str = "k8s",
            root: str = "") -> str:
    """Evaluate the Rego (OPA) policies on Kubernetes files (`paths`) or a config text (`config`); returns findings as JSON."""
    return _scan("opa", paths, config, task_config, lang, root)


E2_TOOLS = (run_kubelinter, run_semgrep, run_opa)
HIDDEN_ARGS = ["task_config", "lang", "root"]


def materialise_configs(rows: list[dict[str, Any]], fixture_path: Callable[[dict[str, Any]], str]) -> str:
    """Write each row's config to a private temp folder at its `File path:`; the folder (removed at exit)."""
    root = tempfile.mkdtemp(prefix="sv-soar-e2-")
    atexit.register(shutil.rmtree, root, True)
    for row in rows:
        path = Path(root, fixture_path(row))
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(config_of(row), encoding="utf-8")
    return root


class E2ToolEnv(vf.StatefulToolEnv):
    """Multi-turn E2: the model may call the three scanners, then answers with SV-Bench's JSON.

    `config_root` is the private folder holding each task's config at its `File path:`.
    """

    def __init__(self, max_turns: int = 6, config_root: str = "", **kwargs: Any) -> None:
        super().__init__(tools=[], max_turns=max_turns, **kwargs)
        self.config_root = config_root
        for tool in E2_TOOLS:
            self.add_tool(tool, args_to_skip=HIDDEN_ARGS)

    def update_tool_args(self, tool_name: str, tool_args: dict, messages: vf.Messages, state: vf.State,
                         **kwargs: Any) -> dict:
        row = row_from_answer(state["answer"], state.get("prompt"))
        return {**{k: v for k, v in tool_args.items() if k in ("paths", "config")},
                "task_config": row["question"] if not (row.get("info") or {}).get("config") else row["info"]["config"],
                "lang": row_lang(row), "root": self.config_root}
