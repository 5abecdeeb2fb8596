"""The E2 oracle: agreement with SV-Bench's labels, and the security limits on untrusted configs.

Real scanners throughout (regopy, semgrep, GNU patch). The one fake is the kube-linter binary, which
cannot be installed here: a script that prints a recorded kube-linter JSON report, to test the
binary path's argument list and report parsing (test_kube_linter_binary_when_on_path).
"""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from sv_soar.tasks.e2.oracle import (
    ConfigRejected,
    OracleCache,
    ScannerError,
    detect_lang,
    kube_linter_engine,
    scan_config,
)
from sv_soar.tasks.e2.oracle import process, rego, semgrep
from sv_soar.tasks.e2.oracle.safe_yaml import YamlLimits, load_yaml_documents
from tests.e2_configs import BAD_TF, POD, SAFE_POD, billion_laughs


# --- agreement with SV-Bench's labels --------------------------------------------------------------


def _rows(folder: Path) -> list[dict]:
    path = folder / "e2.jsonl"
    if not path.is_file():
        pytest.skip(f"no e2.jsonl in {folder}")
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _micro_f1(pairs) -> float:
    tp = fp = fn = 0
    for gold, pred in pairs:
        tp, fp, fn = tp + len(gold & pred), fp + len(pred - gold), fn + len(gold - pred)
    return 2 * tp / (2 * tp + fp + fn)


def test_rego_agrees_with_kube_linter_labels(svbench_mini):
    rows = [r for r in _rows(svbench_mini) if r["meta"]["lang"] == "k8s"]
    pairs = []
    for row in rows:
        gold = {v["rule_id"] for v in row["info"]["violations"] if v["tool"] == "kube-linter"}
        try:
            pred = {f.rule_id for f in rego.scan_k8s(row["question"])}
        except ConfigRejected:  # Helm templates: kube-linter cannot parse them either
            pred = set()
        pairs.append((gold, pred))
    assert len(rows) == 80
    assert _micro_f1(pairs) >= 0.95


@pytest.mark.slow
def test_semgrep_rules_agree_with_semgrep_labels(svbench_mini):
    rows = _rows(svbench_mini)
    pairs = []
    for lang, ext in (("k8s", "yaml"), ("tf", "tf")):
        files = {f"row{i:03d}.{ext}": r["question"] for i, r in enumerate(rows) if r["meta"]["lang"] == lang}
        results, _ = semgrep.scan_files(files, lang)
        for name, found in results.items():
            row = rows[int(name[3:6])]
            gold = {v["rule_id"] for v in row["info"]["violations"] if v["tool"] == "semgrep"}
            pairs.append((gold, {f.rule_id for f in found}))
    assert _micro_f1(pairs) >= 0.95
    # the 20 Terraform rows carry no finding, and the local rules stay silent on them
    tf = [pred for gold, pred in pairs[-20:]]
    assert tf == [set()] * 20


def test_scan_config_reports_both_tools_and_the_engine():
    report = scan_config(POD)
    assert report.lang == "k8s" and report.rejected is None
    ids = report.ids()
    assert {"kube-linter/latest-tag", "kube-linter/run-as-non-root", "kube-linter/no-read-only-root-fs",
            "kube-linter/unset-cpu-requirements", "kube-linter/unset-memory-requirements"} <= set(ids)
    assert "semgrep/yaml.kubernetes.security.writable-filesystem-container.writable-filesystem-container" in ids
    assert set(ids.values()) == {"med"}
    assert report.engines["kube-linter"] in ("rego", "binary") and report.engines["semgrep"] == "semgrep"
    assert scan_config(SAFE_POD).ids() == {}


def test_terraform_rules_fire_on_literal_settings():
    report = scan_config(BAD_TF)
    assert report.lang == "tf"
    assert set(report.ids()) == {
        "semgrep/terraform.aws.security.aws-provider-static-credentials.aws-provider-static-credentials",
        "semgrep/terraform.aws.security.aws-ebs-volume-unencrypted.aws-ebs-volume-unencrypted",
    }
    assert scan_config('resource "aws_instance" "x" {\n  ami = \n}\n', "tf").rejected.startswith("not HCL")


def test_detect_lang():
    assert detect_lang(BAD_TF) == "tf" and detect_lang(POD) == "k8s"


def test_kube_linter_checks_by_construction():
    """One small config a rule, the rule's own id expected (kube-linter's documented semantics)."""
    def ids(text):
        return {f.rule_id for f in rego.scan_k8s(text)}

    deploy = """apiVersion: apps/v1
kind: Deployment
metadata: {name: d}
spec:
  replicas: 3
  selector: {matchLabels: {app: x}}
  template:
    metadata: {labels: {app: y}}
    spec:
      hostNetwork: true
      hostPID: true
      hostIPC: true
      serviceAccount: ghost
      containers:
      - name: c
        image: nginx:1.25
        securityContext: {privileged: true, capabilities: {add: [NET_RAW]}}
        env: [{name: DB_SECRET, value: hunter2}]
        volumeMounts: [{name: s, mountPath: /s}, {name: e, mountPath: /e}]
      volumes:
      - {name: s, hostPath: {path: /var/run/docker.sock}}
      - {name: e, hostPath: {path: /etc/}}
---
apiVersion: v1
kind: Service
metadata: {name: svc}
spec: {selector: {app: nobody}}
---
apiVersion: batch/v1
kind: Job
metadata: {name: j}
spec: {template: {spec: {containers: [{name: c, image: "busybox:1.36"}]}}}
---
apiVersion: extensions/v1beta1
kind: Ingress
metadata: {name: i}
"""
    assert {"no-anti-affinity", "mismatching-selector", "host-network", "host-pid", "host-ipc",
            "deprecated-service-account-field", "non-existent-service-account", "privileged-container",
            "privilege-escalation-container", "drop-net-raw-capability", "env-var-secret", "docker-sock",
            "sensitive-host-mounts", "dangling-service", "job-ttl-seconds-after-finished",
            "no-extensions-v1beta"} <= ids(deploy)
    assert "latest-tag" not in ids(deploy)
    assert "latest-tag" in ids(POD) and "latest-tag" in ids(POD.replace("nginx", "nginx:latest"))


def test_oracle_cache_returns_the_same_report():
    cache = OracleCache(size=2)
    first = cache.scan(POD, "k8s", ("kube-linter",))
    assert cache.scan(POD, "k8s", ("kube-linter",)) is first
    assert set(first.engines) == {"kube-linter"}


def test_kube_linter_binary_when_on_path(tmp_path, monkeypatch):
    # FAKE: kube-linter cannot be installed on these machines; this script prints the JSON shape of
    # kube-linter 0.7.6's `lint --format json` and records its arguments.
    report = {"Reports": [{"Check": "latest-tag", "Diagnostic": {"Message": "use a tag"},
                           "Object": {"K8sObject": {"Name": "web", "GroupVersionKind": {"Kind": "Pod"}}}}]}
    script = tmp_path / "kube-linter"
    script.write_text(f"#!/bin/sh\necho \"$@\" > {tmp_path}/argv\ncat <<'EOF'\n{json.dumps(report)}\nEOF\nexit 1\n")
    script.chmod(script.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("PATH", f"{tmp_path}{os.pathsep}{os.environ['PATH']}")
    assert kube_linter_engine("auto") == "binary"
    result = scan_config(POD, tools=("kube-linter",))
    assert result.engines == {"kube-linter": "binary"}
    assert result.ids() == {"kube-linter/latest-tag": "med"}
    assert (tmp_path / "argv").read_text().split() == ["lint", "--format", "json", "config.yaml"]
    assert scan_config(POD, tools=("kube-linter",), kube_linter="rego").engines == {"kube-linter": "rego"}


# --- security: YAML limits --------------------------------------------------------------------------


def test_billion_laughs_is_rejected_in_well_under_a_second():
    text = billion_laughs(9)  # 9^10 ≈ 3.5e9 strings once expanded
    start = time.perf_counter()
    with pytest.raises(ConfigRejected, match="alias expansion"):
        load_yaml_documents(text)
    assert time.perf_counter() - start < 0.2
    start = time.perf_counter()
    report = scan_config(text, "k8s")
    assert "alias expansion" in report.rejected and report.findings == ()
    assert time.perf_counter() - start < 0.2  # rejected before any scanner starts


def test_recursive_alias_deep_nesting_and_size_are_rejected():
    with pytest.raises(ConfigRejected, match="recursive alias"):
        load_yaml_documents("a: &a [*a]\n")
    with pytest.raises(ConfigRejected, match="nests deeper"):
        load_yaml_documents("a:\n" + "".join("  " * i + "- \n" for i in range(1, 80)) + "  " * 80 + "- x\n",
                            YamlLimits(max_depth=32))
    with pytest.raises(ConfigRejected):
        load_yaml_documents("[" * 100_000)
    with pytest.raises(ConfigRejected, match="byte limit"):
        load_yaml_documents("a: " + "x" * 300_000)
    with pytest.raises(ConfigRejected, match="documents"):
        load_yaml_documents("---\na: 1\n" * 100)


def test_yaml_never_builds_python_objects():
    with pytest.raises(ConfigRejected):
        load_yaml_documents("!!python/object/apply:os.system ['echo pwned']")


# --- security: subprocesses -------------------------------------------------------------------------


def test_scanners_run_as_argument_lists_with_time_limits_offline(monkeypatch):
    calls = []
    real_run = subprocess.run

    def spy(*args, **kwargs):  # records, then runs the real semgrep
        calls.append((args, kwargs))
        return real_run(*args, **kwargs)

    monkeypatch.setattr(process.subprocess, "run", spy)
    monkeypatch.setenv("HF_TOKEN", "hf_secret_value")
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.invalid:3128")
    found, error = semgrep.scan(POD, "k8s")
    assert found and error is None
    (argv,), kwargs = calls[0]
    assert isinstance(argv, list) and kwargs["shell"] is False and kwargs["timeout"] > 0
    assert argv[argv.index("--metrics") + 1] == "off" and "--disable-version-check" in argv
    assert all(not a.startswith(("p/", "r/", "http")) for a in argv[argv.index("--config") + 1:][:1])
    env = kwargs["env"]
    assert env["SEMGREP_SEND_METRICS"] == "off" and env["SEMGREP_ENABLE_VERSION_CHECK"] == "0"
    assert "HF_TOKEN" not in env and "HTTPS_PROXY" not in env
    assert Path(env["HOME"]).parent == Path(kwargs["cwd"]).parent  # HOME is inside the scan's temp folder


def test_run_scanner_refuses_a_shell_string_and_enforces_the_time_limit(tmp_path):
    with pytest.raises(TypeError):
        process.run_scanner("echo hi; rm -rf /", cwd=tmp_path, home=tmp_path)
    start = time.perf_counter()
    with pytest.raises(ScannerError, match="timed out"):
        process.run_scanner(["sleep", "10"], cwd=tmp_path, home=tmp_path, timeout_s=0.3)
    assert time.perf_counter() - start < 3


def test_temporary_folders_are_removed_even_on_failure(monkeypatch):
    made = []
    real_mkdtemp = tempfile.mkdtemp

    def spy(*args, **kwargs):
        made.append(real_mkdtemp(*args, **kwargs))
        return made[-1]

    monkeypatch.setattr(process.tempfile, "mkdtemp", spy)
    semgrep.scan(BAD_TF, "tf")
    monkeypatch.setattr(semgrep, "TIMEOUT_S", 0.01)
    with pytest.raises(ScannerError):
        semgrep.scan_files({"main.tf": BAD_TF}, "tf", timeout_s=0.01)
    assert len(made) == 2 and not any(os.path.exists(p) for p in made)


def test_scanner_input_names_cannot_carry_paths(tmp_path):
    for bad in ("../x.yaml", "/etc/passwd", "a/b.yaml", ".."):
        with pytest.raises(ValueError):
            process.write_files(tmp_path, {bad: "x"})


@pytest.mark.slow
def test_scan_many_equals_one_scan_each():
    items = [(POD, "k8s"), (SAFE_POD, "k8s"), (BAD_TF, "tf"), (billion_laughs(9), "k8s")]
    start = time.perf_counter()
    batched = OracleCache().scan_many(items)
    assert time.perf_counter() - start < 30  # the billion laughs never reaches semgrep (it takes minutes there)
    for (text, lang), report in zip(items, batched):
        alone = scan_config(text, lang)
        assert (report.ids(), report.rejected) == (alone.ids(), alone.rejected)


@pytest.mark.slow
def test_torch_can_load_after_the_rego_engine_ran():
    """regopy loaded before torch aborted the process (double free) on the first torch import after a
    Rego evaluation, as happens when the teacher's configs are relabelled before students train."""
    code = ("from sv_soar.tasks.e2.oracle import scan_config\nfrom tests.e2_configs import POD\n"
            "assert scan_config(POD).ids()\nimport safetensors.torch, torch\nprint(torch.zeros(2).sum().item())")
    done = subprocess.run([sys.executable, "-c", code], cwd=Path(__file__).resolve().parents[1], capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0 and done.stdout.strip() == "0.0", done.stderr[-2000:]


def test_a_missing_service_account_is_named_in_the_message():
    pod = POD.replace("spec:\n", "spec:\n  serviceAccountName: ghost\n", 1)
    (finding,) = [f for f in scan_config(pod, "k8s").findings if f.rule_id == "non-existent-service-account"]
    assert finding.msg == 'serviceAccount "ghost" not found'  # regopy's sprintf has no %q: it printed "%q"
