"""sv-soar-student with task="e2": the tool-use environment (SV-Bench's tool names, backed by the
oracle) and the single-turn variant, run through verifiers' own rollout and scoring code.

The model is scripted (ScriptedToolClient, test_student_env's ScriptedClient plus tool calls): tests
cannot run a model server. Everything else, the
tool calls included, is the installed verifiers' code and the real oracle.
"""

from __future__ import annotations

import asyncio
import itertools
import json

import pytest
import verifiers as vf

import sv_soar_student
from rubrics.e2 import E2Parser
from sv_soar.tasks import get_task
from sv_soar_student.e2_tools import E2ToolEnv, run_kubelinter, run_opa, run_semgrep
from tests.e2_configs import BAD_TF, POD
from tests.scripted_client import ScriptedClient


class ScriptedToolClient(ScriptedClient):
    """ScriptedClient whose canned replies may also be tool calls: {"tool_calls": [(name, args)]}."""

    def __init__(self, replies):
        super().__init__(replies)
        self._ids = itertools.count()

    async def from_native_response(self, response):
        if not isinstance(response, dict):
            return await super().from_native_response(response)
        calls = [vf.ToolCall(id=f"call-{next(self._ids)}", name=name, arguments=json.dumps(args))
                 for name, args in response["tool_calls"]]
        message = vf.ResponseMessage(content="", tool_calls=calls, finish_reason="tool_calls", is_truncated=False)
        return vf.Response(id="scripted", created=0, model="scripted", message=message)


@pytest.fixture(scope="module")
def e2_env(svbench_mini):
    return sv_soar_student.load_environment(task="e2", source="jsonl", path=str(svbench_mini), n=12, seed=1,
                                            scoring="corrected")


@pytest.fixture(scope="module")
def svbench_env(svbench_mini):
    return sv_soar_student.load_environment(task="e2", source="jsonl", path=str(svbench_mini), n=12, seed=1)


def test_tools_scan_the_task_config_or_a_given_one():
    found = json.loads(run_kubelinter(task_config=POD, lang="k8s"))
    assert {f["id"] for f in found} >= {"kube-linter/latest-tag", "kube-linter/run-as-non-root"}
    assert json.loads(run_opa(task_config=POD)) == found  # the Rego policies under kube-linter's ids
    fixed = POD.replace("image: nginx", "image: nginx:1.25.3")
    assert "kube-linter/latest-tag" not in {f["id"] for f in json.loads(run_kubelinter(config=fixed, task_config=POD))}
    tf = json.loads(run_semgrep(task_config=BAD_TF, lang="tf"))
    assert len(tf) == 2 and all(f["tool"] == "semgrep" for f in tf)
    assert json.loads(run_kubelinter(task_config=BAD_TF, lang="tf")) == []
    assert "error" in json.loads(run_kubelinter(config="a: &a [*a]", task_config=POD))


def test_e2_tool_env_shape(e2_env):
    assert isinstance(e2_env, E2ToolEnv) and isinstance(e2_env.parser, E2Parser)
    assert [t.name for t in e2_env.tool_defs] == ["run_kubelinter", "run_semgrep", "run_opa"]
    for tool_def in e2_env.tool_defs:  # the injected arguments stay hidden from the model
        assert set(tool_def.parameters["properties"]) == {"paths", "config"}  # SV-Bench's paths, and a text
    row = e2_env.get_dataset()[0]
    assert row["question"].startswith("File path: configs/")  # SV-Bench's prompt convention
    config = get_task("e2").validate_row({"question": row["question"], "answer": row["answer"]})["question"]
    assert config in row["question"] and "File path:" not in config
    assert "run_kubelinter" in row["prompt"][0]["content"]


def test_single_turn_variant(svbench_mini):
    env = sv_soar_student.load_environment(task="e2", source="jsonl", path=str(svbench_mini), n=4, tools=False)
    assert isinstance(env, vf.SingleTurnEnv) and not isinstance(env, vf.ToolEnv)


def test_tool_rollout_scored_with_tool_calls_counted(e2_env):
    example = next(r for r in e2_env.get_dataset().to_list() if '"kube-linter"' in r["answer"])
    row = json.loads(example["answer"])
    ids = sorted({f"kube-linter/{v['rule_id']}" for v in row["violations"] if v["tool"] == "kube-linter"})
    final = json.dumps({"violations": [{"id": i, "severity": "med"} for i in ids], "patch": "", "confidence": 0.9})
    client = ScriptedToolClient([{"tool_calls": [("run_kubelinter", {}), ("run_opa", {})]}, final])
    output = asyncio.run(e2_env.run_rollout(example, client, "scripted", {}))
    assert output["reward"] == pytest.approx(1.05)
    metrics = output["metrics"]
    assert metrics["tool_calls"] == 2 and metrics["total_tool_calls"] == 2
    assert metrics["run_kubelinter_calls"] == 1 and metrics["run_opa_calls"] == 1
    tool_replies = [m for m in output["completion"] if getattr(m, "role", None) == "tool"]
    assert {f["id"] for f in json.loads(tool_replies[0].content)} == set(ids)


def _kube_linter_example(env):
    example = next(r for r in env.get_dataset().to_list() if '"kube-linter"' in r["answer"])
    row = json.loads(example["answer"])
    ids = sorted({f"kube-linter/{v['rule_id']}" for v in row["violations"] if v["tool"] == "kube-linter"})
    path = example["question"].split("\n", 1)[0].removeprefix("File path: ")
    return example, ids, path


def test_svbench_tool_loop_with_paths_scores_under_svbench_names(svbench_env):
    # a model trained on SV-Bench's env calls run_kubelinter(paths=[the File path]) and answers
    example, ids, path = _kube_linter_example(svbench_env)
    final = json.dumps({"violations": [{"id": i, "severity": "med"} for i in ids], "patch": "", "confidence": 0.9})
    client = ScriptedToolClient([{"tool_calls": [("run_kubelinter", {"paths": [path]})]}, final])
    output = asyncio.run(svbench_env.run_rollout(example, client, "scripted", {}))
    tool_replies = [m for m in output["completion"] if getattr(m, "role", None) == "tool"]
    observed = json.loads(tool_replies[0].content)
    assert {f["id"] for f in observed} == set(ids) and {f["file"] for f in observed} == {path}
    metrics = output["metrics"]
    # SV-Bench: reward_config_auditing = F1 1 + 0.05; format_reward 1; tool_observation_reward F1 1
    assert metrics["reward_config_auditing"] == pytest.approx(1.05)
    assert metrics["format_reward"] == 1.0 and metrics["tool_observation_reward"] == pytest.approx(1.0)
    assert output["reward"] == pytest.approx(1.05 + 0.05 + 0.2)


@pytest.mark.parametrize("bad_path", ["/etc/passwd", "../../etc/passwd", "configs/../../outside.yaml", "configs/none.yaml"])
def test_paths_outside_the_task_folder_are_a_tool_error(svbench_env, bad_path):
    example, _, _ = _kube_linter_example(svbench_env)
    client = ScriptedToolClient([{"tool_calls": [("run_kubelinter", {"paths": [bad_path]})]},
                                 '{"violations": [], "patch": "", "confidence": 0.5}'])
    output = asyncio.run(svbench_env.run_rollout(example, client, "scripted", {}))
    reply = json.loads(next(m for m in output["completion"] if getattr(m, "role", None) == "tool").content)
    assert "error" in reply and ("outside this task's folder" in reply["error"] or "no such file" in reply["error"])
    assert "root:" not in reply["error"]


def test_config_text_form_still_works_in_svbench_env(svbench_env):
    example, ids, _ = _kube_linter_example(svbench_env)
    client = ScriptedToolClient([{"tool_calls": [("run_kubelinter", {})]}, "no answer"])
    output = asyncio.run(svbench_env.run_rollout(example, client, "scripted", {}))
    reply = json.loads(next(m for m in output["completion"] if getattr(m, "role", None) == "tool").content)
    assert {f["id"] for f in reply} == set(ids)
    assert output["metrics"]["tool_observation_reward"] == pytest.approx(1.0)  # evidence is paid even so
    assert output["metrics"]["reward_config_auditing"] == 0.0 and output["metrics"]["format_reward"] == 0.0
