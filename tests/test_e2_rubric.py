"""SV-Bench's E2 reward (docs/design.md §3) without its two defects, and patches applied and re-scanned.

Values worked out by hand: every id in these rows weighs 0.6 (SV-Bench maps kube-linter's
"medium" and semgrep's WARNING/INFO to med), so weighted F1 equals plain F1.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import verifiers as vf

from rubrics.e2 import (
    E2Parser,
    E2Scorer,
    count_tool_calls,
    e2_components,
    make_e2_rubric,
    parse_e2_output,
    weighted_prf,
)
from sv_soar.tasks.e2.oracle.patches import PatchRejected, apply_patch, check_diff_paths
from tests.e2_configs import POD, needs_gnu_patch

KL = ["latest-tag", "run-as-non-root", "no-read-only-root-fs", "unset-cpu-requirements", "unset-memory-requirements"]
POD_ROW = {
    "question": POD,
    "info": {"violations": [{"tool": "kube-linter", "rule_id": r, "severity": "medium", "msg": "", "loc": ""}
                            for r in KL]
             + [{"tool": "semgrep", "rule_id": "yaml.kubernetes.security.run-as-non-root.run-as-non-root",
                 "severity": "INFO", "msg": "", "loc": ""}],
             "patch": None},
    "meta": {"lang": "k8s"},
}
CLEAN_TF_ROW = {"question": 'variable "x" {\n  type = string\n}\n', "info": {"violations": [], "patch": None},
                "meta": {"lang": "tf"}}

TAG_FIX = """--- a/config.yaml
+++ b/config.yaml
@@ -6,3 +6,3 @@
   containers:
   - name: web
-    image: nginx
+    image: nginx:1.25.3
"""


def answer(ids, patch="", confidence=0.9, severity="med"):
    return json.dumps({"violations": [{"id": i, "severity": severity} for i in ids], "patch": patch,
                       "confidence": confidence})


def kl(*rules):
    return [f"kube-linter/{r}" for r in rules]


def test_perfect_detection_scores_f1_one_plus_format():
    parts = e2_components(answer(kl(*KL)), POD_ROW)
    assert parts["f1"] == 1.0 and parts["format"] == 1.0 and parts["reward"] == pytest.approx(1.05)


def test_repeated_ids_count_once():
    # SV-Bench: tp sums the predicted list, so latest-tag x5 alone gives precision 5/5 and recall 3/3 → F1 1.
    parts = e2_components(answer(kl("latest-tag") * 5), POD_ROW)
    assert parts["precision"] == 1.0 and parts["recall"] == pytest.approx(0.2)
    assert parts["f1"] == pytest.approx(1 / 3)
    assert e2_components(answer(kl(*KL) * 2), POD_ROW)["f1"] == 1.0


def test_clean_config_answered_clean_earns_full_credit():
    parts = e2_components(answer([]), CLEAN_TF_ROW)
    assert parts["f1"] == 1.0 and parts["reward"] == pytest.approx(1.05)
    invented = e2_components(answer(["semgrep/terraform.aws.security.aws-kms-no-rotation.aws-kms-no-rotation"]),
                             CLEAN_TF_ROW)
    assert invented["f1"] == 0.0 and invented["reward"] == pytest.approx(0.05)


def test_partial_and_wrong_answers():
    parts = e2_components(answer(kl("latest-tag", "run-as-non-root", "host-pid")), POD_ROW)
    # tp 2, fp 1, fn 3 (all weight 0.6): P 2/3, R 2/5, F1 = 2PR/(P+R) = 0.5
    assert parts["precision"] == pytest.approx(2 / 3) and parts["recall"] == pytest.approx(0.4)
    assert parts["f1"] == pytest.approx(0.5) and parts["reward"] == pytest.approx(0.55)


def test_primary_tool_contract_drops_other_tools_ids():
    # SV-Bench scores K8s against kube-linter only: a semgrep id is neither a hit nor a false positive
    with_semgrep = answer(kl(*KL) + ["semgrep/yaml.kubernetes.security.run-as-non-root.run-as-non-root", "opa/GEN_001"])
    assert e2_components(with_semgrep, POD_ROW)["f1"] == 1.0
    all_tools = E2Scorer(scored="all")
    assert all_tools.components(answer(kl(*KL)), POD_ROW)["recall"] == pytest.approx(5 / 6)


def test_severity_inflation_does_not_raise_recall():
    honest = e2_components(answer(kl("latest-tag")), POD_ROW)
    inflated = e2_components(answer(kl("latest-tag"), severity="high"), POD_ROW)
    assert inflated["recall"] == honest["recall"] == pytest.approx(0.2)
    assert weighted_prf({"a": "high", "b": "low"}, {"a": "med"}) == pytest.approx((0.6 / 0.9, 1.0, 0.8))


def test_invalid_answers_score_the_penalty():
    for text in ("no json here", '{"violations": "x", "confidence": 0.5}', '{"violations": []}',
                 '{"violations": [{"id": "kube-linter/latest-tag", "severity": "critical"}], "confidence": 1}',
                 '{"violations": [], "confidence": true}', '{"violations": [], "confidence": 0.5, "patch": 3}'):
        parts = e2_components(text, POD_ROW)
        assert parts["reward"] == -0.25 and parts["format"] == 0.0, text
    fenced = "Here:\n```json\n" + answer([]) + "\n```"
    assert parse_e2_output(fenced) is not None


@needs_gnu_patch
def test_patch_that_fixes_a_violation_earns_its_weight():
    parts = e2_components(answer(kl(*KL), patch=TAG_FIX), POD_ROW)
    assert parts["patch_applied"] == 1.0 and parts["patch_delta"] == pytest.approx(0.6)
    assert parts["reward"] == pytest.approx(1.65)


def test_json_patch_is_applied_to_the_yaml():
    ops = [{"op": "add", "path": "/spec/containers/0/securityContext", "value": {"readOnlyRootFilesystem": True}},
           {"op": "replace", "path": "/spec/containers/0/image", "value": "nginx:1.25.3"}]
    parts = e2_components(answer([], patch=json.dumps(ops)), POD_ROW)
    assert parts["patch_delta"] == pytest.approx(1.2)


def test_reward_is_clipped_at_two():
    fix_all = [{"op": "add", "path": "/spec/securityContext", "value": {"runAsNonRoot": True}},
               {"op": "add", "path": "/spec/containers/0/securityContext", "value": {"readOnlyRootFilesystem": True}},
               {"op": "add", "path": "/spec/containers/0/resources", "value": {"requests": {"cpu": "100m"}, "limits": {"memory": "64Mi"}}},
               {"op": "replace", "path": "/spec/containers/0/image", "value": "nginx:1.25.3"}]
    parts = e2_components(answer(kl(*KL), patch=json.dumps(fix_all)), POD_ROW)
    assert parts["patch_delta"] == pytest.approx(3.0) and parts["reward"] == 2.0


@pytest.mark.parametrize("diff", [
    TAG_FIX.replace("a/config.yaml", "../../etc/passwd"),
    TAG_FIX.replace("b/config.yaml", "/etc/passwd"),
    TAG_FIX.replace("b/config.yaml", "/dev/null"),
    "diff --git a/x b/x\nrename from x\nrename to ../../x\n",
])
def test_patch_outside_its_folder_is_rejected(diff, tmp_path):
    with pytest.raises(PatchRejected, match="outside its folder"):
        check_diff_paths(diff)
    parts = e2_components(answer(kl(*KL), patch=diff), POD_ROW)
    assert parts["patch_delta"] == 0.0 and parts["patch_applied"] == 0.0


def test_patch_writes_nothing_outside_its_folder(tmp_path):
    victim = tmp_path / "victim.yaml"
    victim.write_text(POD)
    diff = TAG_FIX.replace("a/config.yaml", str(victim)).replace("b/config.yaml", str(victim))
    with pytest.raises(PatchRejected):
        apply_patch(POD, diff, "k8s")
    assert victim.read_text() == POD


def test_deleting_the_config_is_not_a_fix():
    delete_all = "--- a/config.yaml\n+++ b/config.yaml\n@@ -1,8 +0,0 @@\n" + "".join(f"-{l}\n" for l in POD.splitlines())
    parts = e2_components(answer(kl(*KL), patch=delete_all), POD_ROW)
    assert parts["patch_delta"] == 0.0
    rename = [{"op": "replace", "path": "/kind", "value": "ConfigMap"}]
    with pytest.raises(PatchRejected, match="removes or renames"):
        apply_patch(POD, json.dumps(rename), "k8s")


def test_malformed_patch_earns_nothing():
    parts = e2_components(answer(kl(*KL), patch="@@ nonsense @@\n+image: x\n"), POD_ROW)
    assert parts["patch_delta"] == 0.0 and parts["f1"] == 1.0


def test_svbench_rows_answered_with_their_labels_score_full(svbench_mini):
    path = Path(svbench_mini) / "e2.jsonl"
    if not path.is_file():
        pytest.skip("no e2.jsonl")
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    for row in rows:
        ids = [f"{v['tool']}/{v['rule_id']}" for v in row["info"]["violations"]]
        assert e2_components(answer(ids), row)["reward"] == pytest.approx(1.05)


def test_verifiers_rubric_scores_a_rollout():
    rubric = make_e2_rubric()
    assert isinstance(rubric, vf.Rubric) and isinstance(rubric.parser, E2Parser)
    completion = [{"role": "assistant", "content": answer(kl(*KL))}]
    names = rubric._get_reward_func_names()
    assert names == ["reward_config_audit", "detection_f1", "patch_delta", "format_valid", "tool_calls"]
    assert rubric._get_reward_weights() == [1.0, 0.0, 0.0, 0.0, 0.0]
    reward = rubric.funcs[0](completion=completion, answer=json.dumps(POD_ROW))
    assert reward == pytest.approx(1.05)
    calls = [{"role": "assistant", "content": "", "tool_calls": [{"id": "1"}, {"id": "2"}]},
             {"role": "tool", "content": "[]"}, {"role": "assistant", "content": answer([])}]
    assert count_tool_calls(calls) == 2


@needs_gnu_patch
@pytest.mark.parametrize("stated_line", [6, 3])  # the hunk where it says, and 3 lines off (an offset)
def test_python_fallback_applies_diffs_as_gnu_patch_does(stated_line):
    from sv_soar.tasks.e2.oracle.patches import apply_unified_diff, apply_unified_diff_in_python

    diff = TAG_FIX.replace("@@ -6,3 +6,3 @@", f"@@ -{stated_line},3 +{stated_line},3 @@")
    assert apply_unified_diff_in_python(POD, diff) == apply_unified_diff(POD, diff)


def test_without_gnu_patch_the_python_fallback_scores_the_patch(monkeypatch):
    monkeypatch.setenv("PATH", "/nonexistent")  # no `patch` binary: the strict Python applier runs
    parts = e2_components(answer(kl(*KL), patch=TAG_FIX), POD_ROW)
    assert parts["patch_applied"] == 1.0 and parts["patch_delta"] == pytest.approx(0.6)
    wrong_context = TAG_FIX.replace("-    image: nginx", "-    image: apache")
    assert e2_components(answer(kl(*KL), patch=wrong_context), POD_ROW)["patch_delta"] == 0.0
    with pytest.raises(PatchRejected, match="outside its folder"):
        apply_patch(POD, TAG_FIX.replace("a/config.yaml", "../x"), "k8s")
