"""E2 = SV-Bench, differentially: our default E2 rubric against SV-Bench's own E2 code.

The reference is SV-Bench's sv-env-config-verification source from a checkout of
github.com/intertwine/security-verifiers (SV-Bench's E2 env is not on PyPI, and its code is not copied
into this repository): point SVBENCH_E2_SOURCE at its environments/sv-env-config-verification folder
(checked at commit 27f7c04); without it this test skips. It runs on top of
its shared code from PyPI (security-verifiers-utils==0.3.1, installed by `make setup`). Hypothesis
writes completions in the shapes models produce (raw, fenced, prose around, two objects; ids repeated,
of the other tool, unknown; severities "medium", "HIGH"; confidences "0.9", true, missing; tool
messages with findings as JSON or Python literals) against rows in SV-Bench's stored formats ("violations"
with tool/rule_id or "oracle" with ids; fixture_type tf/k8s/Terraform/absent): the three reward
functions must return the same value, SV-Bench's.

Left out because SV-Bench's code cannot run them here: a patch that applies (SV-Bench then runs the
kube-linter binary or the semgrep registry), and answers with no readable oracle (ours raise on purpose).
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rubrics import e2_svbench as ours
from tests.e2_configs import POD

pytest.importorskip("sv_shared.parsers", reason="make setup installs security-verifiers-utils==0.3.1")
REFERENCE = Path(os.environ.get("SVBENCH_E2_SOURCE", "/nonexistent"))
if not (REFERENCE / "sv_env_config_verification.py").is_file():
    pytest.skip("SVBENCH_E2_SOURCE is not an SV-Bench sv-env-config-verification folder", allow_module_level=True)
N_COMPLETIONS = 2_500
_TOP_LEVEL = ("adapters", "mapping", "patching", "reward", "schema", "sv_env_config_verification")


def _load_svbench():
    """Import SV-Bench's env module, then drop its generic top-level names (reward, schema, ...) from
    sys.modules so that nothing else in the test session can pick them up."""
    saved = {name: sys.modules.pop(name) for name in list(sys.modules) if name.split(".")[0] in _TOP_LEVEL}
    sys.path.insert(0, str(REFERENCE))
    try:
        import sv_env_config_verification as module
    finally:
        sys.path.remove(str(REFERENCE))
        for name in [n for n in sys.modules if n.split(".")[0] in _TOP_LEVEL]:
            del sys.modules[name]
        sys.modules.update(saved)
    return module


SVBENCH = _load_svbench()
FIXTURE = Path(tempfile.mkdtemp(prefix="svbench-e2-")) / "pod.yaml"  # SV-Bench reads fixture_path for patches

IDS = ["kube-linter/latest-tag", "kube-linter/run-as-non-root", "semgrep/terraform.aws.x", "opa/GEN_001",
       "custom-check", "kube-linter/privileged-container"]
TOOLS_RULES = [("kube-linter", "latest-tag"), ("kube-linter", "run-as-non-root"), ("semgrep", "terraform.aws.x"),
               ("opa", "GEN_001"), ("kube-linter", "privileged-container")]
SEVERITIES = st.sampled_from(["low", "med", "high", "medium", "HIGH", "critical", "", None, 1, "ERROR", "Warning"])
# a model's answer mostly uses the schema's severities, sometimes not
ANSWER_SEVERITIES = st.sampled_from(["low", "med", "high"] * 8 + ["medium", "HIGH", "", None, 1])


@st.composite
def answer_texts(draw) -> str:
    items = draw(st.lists(st.fixed_dictionaries({"id": st.sampled_from(IDS * 4) | st.text(max_size=4)},
                                                optional={"severity": ANSWER_SEVERITIES, "extra": st.integers()}), max_size=4))
    if draw(st.integers(0, 3)) == 0 and items:  # a repeated id
        items.append(dict(items[0]))
    obj = {"violations": items if draw(st.integers(0, 9)) else draw(st.sampled_from(["none", {}, None]))}
    if draw(st.integers(0, 9)):
        obj["confidence"] = draw(st.sampled_from([0.9, 0.5, 0, 1, 0.3] * 3 + ["0.9", " 0.5", True, None, "x", [0.2], 1.5, -1]))
    if draw(st.booleans()):
        obj["patch"] = draw(st.sampled_from(["", None, "not a diff", "[]", 3, "--- a\n+++ b\n@@ nonsense"]))
    text = json.dumps(obj)
    shape = draw(st.sampled_from(["raw"] * 6 + ["fenced"] * 2 + ["prose", "two", "empty", "truncated", "Fenced"]))
    if shape == "fenced":
        return f"```json\n{text}\n```"
    if shape == "Fenced":
        return f"Here:\n```JSON\n{text}\n```\nDone."
    if shape == "prose":
        return f"Findings: {text} (end)"
    if shape == "two":
        return text + "\n" + text
    if shape == "empty":
        return ""
    if shape == "truncated":
        return text[: draw(st.integers(0, len(text)))]
    return text


findings = st.lists(st.builds(lambda tr, sev: {"tool": tr[0], "rule_id": tr[1], "severity": sev, "message": "m"},
                              st.sampled_from(TOOLS_RULES), SEVERITIES), max_size=4)
tool_contents = (findings.map(json.dumps) | findings.map(repr) | findings.map(lambda f: json.dumps({"results": f}))
                 | st.sampled_from(["", "error: no such file", "{\"error\": \"x\"}"]))


@st.composite
def completions(draw):
    text = draw(answer_texts())
    form = draw(st.sampled_from(["string", "chat", "tools"]))
    if form == "string":
        return text
    if form == "chat":
        return [{"role": "assistant", "content": text}]
    turns = []
    for i in range(draw(st.integers(1, 2))):
        turns += [{"role": "assistant", "content": "", "tool_calls": [{"id": str(i)}]},
                  {"role": "tool", "tool_call_id": str(i), "content": draw(tool_contents)}]
    return [*turns, {"role": "assistant", "content": text}]


@st.composite
def row_answers(draw) -> str:
    if draw(st.booleans()):
        violations = [{"tool": t, "rule_id": r, "severity": draw(SEVERITIES), "msg": "", "loc": ""}
                      for t, r in draw(st.lists(st.sampled_from(TOOLS_RULES), max_size=4))]
        info = {"violations": violations, "patch": None}
    else:
        info = {"oracle": [{"id": i, "severity": draw(SEVERITIES)} for i in draw(st.lists(st.sampled_from(IDS), max_size=4))]}
    fixture_type = draw(st.sampled_from([None, "k8s", "tf", "Terraform", " TF "]))
    if fixture_type is not None:
        info["fixture_type"] = fixture_type
    info["fixture_path"] = str(FIXTURE)
    return json.dumps(info)


COUNTED: list[int] = []
NONZERO = {"reward_config_auditing": 0, "format_reward": 0, "tool_observation_reward": 0}


@pytest.fixture(scope="module", autouse=True)
def fixture_file():
    FIXTURE.write_text(POD)
    yield
    shutil.rmtree(FIXTURE.parent, ignore_errors=True)


@settings(max_examples=N_COMPLETIONS, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(completion=completions(), answers=st.lists(row_answers(), min_size=2, max_size=3))
def test_every_e2_reward_function_equals_svbench(completion, answers):
    COUNTED.append(len(answers))
    for answer in answers:
        for name in ("reward_config_auditing", "format_reward", "tool_observation_reward"):
            theirs = getattr(SVBENCH, name) if name != "format_reward" else SVBENCH.ConfigVerificationParser().get_format_reward_func()
            value = theirs(completion=completion, answer=answer)
            assert getattr(ours, name)(completion=completion, answer=answer) == value, (name, completion, answer)
            NONZERO[name] += value != 0


def test_the_differential_test_ran_on_enough_cases():
    # >= 5,000 (completion, row) pairs, and every function scored something other than 0 often
    assert len(COUNTED) >= N_COMPLETIONS and sum(COUNTED) >= 5_000, (len(COUNTED), sum(COUNTED))
    assert min(NONZERO.values()) >= 200, NONZERO
    print(f"E2 parity: {len(COUNTED)} completions, {sum(COUNTED)} pairs, non-zero values: {NONZERO}")


def test_rubric_shape_equals_svbench():
    theirs = SVBENCH._build_executable_rubric(SVBENCH.ConfigVerificationParser())
    mine = ours.make_svbench_e2_rubric()
    assert [f.__name__ for f in mine.funcs] == [f.__name__ for f in theirs.funcs]
    assert list(mine.weights) == list(theirs.weights) == [1.0, 0.05, 0.2]


def test_svbench_reads_an_unreadable_oracle_as_clean_and_we_refuse_it():
    valid = json.dumps({"violations": [{"id": "kube-linter/latest-tag", "severity": "med"}], "confidence": 0.9})
    assert SVBENCH.reward_config_auditing(completion=valid, answer="not json") == pytest.approx(0.05)
    with pytest.raises(ValueError, match="E2 answer is not JSON"):
        ours.reward_config_auditing(completion=valid, answer="not json")


PATCHES = {
    "pins-the-tag": "--- a/pod.yaml\n+++ b/pod.yaml\n@@ -5,4 +5,4 @@\n spec:\n   containers:\n   - name: web\n"
                    "-    image: nginx\n+    image: nginx:1.25.3\n",
    "reversed": "--- a/pod.yaml\n+++ b/pod.yaml\n@@ -5,4 +5,4 @@\n spec:\n   containers:\n   - name: web\n"
                "-    image: nginx:1.25.3\n+    image: nginx\n",
    "offset-hunk": "--- a/pod.yaml\n+++ b/pod.yaml\n@@ -1,3 +1,3 @@\n   containers:\n   - name: web\n"
                   "-    image: nginx\n+    image: nginx:2\n",
    "no-headers": "@@ -8,1 +8,1 @@\n-    image: nginx\n+    image: nginx:3\n",
    "garbage": "make it secure",
    "json-patch": '[{"op": "replace", "path": "/spec", "value": {}}]',
}


@pytest.mark.parametrize("name", PATCHES)
def test_patch_application_equals_svbench(name):
    applied, text = SVBENCH.try_apply_patch(str(FIXTURE), PATCHES[name])
    assert ours.apply_unified_diff(POD, PATCHES[name]) == (text if applied else None)
