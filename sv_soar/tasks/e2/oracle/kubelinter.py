"""The kube-linter binary, when it is on PATH (SV-Bench labels with kube-linter 0.7.6). Without it
the oracle evaluates the same checks as Rego (rego.py)."""

from __future__ import annotations

import json
import shutil

from sv_soar.tasks.e2.oracle.findings import Finding
from sv_soar.tasks.e2.oracle.process import ScannerError, run_scanner, scratch_dir, write_files
from sv_soar.tasks.e2.oracle.rego import KUBE_LINTER_SEVERITY

TIMEOUT_S = 60.0


def kube_linter_binary() -> str | None:
    return shutil.which("kube-linter")


def parse_report(stdout: str) -> list[Finding]:
    """kube-linter's `--format json` report as findings."""
    try:
        data = json.loads(stdout)
    except json.JSONDecodeError:
        raise ScannerError(f"kube-linter printed no JSON: {stdout.strip()[:200]}") from None
    findings = []
    for report in data.get("Reports") or []:
        obj = (report.get("Object") or {}).get("K8sObject") or {}
        kind = (obj.get("GroupVersionKind") or {}).get("Kind", "")
        findings.append(Finding(
            "kube-linter", str(report.get("Check", "")), KUBE_LINTER_SEVERITY,
            str((report.get("Diagnostic") or {}).get("Message", "")), f"{kind}/{obj.get('Name', '')}",
        ))
    return findings


def scan(text: str, *, timeout_s: float = TIMEOUT_S) -> list[Finding]:
    """kube-linter's default checks on one K8s YAML file (exit 1 means "found something")."""
    binary = kube_linter_binary()
    if binary is None:
        raise ScannerError("kube-linter is not on PATH")
    with scratch_dir() as tmp:
        work, home = tmp / "scan", tmp / "home"
        work.mkdir()
        home.mkdir()
        write_files(work, {"config.yaml": text})
        proc = run_scanner([binary, "lint", "--format", "json", "config.yaml"], cwd=work, home=home,
                           timeout_s=timeout_s)
    if proc.returncode not in (0, 1):
        raise ScannerError(f"kube-linter exited {proc.returncode}: {proc.stderr.strip()[:200]}")
    return parse_report(proc.stdout)
