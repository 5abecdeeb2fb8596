"""Fuzz targets for E2 rows and answers, and SV-Bench's E2 rubric as reproduced."""

from __future__ import annotations

import json
import math
import tempfile
from typing import Any
from unittest import mock

from hypothesis import strategies as st

from tests.fuzz_targets._common import JSON_VALUES, _reason, fuzz_target
from tests.fuzz_targets.e2 import _HUNKS, _POD, _TF, _private_tempdir, _student_e2_texts
from tests.fuzz_targets.saved_results import _e2_answers, _e2_prompt

# --------------------------------------------------------------------------------- E2 rows and answers


def _e2_rows() -> st.SearchStrategy[Any]:
    """E2 rows in every form a reader meets: SV-Bench's build rows, its env's (prompt with a `File path:` line,
    answer = the JSON of info), this project's dataset records (answer = the row as JSON), mutated."""
    config = st.sampled_from([_POD, _TF, "", " ", "x" * 3000]) | st.text(max_size=30)
    build = st.fixed_dictionaries({"question": config | JSON_VALUES, "info": _e2_answers() | JSON_VALUES},
                                  optional={"meta": JSON_VALUES | st.fixed_dictionaries(
                                      {"lang": st.sampled_from(["k8s", "tf", "Terraform", "x" * 3000]) | JSON_VALUES})})
    env = st.fixed_dictionaries({"question": config.map(_e2_prompt) | config | JSON_VALUES,
                                 "answer": _e2_answers().map(json.dumps) | st.text(max_size=20) | JSON_VALUES},
                                optional={"meta": JSON_VALUES, "prompt": config | JSON_VALUES})
    return st.one_of(build, env, JSON_VALUES)


@fuzz_target("e2-row", "E2 rows and answers (sv_soar.tasks.e2.validate_row, sv_soar.tasks.e2.scoring.row_from_answer: "
             "SV-Bench's build rows, its env's answer JSON with oracle ids and fixture paths, dataset records)", _e2_rows,
             examples=({"question": _e2_prompt(""), "answer": json.dumps({"oracle": [], "fixture_path": "/bin/sh"})},
                       # found by fuzzing: a lang echoed whole; a path too long to stat (OSError); an answer of
                       # JSON null (TypeError); an empty config inside SV-Bench's prompt, accepted as a row
                       {"question": _POD, "info": {"violations": []}, "meta": {"lang": "x" * 3000}},
                       {"question": "x", "answer": json.dumps({"oracle": [], "fixture_path": "x" * 3000})},
                       {"question": _POD, "answer": "null"},
                       {"question": 1.0, "answer": '{"oracle": []}'},  # a prompt that is a number (TypeError)
                       {"question": _e2_prompt(""), "answer": json.dumps({"question": _POD, "info": {"violations": []}})}))
def check_e2_row(value: Any) -> str:
    from sv_soar.tasks.e2 import E2_TASK

    try:
        row = E2_TASK.validate_row(value)
    except ValueError as exc:
        _reason(exc)
        return "rejected:invalid_row"
    assert isinstance(row["question"], str) and row["question"].strip()
    assert row["meta"]["lang"] in ("k8s", "tf")
    assert all(isinstance(v["tool"], str) and isinstance(v["rule_id"], str) for v in row["info"]["violations"])
    assert isinstance(E2_TASK.breakdown(row), str)
    # the record a dataset writes for the row reads back as the same problem (the student env's answer column)
    again = E2_TASK.validate_row({"question": E2_TASK.question(row), "answer": E2_TASK.answer(row)})
    assert [(v["tool"], v["rule_id"]) for v in again["info"]["violations"]] == \
        [(v["tool"], v["rule_id"]) for v in row["info"]["violations"]]
    return "accepted"


# --------------------------------------------------------------------------------- SV-Bench's E2 rubric


def _tool_contents() -> st.SearchStrategy[Any]:
    finding = st.fixed_dictionaries({"tool": st.sampled_from(["kube-linter", "semgrep", "opa"]) | JSON_VALUES,
                                     "rule_id": st.sampled_from(["latest-tag", "run-as-non-root", "x"]) | JSON_VALUES},
                                    optional={"severity": JSON_VALUES})
    findings = st.lists(finding | JSON_VALUES, max_size=4)
    return st.one_of(findings.map(json.dumps), findings.map(repr), findings, JSON_VALUES, st.text(max_size=40),
                     st.sampled_from(["[" * 5000, "{'a': " * 500, "(" * 200 + ")" * 200, "1e999", "[{'tool': b'x'}]",
                                      "{1, 2}", "__import__('os')"]))


def _svbench_e2_cases() -> st.SearchStrategy[tuple]:
    answer_text = _student_e2_texts()
    message = st.fixed_dictionaries({"role": st.just("tool"), "content": _tool_contents()}) | st.fixed_dictionaries(
        {"role": st.just("assistant"), "content": answer_text | JSON_VALUES})
    completion = answer_text | st.lists(message, max_size=3) | answer_text.map(
        lambda t: [{"role": "assistant", "content": t}]) | JSON_VALUES
    good = json.dumps({"oracle": [{"id": "kube-linter/latest-tag", "severity": "med"},
                                  {"id": "kube-linter/run-as-non-root", "severity": "med"}],
                       "fixture_path": "/app/fixtures/k8s/pod.yaml", "fixture_type": "k8s"})
    answer = st.just(good) | _e2_answers().map(json.dumps) | JSON_VALUES | st.text(max_size=20)
    prompt = st.sampled_from([_e2_prompt(_POD), [{"role": "user", "content": _e2_prompt(_POD)}], "", None]) | JSON_VALUES
    return st.tuples(completion, answer, prompt)


@fuzz_target("e2-svbench", "SV-Bench's E2 rubric as reproduced (sv_soar.tasks.e2.svbench: answer parser, oracle "
             "answer JSON, tool messages read as JSON or Python literals, unified-diff patches applied and re-scanned)",
             _svbench_e2_cases,
             examples=(('{"violations": [{"id": "kube-linter/latest-tag", "severity": "med"}], "confidence": 0.5}',
                        json.dumps({"oracle": [{"id": "kube-linter/latest-tag"}], "fixture_path": "/bin/sh"}), None),
                       ([{"role": "tool", "content": "[" * 5000}], "{}", None),
                       # found by fuzzing: an oracle that is not a list (TypeError: 'bool' object is not iterable)
                       ('{"violations": [{"id": "kube-linter/latest-tag", "severity": "med"}], "confidence": 0.5}',
                        json.dumps({"oracle": True}), None),
                       # found by fuzzing: a lone surrogate in the patch or the config (UnicodeEncodeError)
                       *[(json.dumps({"violations": [{"id": "kube-linter/latest-tag", "severity": "med"}], "confidence": 0.5,
                                      "patch": "--- a/config\n+++ b/config\n" + hunk}),
                          json.dumps({"oracle": [{"id": "kube-linter/latest-tag"}], "config": config}), None)
                         for hunk, config in ((_HUNKS[6], _POD), (_HUNKS[0], _POD + "# \ud800\n"))]))
def check_e2_svbench(case: tuple) -> str:
    from sv_soar.tasks.e2 import svbench as sv

    completion, answer, prompt = case
    scratch = _private_tempdir()
    try:
        with mock.patch.object(tempfile, "tempdir", str(scratch)):
            fmt = sv.format_reward(completion, answer)
            tool = sv.tool_observation_reward(completion, answer)
            audit = sv.reward_config_auditing(completion, answer, prompt)
    except ValueError as exc:  # an answer with no oracle: named, never scored as a clean config
        assert str(exc).startswith("E2 answer"), exc
        _reason(exc)
        try:
            sv.answer_object(answer)
        except ValueError:
            return "rejected:answer_without_oracle"
        raise AssertionError(f"a readable answer raised: {exc}") from None
    finally:
        assert not any(scratch.iterdir()), f"left behind: {sorted(p.name for p in scratch.iterdir())}"
    assert fmt in (0.0, 1.0) and 0.0 <= tool <= 1.0 and 0.0 <= audit <= 2.0, (fmt, tool, audit)
    assert all(isinstance(v, float) and math.isfinite(v) for v in (fmt, tool, audit))
    if fmt == 0.0:
        assert audit == 0.0
        return "accepted:invalid_format"
    return "accepted" if audit > 0 else "accepted:no_credit"
