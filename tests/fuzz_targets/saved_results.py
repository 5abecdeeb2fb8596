"""Fuzz targets for saved evaluation results: one results.jsonl, and a folder of saved runs."""

from __future__ import annotations

import json
import math
import tempfile
from pathlib import Path
from typing import Any

from hypothesis import strategies as st

from tests.fuzz_targets._common import JSON_VALUES, _reason, fuzz_target
from tests.fuzz_targets.e2 import _POD, _TF

# --------------------------------------------------------------------------------- saved evaluation results

# SV-Bench's and vf-eval's rollout records (sv_soar.evaluation.saved_results): chat messages or text, columns as
# JSON strings (a hosted run), E1 labels and E2 answer JSONs, metrics of both tasks, env names, failed calls
_E1_Q = "Device unknown-device observed tcp 43750→23, duration 3.1, bytes ?, flags [S]. Decide."
_FIXTURE_PATHS = ["/app/fixtures/k8s/pod.yaml", "", "/nonexistent/x.tf", "/bin/sh", "/etc/hostname", "/", "/dev/null",
                  "../../etc/passwd", "a\x00b", "x" * 3000]


def _e2_prompt(config: str, path: str = "/app/fixtures/k8s/pod.yaml") -> str:
    return f"File path: {path}\n\nConfiguration:\n```text\n{config}\n```"


def _e2_answers() -> st.SearchStrategy[Any]:
    """SV-Bench's E2 answer as its envs store it (the JSON of a row's info: "oracle" ids or build-format
    "violations", fixture_type, fixture_path) and this project's (with "config" and "meta"), mutated."""
    ids = st.sampled_from(["kube-linter/latest-tag", "semgrep/terraform-acl-public-read", "opa/GEN_001", "x", ""])
    oracle = st.lists(st.fixed_dictionaries({"id": ids | JSON_VALUES},
                                            optional={"severity": st.sampled_from(["high", "med", "medium", "INFO"]) | JSON_VALUES})
                      | JSON_VALUES, max_size=3)
    violations = st.lists(st.fixed_dictionaries({"tool": st.sampled_from(["kube-linter", "semgrep"]) | JSON_VALUES,
                                                 "rule_id": st.sampled_from(["latest-tag", "a.b.c"]) | JSON_VALUES},
                                                optional={"severity": JSON_VALUES, "msg": JSON_VALUES, "loc": JSON_VALUES})
                          | JSON_VALUES, max_size=3)
    optional = {"fixture_path": st.sampled_from(_FIXTURE_PATHS) | JSON_VALUES,
                "fixture_type": st.sampled_from(["tf", "k8s", "terraform", "helm", ""]) | JSON_VALUES,
                "config": st.sampled_from([_POD, _TF, "", "   "]) | JSON_VALUES, "patch": JSON_VALUES,
                "meta": JSON_VALUES | st.fixed_dictionaries({"lang": st.sampled_from(["k8s", "tf", "x" * 2000]) | JSON_VALUES})}
    answer = st.one_of(st.fixed_dictionaries({"oracle": oracle | JSON_VALUES}, optional=optional),
                       st.fixed_dictionaries({"violations": violations | JSON_VALUES}, optional=optional),
                       st.fixed_dictionaries({"question": st.sampled_from([_POD, ""]) | JSON_VALUES,
                                              "info": st.fixed_dictionaries({"violations": violations}) | JSON_VALUES},
                                             optional={"meta": JSON_VALUES}))
    return answer | JSON_VALUES


def _rollout_records() -> st.SearchStrategy[dict]:
    e1_question = st.sampled_from([_E1_Q, _E1_Q.replace("43750", "1"), "", "x" * 2000]) | st.text(max_size=20)
    e2_question = st.sampled_from([_POD, _TF, "", "apiVersion: v1\n"]).map(_e2_prompt) | st.sampled_from([_POD, "x"])
    question = e1_question | e2_question
    message = st.fixed_dictionaries({"role": st.sampled_from(["system", "user", "assistant", "tool"]) | JSON_VALUES,
                                     "content": question | JSON_VALUES},
                                    optional={"reasoning_content": st.text(max_size=30) | JSON_VALUES})
    prompt = st.one_of(question, st.lists(message, max_size=3), st.builds(
        lambda q: [{"role": "system", "content": "s"}, {"role": "user", "content": q}], question), JSON_VALUES)
    completion = st.one_of(st.text(max_size=40), st.lists(message, max_size=2), JSON_VALUES,
                           st.just([{"role": "assistant", "content": None, "reasoning_content": '{"label": "Benign"}'}]))
    answer = st.sampled_from(["Malicious", "Benign", "benign", "", 1, 0]) | _e2_answers().map(json.dumps) | JSON_VALUES
    metric_names = st.sampled_from(["reward_accuracy", "accuracy", "detection_f1", "reward_config_auditing",
                                    "format_reward", "num_turns", "x"])
    metric_value = st.floats(allow_nan=True) | st.integers(-(2**70), 2**70) | st.booleans() | st.none() | st.text(max_size=3000)
    metrics = st.dictionaries(metric_names, metric_value, max_size=4) | JSON_VALUES
    env = st.sampled_from(["intertwine/sv-env-network-logs", "intertwine/sv-env-config-verification", "sv-soar-student",
                           "other/env", ""]) | JSON_VALUES
    record = st.fixed_dictionaries(
        {"prompt": prompt, "answer": answer},
        optional={"completion": completion, "metrics": metrics, "rewards": metrics, "env_name": env, "info": JSON_VALUES,
                  "example_id": JSON_VALUES, "error": JSON_VALUES, "completion_error": st.sampled_from(["", "rate limited"]),
                  "question": question | JSON_VALUES, "reward_accuracy": metric_value})
    # a hosted run's results.jsonl: prompt, completion, metrics and info as JSON strings
    hosted = record.map(lambda r: {k: (json.dumps(v) if k in ("prompt", "completion", "metrics", "info") else v)
                                   for k, v in r.items()})
    return record | hosted


def _well_formed_records() -> st.SearchStrategy[dict]:
    """Rollouts as vf-eval, a hosted run or SV-Bench's scripts write them, E1 and E2, one field at times
    broken: most lines of a real file are good, and a reader must get past them to the odd one."""
    e1 = st.builds(lambda q, label, ok: {"prompt": [{"role": "system", "content": "s"}, {"role": "user", "content": q}],
                                         "completion": [{"role": "assistant", "content": json.dumps({"label": label})}],
                                         "answer": label, "metrics": {"reward_accuracy": float(ok), "format_reward": 1.0}},
                   st.sampled_from([_E1_Q, _E1_Q.replace("43750", "9")]), st.sampled_from(["Malicious", "Benign"]), st.booleans())
    good_answer = {"oracle": [{"id": "kube-linter/latest-tag", "severity": "med"}], "fixture_type": "k8s",
                   "fixture_path": "/app/fixtures/k8s/pod.yaml"}
    e2 = st.builds(lambda config, value: {"prompt": [{"role": "user", "content": _e2_prompt(config)}],
                                          "completion": [{"role": "assistant", "content": "{}"}],
                                          "answer": json.dumps(good_answer), "metrics": {"reward_config_auditing": value}},
                   st.sampled_from([_POD, _POD.replace("web", "db")]), st.sampled_from([0.0, 0.05, 1.05]))
    envs = st.sampled_from(["intertwine/sv-env-network-logs", "intertwine/sv-env-config-verification", "sv-soar-student"])
    tagged = st.tuples(e1 | e2, envs).map(lambda re: {**re[0], "env_name": re[1]})
    base = st.one_of(e1, e2, tagged)
    broken = st.tuples(base, st.sampled_from(["prompt", "completion", "answer", "metrics", "env_name", "error", "info"]),
                       JSON_VALUES).map(lambda b: {**b[0], b[1]: b[2]})
    hosted = base.map(lambda r: {k: (json.dumps(v) if k in ("prompt", "completion", "metrics", "info") else v)
                                 for k, v in r.items()})
    return st.one_of(base, base, hosted, broken)


def _results_lines() -> st.SearchStrategy[bytes]:
    good = _well_formed_records().map(lambda r: json.dumps(r, allow_nan=True).encode())
    line = st.one_of(good, good, good, _rollout_records().map(lambda r: json.dumps(r, allow_nan=True).encode()),
                     JSON_VALUES.map(lambda v: json.dumps(v).encode()), st.binary(max_size=30),
                     st.sampled_from([b"", b"[" * 3000 + b"]" * 3000, b'{"prompt": "q", "answer": "Benign"', b"\xff"]))
    return st.lists(line, min_size=1, max_size=6).map(b"\n".join)


def _saved_results_reason(message: str) -> str:
    for words, reason in ((("no success metric",), "no_metric"), (("not a number",), "bad_metric"),
                          (("not valid JSON", "not UTF-8", "nested too deeply", "bytes, over"), "not_json"),
                          (("expected a JSON object",), "not_object"), (("prompt", "question"), "no_question"),
                          (("completion",), "no_completion")):
        if any(w in message for w in words):
            return reason
    return "bad_row"


def _check_eval_results(results: Any, task: Any) -> None:
    """What load_eval_results returns: problems with at least one sample each, rows of the task, runs that
    account for every rollout, and a report's notes that never echo an input whole."""
    assert len(results.rows) == len(results.outcomes)
    assert all(o and all(isinstance(x, bool) for x in o) for o in results.outcomes)
    assert sum(run.rollouts for run in results.runs) == sum(len(o) for o in results.outcomes)
    for row in results.rows:
        assert isinstance(row["question"], str) and row["question"].strip()
        assert isinstance(row.get("meta"), dict)
    for run in results.runs:
        assert run.task is None or run.task in task_names_all()
        assert run.model is None or (isinstance(run.model, str) and run.model.strip())
        assert run.temperature is None or math.isfinite(run.temperature)
        assert run.k is None or (isinstance(run.k, int) and run.k >= 1)
        assert all(n > 0 for n in run.other_task.values()) and task.name not in run.other_task
    for note in results.run_notes(task):
        _reason(note)


def task_names_all() -> tuple[str, ...]:
    from sv_soar.tasks import task_names

    return task_names()


@fuzz_target("saved-results", "saved rollouts, one results.jsonl (sv_soar.evaluation.saved_results.load_eval_results, "
             "E1 and E2; vf-eval, hosted-run and SV-Bench-script records)",
             lambda: st.tuples(st.sampled_from(["e1", "e2"]), st.booleans(), _results_lines()),
             examples=(("e2", False, json.dumps({"prompt": _e2_prompt(_POD), "answer": json.dumps(
                 {"oracle": [], "fixture_path": "/bin/sh"}), "metrics": {"reward_config_auditing": 1.0}}).encode()),
                       ("e1", False, json.dumps({"prompt": _E1_Q, "answer": "Benign",
                                                 "metrics": {"reward_accuracy": "y" * 5000}}).encode())))
def check_saved_results(case: tuple[str, bool, bytes]) -> str:
    from sv_soar.evaluation.saved_results import load_eval_results, per_problem
    from sv_soar.jsonl import JsonlError
    from sv_soar.tasks import get_task

    name, rescore, data = case
    task = get_task(name)
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "results.jsonl"
        path.write_bytes(data)
        try:
            results = load_eval_results([path], task, rescore=rescore and name == "e1")
        except JsonlError as exc:
            return f"rejected:{_saved_results_reason(_reason(exc, where=f'{path}:'))}"
        _check_eval_results(results, task)
        if not results.rows:
            return "accepted:no_rollout_of_task" if results.skipped_other_task else "accepted:empty"
        try:
            rows, outcomes, notes, rule = per_problem(results)
        except ValueError as exc:  # every problem short of its run's K
            _reason(exc)
            return "accepted:all_short_of_k"
        assert len(rows) == len(outcomes) and rows and rule
        return "accepted"


def _metadata_texts() -> st.SearchStrategy[str]:
    env = st.sampled_from(["intertwine/sv-env-network-logs", "intertwine/sv-env-config-verification", "sv-soar-student",
                           "sv_soar_student", "x"]) | JSON_VALUES
    run = st.fixed_dictionaries({}, optional={
        "base_model": st.sampled_from(["Qwen/Qwen3.5-2B", "", "x" * 3000]) | JSON_VALUES,
        "rollouts_per_example": st.sampled_from([1, 4, 8, 0, -1, True, 2**70, 2.5]) | JSON_VALUES,
        "environments": st.lists(st.fixed_dictionaries({"id": env}, optional={"args": JSON_VALUES}) | env, max_size=3) | JSON_VALUES})
    meta = st.fixed_dictionaries({}, optional={
        "model": st.sampled_from(["gpt-4.1-mini", ""]) | JSON_VALUES | st.fixed_dictionaries({"name": JSON_VALUES}),
        "env_id": env, "env": env, "env_args": st.fixed_dictionaries({"task": st.sampled_from(["e1", "e2", "e1+e2"]) | JSON_VALUES})
        | JSON_VALUES, "rollouts_per_example": JSON_VALUES | st.integers(-3, 9),
        "sampling_args": st.fixed_dictionaries({"temperature": st.floats() | JSON_VALUES}) | JSON_VALUES,
        "temperature": st.floats() | JSON_VALUES, "run": run | JSON_VALUES, "config": run | JSON_VALUES})
    return st.one_of(meta.map(lambda m: json.dumps(m, allow_nan=True)), JSON_VALUES.map(json.dumps), st.text(max_size=50),
                     st.just("[" * 5000), st.just("\ud800"))


@fuzz_target("saved-results-folder", "a folder of saved runs, metadata.json beside each results.jsonl (`sv-soar hardset "
             "--from-results FOLDER` up to the mining: commands.hardset._problems_from_results)",
             lambda: st.tuples(st.sampled_from(["e1", "e2"]), _metadata_texts(), st.sampled_from(["run", "claim"]),
                               st.lists(_results_lines(), min_size=1, max_size=2), st.sampled_from([None, 1, 4])),
             examples=(("e1", json.dumps({"run": {"base_model": "m", "rollouts_per_example": 2**70}}), "run",
                        [json.dumps({"prompt": _E1_Q, "answer": "Benign", "metrics": {"reward_accuracy": 1}}).encode()], None),
                       ("e1", "{}", "run", [b"{}"], None)))
def check_saved_results_folder(case: tuple[str, str, str, list[bytes], int | None]) -> str:
    from argparse import Namespace

    from sv_soar.commands.hardset import _problems_from_results
    from sv_soar.tasks import get_task

    name, metadata, where, files, min_samples = case
    task = get_task(name)
    with tempfile.TemporaryDirectory() as folder:
        claim = Path(folder) / "results" / "runs" / "claim"
        for i, data in enumerate(files):
            run = claim / f"run{i}"
            run.mkdir(parents=True)
            (run / "results.jsonl").write_bytes(data)
        (claim / "run0" if where == "run" else claim).joinpath("metadata.json").write_text(
            metadata, encoding="utf-8", errors="surrogatepass")
        args = Namespace(from_results=[str(Path(folder) / "results")], source=None, path=None, samples=None,
                         min_samples=min_samples, success_metric=None, success_threshold=None, rescore=False, model=None)
        try:
            problems = _problems_from_results(task, "builtin", args)
        except ValueError as exc:  # JsonlError (file:line: why), or nothing to mine
            _reason(exc)
            return "rejected:" + ("jsonl_error" if str(exc).startswith(str(claim)) else "nothing_to_mine")
        fields = problems.report_fields
        assert len(problems.rows) == len(problems.successes) > 0
        assert isinstance(fields["model"], str) and fields["model"]
        assert fields["temperature"] is None or math.isfinite(fields["temperature"])
        assert all(isinstance(note, str) and note for note in fields["notes"])
        return "accepted"
