"""`sv-soar hardset --from-results` on SV-Bench's saved runs, in the exact formats they are written.

Fixtures written here, one per format:
- a hosted run's results.jsonl (prompt, completion, metrics and info as JSON strings; a reasoning
  model's answer in `reasoning_content` with `content: null`), metadata.json beside it, in a run folder
  two levels below the folder passed on the command line;
- vf-eval's output folder (outputs/evals/<env>--<model>/<run id>/results.jsonl + metadata.json, chat
  messages as lists, metrics as an object) of SV-Bench's E2 env: its prompt (`File path:` line, then the
  config) and its answer (the JSON of the row's info), scored by reward_config_auditing.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from sv_soar.cli import main
from sv_soar.jsonl import read_jsonl
from tests.e2_configs import BAD_TF, POD

SYSTEM = "You are a network security analyst. Respond with JSON."
QUESTIONS = [f"Device unknown-device observed tcp 4{i}750→23, duration 3.1, bytes ?, flags [S]. Decide." for i in range(4)]
ANSWERS = ["Malicious", "Benign", "Malicious", "Benign"]
# problem -> (samples, recorded successes): problem 0 solved once in 8, 1 never in 4, 2 never in 2, 3 twice in 4
PLAN = {0: (8, 1), 1: (4, 0), 2: (2, 0), 3: (4, 2)}


def hosted_record(i: int, solved: bool) -> dict:
    label = ANSWERS[i] if solved else ("Benign" if ANSWERS[i] == "Malicious" else "Malicious")
    prompt = [{"role": "system", "content": SYSTEM}, {"role": "user", "content": QUESTIONS[i]}]
    # a reasoning model: the answer sits in reasoning_content, content is null; re-scoring "content"
    # would fail every rollout, the recorded metric says which succeeded
    completion = [{"role": "assistant", "content": None,
                   "reasoning_content": f"Thinking... {json.dumps({'label': label, 'confidence': 0.8})}"}]
    metrics = {"reward_accuracy": float(solved), "format_reward": 1.0, "reward_calibration": 0.8,
               "reward_asymmetric_cost": 1.0 if solved else 0.0}
    return {"example_id": i, "prompt": json.dumps(prompt), "completion": json.dumps(completion),
            "answer": ANSWERS[i], "task": "default", "reward": 1.0 if solved else 0.0,
            "metrics": json.dumps(metrics), "info": json.dumps({})}


@pytest.fixture
def hosted_run(tmp_path) -> Path:
    run = tmp_path / "runs" / "sv-env-network-logs" / "rl-step-120"
    run.mkdir(parents=True)
    (run / "metadata.json").write_text(json.dumps({"model": "qwen3-8b-reasoner", "sampling_args": {"temperature": 0.7}}))
    lines = [hosted_record(i, j < solved) for i, (k, solved) in PLAN.items() for j in range(k)]
    (run / "results.jsonl").write_text("".join(json.dumps(r) + "\n" for r in lines))
    return tmp_path / "runs"  # the run folder's grandparent: searched recursively


def test_hosted_run_results_mined_from_recorded_metric(hosted_run, tmp_path):
    out = tmp_path / "out"
    assert main(["hardset", "--task", "e1", "--from-results", str(hosted_run), "--out", str(out)]) == 0
    solved = {r["question"]: (r["solved"], r["samples"]) for r in read_jsonl(out / "successes.jsonl")}
    # question = the user message text (not the serialised prompt, no system prompt); K = its sample count;
    # by default a problem needs its run's K (here 4, the count most problems have: metadata.json records no
    # rollouts_per_example): problem 2, 0 of 2, is left out, not counted fail@K next to 0 of 4
    assert solved == {QUESTIONS[i]: (s, k) for i, (k, s) in PLAN.items() if k >= 4}
    hard = read_jsonl(out / "hard_set.jsonl")
    assert {r["question"] for r in hard} == {QUESTIONS[1]}
    assert {r["question"]: r["meta"]["fail_at_k"]["samples"] for r in hard} == {QUESTIONS[1]: 4}
    assert all(SYSTEM not in r["question"] for r in hard)
    report = (out / "cold_start_report.md").read_text()
    assert "qwen3-8b-reasoner" in report and "| temperature | 0.7 |" in report
    assert "success from: reward_accuracy" in report
    assert "| samples a problem (K, each problem its own) | min 4, median 4, max 8 (K=4 x2, K=8 x1);" in report
    assert "| min samples | each problem's run K (the default;" in report
    assert "1 problems have fewer samples than their run's K and were left out (samples of K: 2 of 4)" in report


def test_min_samples_1_counts_every_problem_and_the_report_says_so(hosted_run, tmp_path):
    out = tmp_path / "out"
    argv = ["hardset", "--from-results", str(hosted_run), "--min-samples", "1", "--out", str(out)]
    assert main(argv) == 0
    solved = {r["question"]: (r["solved"], r["samples"]) for r in read_jsonl(out / "successes.jsonl")}
    assert solved == {QUESTIONS[i]: (s, k) for i, (k, s) in PLAN.items()}
    assert {r["question"] for r in read_jsonl(out / "hard_set.jsonl")} == {QUESTIONS[1], QUESTIONS[2]}
    report = (out / "cold_start_report.md").read_text()
    assert "| min samples | --min-samples 1 (given), whatever the run's K |" in report
    assert "min 2, median 4, max 8 (K=2 x1, K=4 x2, K=8 x1)" in report
    assert "hard set D (0/K solved): 2" in report


def test_rollouts_per_example_in_metadata_is_the_runs_k(hosted_run, tmp_path):
    # SV-Bench's hosted metadata.json: {"run": {"base_model", "rollouts_per_example", ...}}; K = 8 leaves out
    # every problem but the one with 8 samples, and the model is run.base_model
    run = next(hosted_run.rglob("metadata.json"))
    run.write_text(json.dumps({"run": {"base_model": "Qwen/Qwen3.5-2B", "rollouts_per_example": 8}}))
    out = tmp_path / "out"
    assert main(["hardset", "--from-results", str(hosted_run), "--out", str(out)]) == 0
    assert [r["question"] for r in read_jsonl(out / "successes.jsonl")] == [QUESTIONS[0]]
    report = (out / "cold_start_report.md").read_text()
    assert "| model | `Qwen/Qwen3.5-2B` |" in report and "unknown model" not in report
    assert "3 problems have fewer samples than their run's K" in report


def test_min_samples_leaves_out_thin_problems(hosted_run, tmp_path):
    out = tmp_path / "out"
    argv = ["hardset", "--from-results", str(hosted_run), "--min-samples", "4", "--out", str(out)]
    assert main(argv) == 0
    assert {r["question"] for r in read_jsonl(out / "hard_set.jsonl")} == {QUESTIONS[1]}
    report = (out / "cold_start_report.md").read_text()
    assert "1 problems have fewer than --min-samples 4 samples" in report
    assert "| min samples | --min-samples 4 (given), whatever the run's K |" in report


def test_success_metric_is_honoured(hosted_run, tmp_path):
    out = tmp_path / "out"
    # format_reward is 1 on every rollout: nothing is hard by that metric
    argv = ["hardset", "--from-results", str(hosted_run), "--success-metric", "format_reward", "--out", str(out)]
    assert main(argv) == 0
    assert read_jsonl(out / "hard_set.jsonl") == []
    assert "success from: format_reward" in (out / "cold_start_report.md").read_text()
    with pytest.raises(SystemExit, match="no success metric 'reward_nope'.*it records: format_reward"):
        main(["hardset", "--from-results", str(hosted_run), "--success-metric", "reward_nope", "--out", str(out)])


def test_rescore_reads_reasoning_content_when_content_is_null(hosted_run, tmp_path):
    out = tmp_path / "out"
    # without the metric, --rescore scores the reasoning model's answer (content is null)
    path = next(hosted_run.rglob("results.jsonl"))
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    for line in lines:
        line["metrics"] = json.dumps({"num_turns": 1})
    path.write_text("".join(json.dumps(r) + "\n" for r in lines))
    with pytest.raises(SystemExit, match="--rescore"):
        main(["hardset", "--from-results", str(hosted_run), "--out", str(out)])
    argv = ["hardset", "--from-results", str(hosted_run), "--rescore", "--min-samples", "1", "--out", str(out)]
    assert main(argv) == 0
    solved = {r["question"]: r["solved"] for r in read_jsonl(out / "successes.jsonl")}
    assert solved == {QUESTIONS[i]: s for i, (_, s) in PLAN.items()}
    # nothing says which task these rollouts ran (no environment in metadata.json, no env_name, no task metric):
    # the report names the run and says why
    assert (f"run {path.parent}: the task of 18 rollouts is not recorded (metadata.json names no environment of a "
            "known task; their rows carry no env_name and no task's success metric): read as e1"
            in (out / "cold_start_report.md").read_text())


def test_folder_without_results_is_a_clear_error(tmp_path):
    (tmp_path / "empty" / "run").mkdir(parents=True)
    with pytest.raises(SystemExit, match="no results.jsonl in this folder or below"):
        main(["hardset", "--from-results", str(tmp_path / "empty"), "--out", str(tmp_path / "o")])


# --- E2: vf-eval output of SV-Bench's sv-env-config-verification ------------------------------------

E2_ROWS = [  # (fixture path, config, info as SV-Bench stores it)
    ("/svbench/k8s/pod.yaml", POD, {"violations": [{"tool": "kube-linter", "rule_id": "latest-tag", "severity": "medium"}],
                                    "patch": None, "fixture_path": "/svbench/k8s/pod.yaml"}),
    ("/svbench/tf/main.tf", BAD_TF, {"violations": [{"tool": "semgrep", "rule_id": "terraform.aws.x", "severity": "ERROR"}],
                                     "patch": None, "fixture_path": "/svbench/tf/main.tf", "fixture_type": "tf"}),
]
E2_REWARDS = {0: [1.05, 0.05, 0.0], 1: [0.05, 0.0, 0.05]}  # reward_config_auditing of each rollout


@pytest.fixture
def vf_eval_e2_outputs(tmp_path) -> Path:
    run = tmp_path / "outputs" / "evals" / "sv-env-config-verification--gpt-4.1-mini" / "a1b2c3d4"
    run.mkdir(parents=True)
    (run / "metadata.json").write_text(json.dumps({"env": "sv-env-config-verification", "model": "gpt-4.1-mini",
                                                   "num_examples": 2, "rollouts_per_example": 3,
                                                   "sampling_args": {"temperature": 1.0}}))
    records = []
    for i, (path, config, info) in enumerate(E2_ROWS):
        question = f"File path: {path}\n\nConfiguration:\n```text\n{config}\n```"
        for value in E2_REWARDS[i]:
            records.append({
                "example_id": i,
                "prompt": [{"role": "system", "content": "You are a security auditor."}, {"role": "user", "content": question}],
                "completion": [{"role": "assistant", "content": "{}"}],
                "answer": json.dumps(info), "task": "default", "reward": value + 0.05,
                "metrics": {"reward_config_auditing": value, "format_reward": 1.0, "tool_observation_reward": 0.0},
            })
    (run / "results.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    return tmp_path / "outputs"


def test_vf_eval_e2_outputs_mined_from_reward_config_auditing(vf_eval_e2_outputs, tmp_path):
    out = tmp_path / "out"
    assert main(["hardset", "--task", "e2", "--from-results", str(vf_eval_e2_outputs), "--out", str(out)]) == 0
    # success = reward_config_auditing >= 0.55 (F1 >= 0.5 plus SV-Bench's 0.05 bonus): the TF row never
    hard = read_jsonl(out / "hard_set.jsonl")
    assert [r["question"] for r in hard] == [BAD_TF]  # the config itself, File path wrapper removed
    assert hard[0]["meta"]["lang"] == "tf" and hard[0]["info"]["violations"][0]["rule_id"] == "terraform.aws.x"
    report = (out / "cold_start_report.md").read_text()
    assert "gpt-4.1-mini" in report and "success from: reward_config_auditing >= 0.55" in report


# --- SV-Bench's run folder: results/runs/<claim>/<run>/, E1 and E2 runs side by side ------------------------

TF_PATH = "/app/.venv/lib/python3.12/site-packages/dataset/fixtures/tf/bad.tf"
E2_HOSTED = [  # (config, fixture path, SV-Bench's answer as its hosted E2 env stores it: "oracle" ids)
    (BAD_TF, TF_PATH, {"oracle": [{"id": "semgrep/terraform-acl-public-read", "severity": "high"}],
                       "fixture_path": TF_PATH, "fixture_type": "tf"}),
    (POD, "/app/fixtures/k8s/pod.yaml", {"oracle": [{"id": "kube-linter/latest-tag", "severity": "med"}],
                                         "fixture_path": "/app/fixtures/k8s/pod.yaml", "fixture_type": "k8s"}),
]
E2_PLAN = {0: (4, 0), 1: (4, 3)}  # problem -> (samples, recorded successes): the Terraform row never solved


def hosted_e2_record(i: int, solved: bool) -> dict:
    config, path, answer = E2_HOSTED[i]
    prompt = [{"role": "system", "content": "You are a security auditor."},
              {"role": "user", "content": f"File path: {path}\n\nConfiguration:\n```text\n{config}\n```"}]
    metrics = {"reward_config_auditing": 1.0 if solved else 0.0, "format_reward": 1.0, "tool_observation_reward": 1.0}
    return {"answer": json.dumps(answer), "completion": json.dumps([{"role": "assistant", "content": "{}"}]),
            "env_name": "intertwine/sv-env-config-verification", "info": "", "metrics": json.dumps(metrics),
            "problem_id": i, "prompt": json.dumps(prompt), "reward": 1.0 if solved else 0.0, "task": "default"}


def svbench_metadata(model: str, env: str, k: int) -> dict:
    """A hosted run's metadata.json as SV-Bench keeps it: everything under "run"."""
    return {"run": {"base_model": model, "rollouts_per_example": k, "status": "COMPLETED",
                    "environments": [{"id": env, "args": {"max_examples": 50}, "version": "0.2.15"}]}}


@pytest.fixture
def svbench_runs(tmp_path) -> Path:
    claim = tmp_path / "results" / "runs" / "svbench-research-claim-20260515T141203Z"
    e1, e2 = claim / "bp6qd19u06wzeqkdrf0h24xx", claim / "hu1j9b61il8dydv2bh1aj97d"
    for run in (e1, e2):
        run.mkdir(parents=True)
    (e1 / "metadata.json").write_text(json.dumps(svbench_metadata("Qwen/Qwen3.5-2B", "intertwine/sv-env-network-logs", 8)))
    e1_records = [{**hosted_record(i, j < solved), "env_name": "intertwine/sv-env-network-logs"}
                  for i, (k, solved) in PLAN.items() for j in range(8)]  # 8 samples each, as the run asked
    (e1 / "results.jsonl").write_text("".join(json.dumps(r) + "\n" for r in e1_records))
    (e2 / "metadata.json").write_text(json.dumps(svbench_metadata("Qwen/Qwen3.5-9B", "intertwine/sv-env-config-verification", 4)))
    e2_records = [hosted_e2_record(i, j < solved) for i, (k, solved) in E2_PLAN.items() for j in range(k)]
    (e2 / "results.jsonl").write_text("".join(json.dumps(r) + "\n" for r in e2_records))
    return claim


def test_mixed_run_folder_mined_for_each_task_other_rows_skipped_and_counted(svbench_runs, tmp_path):
    e1_run, e2_run = sorted(p.parent for p in svbench_runs.rglob("results.jsonl"))
    out = tmp_path / "e1"
    assert main(["hardset", "--task", "e1", "--from-results", str(svbench_runs), "--out", str(out)]) == 0
    assert {r["question"] for r in read_jsonl(out / "hard_set.jsonl")} == {QUESTIONS[i] for i, (_, s) in PLAN.items() if s == 0}
    report = (out / "cold_start_report.md").read_text()
    assert "| model | `Qwen/Qwen3.5-2B` |" in report  # the E1 run's run.base_model; the skipped run's model is not
    assert "Qwen3.5-9B" not in report and "| samples a problem (S) | 8 |" in report
    assert (f"run {e2_run}: skipped 8 rollouts of e2, not e1 (metadata.json: environment "
            "'intertwine/sv-env-config-verification'); read 0 of e1") in report

    out = tmp_path / "e2"
    assert main(["hardset", "--task", "e2", "--from-results", str(svbench_runs), "--out", str(out)]) == 0
    hard = read_jsonl(out / "hard_set.jsonl")
    assert [r["question"] for r in hard] == [BAD_TF] and hard[0]["meta"]["lang"] == "tf"
    assert hard[0]["info"]["violations"][0]["rule_id"] == "terraform-acl-public-read"
    report = (out / "cold_start_report.md").read_text()
    assert "| model | `Qwen/Qwen3.5-9B` |" in report and "| samples a problem (S) | 4 |" in report
    assert (f"run {e1_run}: skipped 32 rollouts of e1, not e2 (metadata.json: environment "
            "'intertwine/sv-env-network-logs'); read 0 of e2") in report
    assert "success from: reward_config_auditing >= 0.55" in report


def test_rows_name_their_task_where_metadata_does_not(svbench_runs, tmp_path):
    # vf-eval style: no metadata.json at all; each row's env_name (or else its metrics) tells its task
    for meta in svbench_runs.rglob("metadata.json"):
        meta.unlink()
    out = tmp_path / "e2"
    assert main(["hardset", "--task", "e2", "--from-results", str(svbench_runs), "--out", str(out)]) == 0
    report = (out / "cold_start_report.md").read_text()
    assert "skipped 32 rollouts of e1, not e2; read 0 of e2" in report and "unknown model" in report
    assert [r["question"] for r in read_jsonl(out / "hard_set.jsonl")] == [BAD_TF]


def test_only_runs_of_another_task_is_a_clear_error(svbench_runs, tmp_path):
    e1_run = next(p.parent for p in svbench_runs.rglob("results.jsonl") if "bp6q" in str(p))
    with pytest.raises(SystemExit, match=r"no rollout of task e2 in 1 results files: run .*skipped 32 rollouts of e1"):
        main(["hardset", "--task", "e2", "--from-results", str(e1_run), "--out", str(tmp_path / "o")])
