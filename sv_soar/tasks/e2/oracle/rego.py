"""kube-linter's checks as Rego (policies/kube_linter.rego), evaluated in-process by regopy
(rego-cpp): no OPA server, no binary, no network. Findings carry kube-linter's tool name and rule
ids, so they score exactly like the binary's."""

from __future__ import annotations

import json
import math
import threading
from importlib import resources
from typing import Any

from sv_soar.tasks.e2.oracle.findings import Finding
from sv_soar.tasks.e2.oracle.safe_yaml import DEFAULT_LIMITS, YamlLimits, load_yaml_documents

POLICY_FILE = "kube_linter.rego"
QUERY = "data.svsoar.kubelinter.violations"
KUBE_LINTER_SEVERITY = "medium"  # kube-linter reports no severity; SV-Bench's labels say "medium"

_local = threading.local()  # a rego-cpp interpreter is not shared between threads


def policy_text() -> str:
    policies = resources.files("sv_soar.tasks.e2.oracle").joinpath("policies")
    return policies.joinpath(POLICY_FILE).read_text(encoding="utf-8")


def k8s_objects(documents: list[Any]) -> list[dict[str, Any]]:
    """The Kubernetes objects of a file's YAML documents: mappings with a string `kind`; a `List`
    contributes its items. Anything else (a Helm values file, a kustomization patch list) is skipped."""
    objects: list[dict[str, Any]] = []
    for doc in documents:
        if not isinstance(doc, dict) or not isinstance(doc.get("kind"), str):
            continue
        if doc["kind"].endswith("List") and isinstance(doc.get("items"), list):
            objects.extend(item for item in doc["items"]
                           if isinstance(item, dict) and isinstance(item.get("kind"), str))
        else:
            objects.append(doc)
    return objects


def _interpreter():
    rego = getattr(_local, "interpreter", None)
    if rego is None:
        # torch first: torch loaded into a process after regopy aborts it ("double free or corruption",
        # regopy 1.x wheels on Linux); loaded before, both work. Training and scoring import torch later
        # in the same process, so the order cannot be left to the caller. torch is a core dependency.
        import torch  # order: torch before regopy (above)  # noqa: F401
        from regopy import Interpreter  # order: after torch (above)

        rego = Interpreter()
        rego.add_module(POLICY_FILE, policy_text())
        _local.interpreter = rego
    return rego


def evaluate(objects: list[dict[str, Any]]) -> list[dict[str, str]]:
    """The policy's violation records for `objects` (one file's worth)."""
    if not objects:
        return []
    payload = {"objects": _rego_value(objects)}
    rego = _interpreter()
    rego.set_input(payload)
    output = rego.query(QUERY)
    if not output.ok():
        raise RuntimeError(f"rego evaluation failed: {str(output)[:300]}")
    records = json.loads(str(output))["expressions"][0]  # the Output prints as JSON
    # a container's name may be any YAML value (5, {k: v}): sorted as text, as two types do not compare
    return sorted(records, key=lambda r: (r["rule"], r["object"], str(r["container"])))


def _rego_value(value: Any) -> Any:
    """A YAML value as the policy reads it: JSON types only (dates and the like, and non-finite floats,
    as strings; keys as strings), and every string JSON-escaped. rego-cpp prints the strings of its
    result unescaped and regopy parses that print as JSON, so an object or container named with a quote,
    a backslash or a control character made the oracle raise JSONDecodeError; escaped going in, the print
    decodes back to the original. The policy's constants hold no such characters: its checks are unchanged."""
    if isinstance(value, dict):
        return {_rego_value(k if isinstance(k, str) else _key_text(k)): _rego_value(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_rego_value(v) for v in value]
    if value is None or isinstance(value, (bool, int)):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else str(value)
    return json.dumps(value if isinstance(value, str) else str(value), ensure_ascii=False)[1:-1]


def _key_text(key: Any) -> str:
    """A mapping key that is not a string, as json.dumps names it (1 -> "1", True -> "true"); a date as str()."""
    return json.dumps(key) if key is None or isinstance(key, (bool, int, float)) else str(key)


def findings_of(records: list[dict[str, str]]) -> list[Finding]:
    return [
        Finding("kube-linter", r["rule"], KUBE_LINTER_SEVERITY, r["msg"],
                f"{r['object']} {r['container']}".strip())
        for r in records
    ]


def scan_k8s(text: str, limits: YamlLimits = DEFAULT_LIMITS) -> list[Finding]:
    """kube-linter findings of one K8s YAML file; ConfigRejected when it is not safe, valid YAML."""
    return findings_of(evaluate(k8s_objects(load_yaml_documents(text, limits))))
