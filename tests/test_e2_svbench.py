"""E2 = SV-Bench by default: one test per SV-Bench behaviour, each with SV-Bench's own value.

Values are SV-Bench's, worked from its source (github.com/intertwine/security-verifiers,
environments/sv-env-config-verification: sv_env_config_verification.py reward_config_auditing /
tool_observation_reward / format_reward, reward.py final_reward, schema.py AuditOutputModel) on rows in
SV-Bench's stored format: `answer` = the JSON of the row's `info`, no "question" key. Totals use its
weights 1.0 / 0.05 / 0.2, through a real vf.Rubric.
"""

from __future__ import annotations

import asyncio
import json

import pytest
import verifiers as vf

import sv_soar_student
from rubrics import task_rubric
from rubrics.e2_svbench import (
    format_reward,
    make_svbench_e2_rubric,
    reward_config_auditing,
    tool_observation_reward,
)
from sv_soar.tasks import get_task
from tests.e2_configs import BAD_TF, POD

# SV-Bench's hub/build info: oracle findings as {tool, rule_id, severity}; "medium" is its label text
K8S_INFO = {"violations": [
    {"tool": "kube-linter", "rule_id": "latest-tag", "severity": "medium", "msg": "", "loc": ""},
    {"tool": "kube-linter", "rule_id": "run-as-non-root", "severity": "medium", "msg": "", "loc": ""},
    {"tool": "semgrep", "rule_id": "yaml.kubernetes.security.x", "severity": "high", "msg": "", "loc": ""},
], "patch": None}
K8S = json.dumps(K8S_INFO)
CLEAN = json.dumps({"violations": [], "patch": None})
BOTH = [{"id": "kube-linter/latest-tag", "severity": "med"}, {"id": "kube-linter/run-as-non-root", "severity": "med"}]


def answer(violations=BOTH, confidence=0.9, patch=""):
    return json.dumps({"violations": violations, "patch": patch, "confidence": confidence})


def scores(text, row_answer=K8S, prompt=None, completion=None):
    """SV-Bench's three functions and the weighted total, through verifiers' own Rubric."""
    completion = completion or [{"role": "assistant", "content": text}]
    values = (
        reward_config_auditing(completion=completion, answer=row_answer, prompt=prompt),
        format_reward(completion=completion, answer=row_answer),
        tool_observation_reward(completion=completion, answer=row_answer),
    )
    return values, values[0] * 1.0 + values[1] * 0.05 + values[2] * 0.2


# case id, completion text, row answer, SV-Bench's (reward_config_auditing, format_reward, tool_observation_reward)
CASES = [
    ("correct-answer", answer(), K8S, (1.05, 1.0, 0.0)),
    ("fenced-json", "```json\n" + answer() + "\n```", K8S, (1.05, 1.0, 0.0)),
    ("prose-around-json", "Findings: " + answer() + " Done.", K8S, (0.0, 0.0, 0.0)),
    ("two-json-objects", answer() + "\n" + answer(), K8S, (0.0, 0.0, 0.0)),
    ("severity-medium", answer([{"id": "kube-linter/latest-tag", "severity": "medium"}]), K8S, (0.0, 0.0, 0.0)),
    ("missing-confidence", json.dumps({"violations": BOTH, "patch": ""}), K8S, (0.0, 0.0, 0.0)),
    ("empty-answer", "", K8S, (0.0, 0.0, 0.0)),
    ("confidence-string", answer(confidence="0.9"), K8S, (1.05, 1.0, 0.0)),  # pydantic's lax float
    ("empty-list-on-violations", answer([]), K8S, (0.0, 1.0, 0.0)),
    # tp summed over the predicted list: 2 x 0.6 of 1.8 -> recall 2/3, F1 0.8
    ("repeated-correct-id-counts-twice", answer([BOTH[0], BOTH[0]]), K8S, (0.85, 1.0, 0.0)),
    ("one-of-two", answer([BOTH[0]]), K8S, (2 / 3 + 0.05, 1.0, 0.0)),
    ("wrong-id", answer([{"id": "kube-linter/privileged-container", "severity": "high"}]), K8S, (0.05, 1.0, 0.0)),
    # K8s is scored on kube-linter ids only: a correct semgrep id is dropped from both sides
    ("other-tool-id-ignored", answer([*BOTH, {"id": "semgrep/yaml.kubernetes.security.x", "severity": "high"}]),
     K8S, (1.05, 1.0, 0.0)),
    ("clean-config-empty-answer", answer([]), CLEAN, (0.0, 1.0, 0.0)),
    ("clean-config-any-id", answer([BOTH[0]]), CLEAN, (0.05, 1.0, 0.0)),
    ("not-a-dict", "[1, 2]", K8S, (0.0, 0.0, 0.0)),
    ("patch-null-accepted", json.dumps({"violations": BOTH, "patch": None, "confidence": 1}), K8S, (1.05, 1.0, 0.0)),
]


@pytest.mark.parametrize("case_id, text, row_answer, expected", CASES, ids=[c[0] for c in CASES])
def test_svbench_value(case_id, text, row_answer, expected):
    values, total = scores(text, row_answer)
    assert values == pytest.approx(expected)
    rubric = make_svbench_e2_rubric()
    assert total == pytest.approx(sum(v * w for v, w in zip(expected, rubric.weights)))


def test_clean_config_never_scores_above_005():
    # SV-Bench's F1 is 0 on a config without violations, whatever the answer names
    for violations in ([], [BOTH[0]], BOTH, [{"id": "x/y", "severity": "high"}]):
        assert reward_config_auditing(completion=answer(violations), answer=CLEAN) <= 0.05


def test_metric_names_and_weights_are_svbench():
    _, rubric = task_rubric("e2")
    assert [f.__name__ for f in rubric.funcs] == ["reward_config_auditing", "format_reward", "tool_observation_reward"]
    assert list(rubric.weights) == [1.0, 0.05, 0.2]
    _, corrected = task_rubric("e2", scoring="corrected")
    assert corrected.funcs[0].__name__ == "reward_config_audit"
    with pytest.raises(ValueError, match="scoring must be one of"):
        task_rubric("e2", scoring="fixed")


def test_terraform_row_scored_on_semgrep_with_fixture_type():
    info = {"violations": [{"tool": "semgrep", "rule_id": "terraform.aws.x", "severity": "ERROR"}],
            "patch": None, "fixture_path": "/nowhere/main.tf", "fixture_type": "tf"}
    right = answer([{"id": "semgrep/terraform.aws.x", "severity": "high"}])
    wrong_tool = answer([{"id": "kube-linter/latest-tag", "severity": "med"}])
    assert reward_config_auditing(completion=right, answer=json.dumps(info)) == pytest.approx(1.05)
    assert reward_config_auditing(completion=wrong_tool, answer=json.dumps(info)) == pytest.approx(0.05)


def test_oracle_format_answers_are_read():
    # SV-Bench's builtin fixtures store {"oracle": [{"id", "severity"}], "fixture_path", "fixture_type"}
    row_answer = json.dumps({"oracle": [{"id": "kube-linter/latest-tag", "severity": "medium"}],
                             "fixture_path": "/nowhere/bad_pod.yaml", "fixture_type": "k8s"})
    assert reward_config_auditing(completion=answer([BOTH[0]]), answer=row_answer) == pytest.approx(1.05)


@pytest.mark.parametrize("bad", ["not json", json.dumps("Malicious"), json.dumps({"fixture_type": "k8s"}), "",
                                 # an oracle that is not a list: SV-Bench raises TypeError on "oracle", reads
                                 # "violations" as clean (both found by fuzzing: e2-svbench, tests/fuzz_targets/)
                                 json.dumps({"oracle": True}), json.dumps({"violations": "kube-linter/latest-tag"})])
def test_unreadable_oracle_is_an_error_never_a_clean_config(bad):
    # SV-Bench reads these as a clean config (any valid answer then scores 0.05); here they are an error
    with pytest.raises(ValueError, match="E2 answer"):
        reward_config_auditing(completion=answer(), answer=bad)


def test_unreadable_oracle_in_a_vf_rubric_scores_zero_not_clean():
    # verifiers logs the ValueError and scores 0; SV-Bench would score this valid [] answer as clean
    rubric = make_svbench_e2_rubric()
    state = vf.State(prompt=[{"role": "user", "content": "x"}], completion=[{"role": "assistant", "content": answer([])}],
                     answer="{}", task="default", info={}, timing={"scoring_ms": 0.0, "total_ms": 0.0})
    state["input"] = {"prompt": state["prompt"], "answer": "{}", "task": "default", "example_id": 0}
    asyncio.run(rubric.score_rollout(state))
    assert state["metrics"]["reward_config_auditing"] == 0.0


def test_patch_is_applied_and_rescanned():
    # the patch pins the image tag: latest-tag is gone after re-scanning, run-as-non-root stays
    patch = "--- a/pod.yaml\n+++ b/pod.yaml\n@@ -5,4 +5,4 @@\n spec:\n   containers:\n   - name: web\n-    image: nginx\n+    image: nginx:1.25.3\n"
    row_answer = json.dumps({**K8S_INFO, "config": POD})
    values, _ = scores(answer(patch=patch), row_answer)
    assert values[0] == pytest.approx(1.0 + 0.6 + 0.05)  # F1 + weight of latest-tag + bonus
    # the config may also come from SV-Bench's prompt (File path line, then the config block)
    prompt = [{"role": "user", "content": f"File path: /nowhere/pod.yaml\n\nConfiguration:\n```text\n{POD}\n```"}]
    assert reward_config_auditing(completion=answer(patch=patch), answer=K8S, prompt=prompt) == pytest.approx(1.65)
    assert reward_config_auditing(completion=answer(patch="not a diff"), answer=row_answer) == pytest.approx(1.05)


def test_tool_observation_reward_pays_for_surfaced_evidence():
    tool_reply = json.dumps([{"tool": "kube-linter", "rule_id": "latest-tag", "severity": "med", "message": "m"}])
    completion = [
        {"role": "assistant", "content": "", "tool_calls": []},
        {"role": "tool", "content": tool_reply, "tool_call_id": "1"},
        {"role": "assistant", "content": answer()},
    ]
    values, total = scores(None, K8S, completion=completion)
    # observed {latest-tag} vs oracle {latest-tag, run-as-non-root}: P 1, R 0.5, F1 2/3, no bonus
    assert values == pytest.approx((1.05, 1.0, 2 / 3))
    assert total == pytest.approx(1.05 + 0.05 + 0.2 * 2 / 3)
    assert tool_observation_reward(completion=completion, answer=CLEAN) == 0.0  # nothing to find


def test_svbench_stored_rows_load_and_score(tmp_path):
    # SV-Bench's env format: the question carries the File path line, the answer is its info JSON
    tf_info = {"violations": [{"tool": "semgrep", "rule_id": "terraform.aws.security.aws-ebs-volume-unencrypted."
                                                         "aws-ebs-volume-unencrypted", "severity": "ERROR"}],
               "patch": None, "fixture_path": "/svbench/data/main.tf", "fixture_type": "tf"}
    rows = [
        {"question": f"File path: /svbench/data/pod.yaml\n\nConfiguration:\n```text\n{POD}\n```", "answer": K8S},
        {"question": f"File path: /svbench/data/main.tf\n\nConfiguration:\n```text\n{BAD_TF}\n```",
         "answer": json.dumps(tf_info)},
        {"question": POD, "info": K8S_INFO, "meta": {"lang": "k8s"}},  # hub format
    ]
    task = get_task("e2")
    loaded = [task.validate_row(r) for r in rows]
    assert loaded[0]["question"] == POD and loaded[1]["question"] == BAD_TF and loaded[2]["question"] == POD
    assert [r["meta"]["lang"] for r in loaded] == ["k8s", "tf", "k8s"]
    path = tmp_path / "svbench.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    env = sv_soar_student.load_environment(task="e2", source="jsonl", path=str(path))
    for record in env.get_dataset().to_list():
        stored = json.loads(record["answer"])
        assert "question" not in stored and stored["fixture_type"] in ("k8s", "tf")
        assert record["question"].startswith("File path: configs/")


def test_soar_grounding_keeps_the_corrected_scoring():
    # the same correct "no violations" on a clean config: SV-Bench's env pays 0.05, SOAR's grounding full credit
    row = {"question": POD, "info": {"violations": [], "patch": None}, "meta": {"lang": "k8s"}}
    task = get_task("e2")
    assert task.score(answer([]), row)["reward"] == pytest.approx(1.05) and task.is_success(answer([]), row)
    assert reward_config_auditing(completion=answer([]), answer=task.answer(row)) == 0.0
    # and a repeated correct id counts once there
    two = {**row, "info": {"violations": K8S_INFO["violations"], "patch": None}}
    assert task.score(answer([BOTH[0], BOTH[0]]), two)["f1"] == pytest.approx(2 / 3)
    assert reward_config_auditing(completion=answer([BOTH[0], BOTH[0]]), answer=task.answer(two)) == pytest.approx(0.85)
