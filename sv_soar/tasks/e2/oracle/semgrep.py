"""semgrep with the project's local rule files (semgrep_rules/*.yaml): offline, metrics off, no
version check, HOME inside the scan's temporary folder, an argument list and a time limit."""

from __future__ import annotations

import functools
import json
import shutil
import sys
from collections.abc import Mapping
from importlib import resources
from pathlib import Path

import yaml

from sv_soar.tasks.e2.oracle.findings import Finding
from sv_soar.tasks.e2.oracle.process import ScannerError, run_scanner, scratch_dir, write_files

RULE_FILES = {"k8s": "kubernetes.yaml", "tf": "terraform.yaml"}
FILE_NAMES = {"k8s": "config.yaml", "tf": "main.tf"}
TIMEOUT_S = 60.0
# semgrep's own switches against the network: no metrics, no version check (its registry is never
# named: every --config is a local file)
OFFLINE_FLAGS = ("--metrics", "off", "--disable-version-check")
OFFLINE_ENV = {"SEMGREP_SEND_METRICS": "off", "SEMGREP_ENABLE_VERSION_CHECK": "0"}


@functools.cache
def semgrep_binary() -> str | None:
    """semgrep from the project's environment (the `e2` extra), else from PATH."""
    beside = Path(sys.executable).with_name("semgrep")
    return str(beside) if beside.is_file() else shutil.which("semgrep")


def rule_file(lang: str) -> Path:
    return Path(str(resources.files("sv_soar.tasks.e2.oracle").joinpath("semgrep_rules").joinpath(RULE_FILES[lang])))


@functools.cache
def rule_ids(lang: str) -> tuple[str, ...]:
    """Every rule id of the language's rule file, longest first (for suffix matching)."""
    rules = yaml.safe_load(rule_file(lang).read_text(encoding="utf-8"))["rules"]
    return tuple(sorted((r["id"] for r in rules), key=len, reverse=True))


def canonical_rule_id(check_id: str, lang: str) -> str:
    """semgrep prefixes a local rule's id with the rule file's folder; strip it back to the registry id."""
    for rule_id in rule_ids(lang):
        if check_id == rule_id or check_id.endswith("." + rule_id):
            return rule_id
    return check_id


def scan_files(
    files: Mapping[str, str], lang: str, *, timeout_s: float = TIMEOUT_S
) -> tuple[dict[str, list[Finding]], dict[str, str]]:
    """semgrep findings of several configs of one language in one semgrep run (semgrep's start-up,
    ~1.5 s, dominates a small file): ({file name: findings}, {file name: parse error}). File names
    are plain names."""
    binary = semgrep_binary()
    if binary is None:
        raise ScannerError("semgrep is not installed (pip install 'sv-soar[e2]')")
    results: dict[str, list[Finding]] = {name: [] for name in files}
    with scratch_dir() as tmp:
        work, home = tmp / "scan", tmp / "home"
        work.mkdir()
        home.mkdir()
        write_files(work, files)
        argv = [binary, "scan", "--config", str(rule_file(lang)), *OFFLINE_FLAGS, "--json", "--quiet",
                "--no-git-ignore", "--timeout", str(int(timeout_s)), "--", *sorted(files)]
        proc = run_scanner(argv, cwd=work, home=home, timeout_s=timeout_s, extra_env=OFFLINE_ENV)
        try:
            data = json.loads(proc.stdout)
        except json.JSONDecodeError:
            tail = (proc.stderr or proc.stdout).strip()[-300:]
            raise ScannerError(f"semgrep exited {proc.returncode} without JSON: {tail}") from None
    errors: dict[str, str] = {}
    for error in data.get("errors", []):
        name = Path(str(error.get("path", "") or (error.get("spans") or [{}])[0].get("file", ""))).name
        message = str(error.get("message", "")).strip().splitlines()
        if name in results and name not in errors:
            errors[name] = (message[0] if message else str(error.get("type", "error")))[:200]
    for result in data.get("results", []):
        name = Path(result.get("path", "")).name
        if name not in results:
            continue
        line = result.get("start", {}).get("line", "")
        extra = result.get("extra", {})
        results[name].append(Finding(
            "semgrep", canonical_rule_id(result.get("check_id", ""), lang), str(extra.get("severity", "")),
            str(extra.get("message", "")), f"{name}:{line}",
        ))
    return results, errors


def scan(text: str, lang: str, *, timeout_s: float = TIMEOUT_S) -> tuple[list[Finding], str | None]:
    """(semgrep findings, parse error or None) of one config ("k8s" YAML or "tf" HCL)."""
    name = FILE_NAMES[lang]
    results, errors = scan_files({name: text}, lang, timeout_s=timeout_s)
    return results[name], errors.get(name)
