"""kube-linter's checks as Rego (policies/kube_linter.rego), evaluated in-process by regopy
(rego-cpp): no OPA server, no binary, no network. Findings carry kube-linter's tool name and rule
ids, so they score exactly like the binary's."""

from __future__ import annotations

import json
import threading
from importlib import resources
from typing import Any

from sv_soar.oracle.findings import Finding
from sv_soar.oracle.safe_yaml import DEFAULT_LIMITS, YamlLimits, load_yaml_documents

POLICY_FILE = "kube_linter.rego"
QUERY = "data.svsoar.kubelinter.violations"
KUBE_LINTER_SEVERITY = "medium"  # kube-linter reports no severity; SV-Bench's labels say "medium"

_local = threading.local()  # a rego-cpp interpreter is not shared between threads


def policy_text() -> str:
    return resources.files("sv_soar.oracle").joinpath("policies").joinpath(POLICY_FILE).read_text(encoding="utf-8")


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
        from regopy import Interpreter

        rego = Interpreter()
        rego.add_module(POLICY_FILE, policy_text())
        _local.interpreter = rego
    return rego


def evaluate(objects: list[dict[str, Any]]) -> list[dict[str, str]]:
    """The policy's violation records for `objects` (one file's worth)."""
    if not objects:
        return []
    # YAML gives dates and the like; JSON (what Rego reads) gets them as strings
    payload = json.loads(json.dumps({"objects": objects}, default=str))
    rego = _interpreter()
    rego.set_input(payload)
    output = rego.query(QUERY)
    if not output.ok():
        raise RuntimeError(f"rego evaluation failed: {str(output)[:300]}")
    records = json.loads(str(output))["expressions"][0]  # the Output prints as JSON
    return sorted(records, key=lambda r: (r["rule"], r["object"], r["container"]))


def findings_of(records: list[dict[str, str]]) -> list[Finding]:
    return [
        Finding("kube-linter", r["rule"], KUBE_LINTER_SEVERITY, r["msg"],
                f"{r['object']} {r['container']}".strip())
        for r in records
    ]


def scan_k8s(text: str, limits: YamlLimits = DEFAULT_LIMITS) -> list[Finding]:
    """kube-linter findings of one K8s YAML file; ConfigRejected when it is not safe, valid YAML."""
    return findings_of(evaluate(k8s_objects(load_yaml_documents(text, limits))))
