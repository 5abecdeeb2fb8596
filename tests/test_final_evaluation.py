"""Final evaluation: the metrics by hand, and `sv-soar evaluate` on a run folder with the tiny model."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys

import pytest
import torch

from sv_soar.config import parse_config
from sv_soar.evaluation.final import (
    bootstrap_interval,
    expected_calibration_error,
    score_problem_set,
    training_phases,
)
from sv_soar.run_dir import RunDirError, create_run, open_run
from sv_soar.tasks import get_task
from sv_soar.tasks.e1.flows import generate_e1_flows
from tests.tiny_runs import make_run


def test_ece_by_hand():
    # bin [0.9, 1.0): accuracy 0.5, confidence 0.9 -> 0.4 x weight 0.5; bin [0.2, 0.3): 0 vs 0.2 -> 0.2 x 0.5
    points = [(0.9, True), (0.9, False), (0.2, False), (0.2, False)]
    assert expected_calibration_error(points) == pytest.approx(0.3)
    assert expected_calibration_error([(1.0, True), (0.0, False)]) == pytest.approx(0.0)  # 1.0 in the last bin
    assert expected_calibration_error([]) is None


def test_bootstrap_interval_over_seeds():
    assert bootstrap_interval([0.25]) == (0.25, 0.25)
    low, high = bootstrap_interval([0.1, 0.2, 0.6])
    assert 0.1 <= low < 0.3 < high <= 0.6
    assert bootstrap_interval([0.1, 0.2, 0.6]) == (low, high)  # seeded
    with pytest.raises(ValueError):
        bootstrap_interval([])


def test_training_phases_mixed_and_curriculum():
    pq = [[{"q": 1}], [{"q": 2}, {"q": 3}]]
    d_train = [{"q": 9}]
    assert training_phases(pq, d_train, curriculum=False) == [[{"q": 1}, {"q": 2}, {"q": 3}, {"q": 9}]]
    assert training_phases(pq, d_train, curriculum=True) == [[{"q": 1}], [{"q": 2}, {"q": 3}], [{"q": 9}]]
    assert training_phases([], d_train, curriculum=True) == [d_train]


def test_problem_set_metrics_agree_with_the_samples(tiny_model_dir):
    """A random tiny model never writes an E1 label, so success here is "the completion has a digit"
    (about half of its two-token samples), with a fixed stated confidence: the metrics must agree with the samples."""
    from sv_soar.engines.transformers_engine import TransformersEngine

    e1 = get_task("e1")
    has_digit = lambda text, row: any(c.isdigit() for c in text)  # noqa: E731
    task = dataclasses.replace(
        e1, is_success=has_digit, calibration_point=lambda text, row: (0.5, has_digit(text, row), text.startswith("a"))
    )
    rows = generate_e1_flows(6, seed=1)
    engine = TransformersEngine(str(tiny_model_dir))
    metrics = score_problem_set(engine, task, rows, 8, adapter=None, seed=0, max_new_tokens=2, batch_size=16,
                                progress=False)
    assert set(metrics.pass_at_k) == {1, 4, 8}  # k <= samples only
    values = [metrics.pass_at_k[k] for k in (1, 4, 8)]
    assert values == sorted(values) and 0 < values[0] < 1
    assert metrics.escape_rate == pytest.approx(metrics.pass_at_k[8])  # pass@n = share solved at least once
    # every stated confidence is 0.5, so ECE = |accuracy - 0.5| over the non-abstained samples
    assert metrics.ece is not None and 0 <= metrics.ece <= 0.5
    assert metrics.parsed_rate == 1.0 and 0 <= metrics.abstain_rate <= 1


def test_problem_set_is_sampled_at_the_given_temperature(tiny_model_dir):
    """D_test is sampled at student.temperature (the one the hard set was mined at): near 0, the samples of
    a problem are all the same, so each problem is solved by all of its samples or by none."""
    from sv_soar.engines.transformers_engine import TransformersEngine

    task = dataclasses.replace(get_task("e1"), is_success=lambda text, row: any(c.isdigit() for c in text),
                               calibration_point=None)
    rows = generate_e1_flows(6, seed=1)
    engine = TransformersEngine(str(tiny_model_dir))
    score = dict(adapter=None, seed=0, max_new_tokens=2, batch_size=16, progress=False)
    cold = score_problem_set(engine, task, rows, 8, temperature=1e-4, **score)
    assert set(cold.successes) <= {0, 8}
    hot = score_problem_set(engine, task, rows, 8, temperature=1.0, **score)
    assert any(0 < s < 8 for s in hot.successes)  # at 1.0 they differ (the test above: 0 < pass@1 < 1)


@pytest.mark.slow
def test_evaluate_command_writes_final_json(tmp_path, tiny_model_dir):
    promoted = generate_e1_flows(3, seed=7)
    run = make_run(tmp_path, tiny_model_dir, promoted=promoted)
    assert [len(d) for d in open_run(run.folder).promoted_datasets()] == [3]
    result = subprocess.run(
        [sys.executable, "-m", "sv_soar.cli", "evaluate", str(run.folder), "--curriculum"],
        capture_output=True, text=True, timeout=600,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    report = json.loads((run.folder / "evaluation" / "final.json").read_text())
    assert report["promoted_questions"] == 3 and report["d_train"] == 4 and report["curriculum"] is True
    assert [s["seed"] for s in report["seeds"]] == [0, 1]
    assert all(s["sets"]["d_test"]["problems"] == 4 for s in report["seeds"])
    summary = report["summary"]["d_test"]
    assert set(summary) >= {"pass@1", "pass@4", "escape_rate"}
    assert summary["pass@1"]["seeds"] == 2 and summary["pass@1"]["low"] <= summary["pass@1"]["mean"] <= summary["pass@1"]["high"]
    assert "base" in report and "d_test" in report["base"]
    assert (run.folder / "evaluation" / "seed-1" / "adapter_model.safetensors").is_file()
    assert "final evaluation: soar" in result.stdout
    # its stderr is no terminal (a log file, here a pipe): progress comes as whole lines (sv_soar.progress), no bar
    assert "final students: 14/14 step (100%)" in result.stderr and "sampling 4/problem: 0/16 sample" in result.stderr
    err = result.stderr
    assert "\r" not in err[err.index("final students"):]  # (transformers' model-loading bar, before it, has)


def test_fully_fine_tuned_final_students_carry_their_weights_across_phases_and_save_a_model(tmp_path, tiny_model_dir):
    """student.finetune = "full": each seed's student is its own copy of the base model, trained through both
    curriculum phases, scored on D_test and saved as a model folder; the base model it started from is not."""
    from safetensors.torch import load_file

    from sv_soar.evaluation.final import adapter_evaluation, final_evaluation
    from sv_soar.models import load_model

    run = make_run(tmp_path, tiny_model_dir, promoted=generate_e1_flows(3, seed=7), finetune="full",
                   learning_rate=1e-3)
    report = final_evaluation(open_run(run.folder), seeds=[0], samples=2, steps=2, curriculum=True, progress=False)
    assert [len(s["train_log"]) for s in report["seeds"]] == [2]  # one step in each of the two phases
    assert report["seeds"][0]["sets"]["d_test"]["problems"] == 4 and "d_test" in report["base"]
    folder = run.folder / "evaluation" / "seed-0"
    assert (folder / "model.safetensors").is_file() and (folder / "config.json").is_file()
    trained = load_file(str(folder / "model.safetensors"))
    base = load_model(str(tiny_model_dir))[0].state_dict()
    # the saved weights are the trained student's: they differ from the base exactly when a step updated it (the
    # random tiny model rarely earns an E1 reward, so whether a step's group had an advantage depends on its
    # draws, which differ between machines; tests/test_student_full_finetune.py makes full students move)
    updated = any(entry["grad_norm"] > 0 for entry in report["seeds"][0]["train_log"])
    assert trained.keys() == base.keys()
    assert any(not torch.equal(trained[k], v) for k, v in base.items()) == updated
    # `sv-soar evaluate --adapter` scores the saved folder as the final student was scored (same seed, samples)
    again = adapter_evaluation(open_run(run.folder), folder, samples=2, score_base=False, progress=False)
    assert again["seeds"][0]["sets"]["d_test"]["successes"] == report["seeds"][0]["sets"]["d_test"]["successes"]


def test_a_folder_that_is_not_a_run_says_so(tmp_path, tiny_model_dir):
    (tmp_path / "junk").mkdir()
    result = subprocess.run([sys.executable, "-m", "sv_soar.cli", "evaluate", str(tmp_path / "junk")],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 2 and "not an sv-soar run folder" in result.stdout
    with pytest.raises(RunDirError, match="no d_train.jsonl there"):
        config = parse_config({"data": {"hard_set": str(tmp_path / "nowhere")}})
        create_run(tmp_path / "run2", config)


def test_create_run_refuses_another_config(tmp_path, tiny_model_dir):
    run = make_run(tmp_path, tiny_model_dir)
    other = run.config.model_copy(deep=True)
    other.soar.q_r = 7
    with pytest.raises(RunDirError, match="soar.q_r: 64 != 7"):
        create_run(run.folder, other)
    assert create_run(run.folder, run.config).config == run.config


@pytest.mark.slow
def test_the_loop_student_is_scored_like_a_final_student_and_gets_its_own_report_row(tmp_path, tiny_model_dir):
    """`sv-soar evaluate --loop-student` scores the last promoted baseline (what the outer loop itself taught) on
    D_test with the final students' seed and samples, and `sv-soar report` shows it as a row of its own. Here the
    baseline folder is a copy of final student 0, so both must score the same successes."""
    import shutil

    from sv_soar.evaluation.final import final_evaluation
    from sv_soar.evaluation.report import write_report
    from sv_soar.promotion import BaselineRef
    from sv_soar.promotion_run import load_state

    run = make_run(tmp_path, tiny_model_dir, promoted=generate_e1_flows(3, seed=7), learning_rate=1e-3)
    final = final_evaluation(open_run(run.folder), seeds=[0], samples=4, steps=1, curriculum=False, progress=False)
    shutil.copytree(run.folder / "evaluation" / "seed-0", run.folder / "baseline" / "0001-step-000001")
    state = load_state(run.folder / "state.json")
    state.baseline = BaselineRef(name="step-000001-x0-s1", id="copy", folder="baseline/0001-step-000001")
    (run.folder / "state.json").write_text(state.model_dump_json())

    result = subprocess.run([sys.executable, "-m", "sv_soar.cli", "evaluate", str(run.folder), "--loop-student",
                             "--no-base", "--no-progress"], capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    loop = json.loads((run.folder / "evaluation" / "loop-student.json").read_text())
    assert loop["method"] == "soar (loop student)" and loop["base"] == {}
    assert loop["seeds"][0]["sets"]["d_test"]["successes"] == final["seeds"][0]["sets"]["d_test"]["successes"]
    assert "the student saved in" in result.stdout

    markdown = write_report([run.folder], tmp_path / "report").read_text()
    rows = [line for line in markdown.splitlines() if line.startswith("| soar")]
    assert [row.split(" | ")[0] for row in rows] == ["| soar", "| soar (loop student)"]


def test_a_run_that_never_promoted_has_no_loop_student(tmp_path, tiny_model_dir):
    run = make_run(tmp_path, tiny_model_dir)  # hard-only: no state.json, no baseline
    result = subprocess.run([sys.executable, "-m", "sv_soar.cli", "evaluate", str(run.folder), "--loop-student"],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 2 and "promoted no student" in result.stdout
    assert not (run.folder / "evaluation" / "loop-student.json").exists()


def test_a_training_only_report_opens_no_evaluation_file(tmp_path, tiny_model_dir):
    """`sv-soar report --training-only` while a comparison is going: blind to D_test, it never opens evaluation/
    (here a final.json that the full report refuses to read)."""
    run = make_run(tmp_path, tiny_model_dir)
    (run.folder / "evaluation").mkdir()
    (run.folder / "evaluation" / "final.json").write_text('{"d_test": ')
    out = tmp_path / "report"
    command = [sys.executable, "-m", "sv_soar.cli", "report", str(run.folder), "--out", str(out)]
    refused = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert refused.returncode == 2 and "final.json: not valid JSON" in refused.stdout
    blind = subprocess.run(command + ["--training-only"], capture_output=True, text=True, timeout=120)
    assert blind.returncode == 0, blind.stdout + blind.stderr[-2000:]
    markdown = (out / "report.md").read_text()
    assert "Not read: this report is of the training side only" in markdown and "--training-only" in markdown
    assert "| not read |" in markdown and "D_test" not in markdown.split("## Final evaluation")[1].split("##")[0]


def test_hard_only_trains_on_d_train_when_the_config_says_pq_alone(tmp_path, tiny_model_dir):
    """evaluation.train_on = "pq" (experiments/mechanism/config-try10.toml, every method's final student on its own
    set): Hard-only promotes nothing, so its own set is D_train, and its compute-matched steps count SOAR's the same
    way. Before, its evaluation stopped with "the run promoted no questions"."""
    from sv_soar.evaluation.final import final_evaluation

    run = make_run(tmp_path, tiny_model_dir, evaluation={"train_on": "pq"})
    report = final_evaluation(open_run(run.folder), seeds=[0], samples=1, steps=1, curriculum=False,
                              score_base=False, progress=False)
    assert report["method"] == "hard-only" and report["d_train"] == 4 and report["promoted_questions"] == 0
    assert report["train_on"] == "pq+d_train" and report["seeds"][0]["train_rows"] == 4


def test_a_soar_run_that_promoted_nothing_has_the_untrained_student_as_its_final_student_on_pq_alone(
        tmp_path, tiny_model_dir):
    """evaluation.train_on = "pq" and a run that never promoted (a SOAR seed of the mechanism comparison may): its
    final students are the untrained student, scored seed by seed, and a compute-matched Hard-only counts its
    outer loop's steps alone. Before, `sv-soar evaluate` stopped ("the run promoted no questions"), and with it
    the comparison's lane, hours before its end."""
    from sv_soar.evaluation.final import compute_matched_steps, final_evaluation, render_summary
    from sv_soar.evaluation.report import write_report
    from sv_soar.jsonl import write_jsonl

    run = make_run(tmp_path, tiny_model_dir, method="soar", evaluation={"train_on": "pq", "steps": 2})
    write_jsonl(run.folder / "steps.jsonl", [{"step": 1, "student_steps": 3}])
    report = final_evaluation(open_run(run.folder), seeds=[0, 1], samples=2, steps=None, curriculum=False,
                              progress=False)
    assert report["steps"] == 0 and report["promoted_questions"] == 0
    assert [(s["train_rows"], s["steps"], s["train_log"]) for s in report["seeds"]] == [(0, 0, []), (0, 0, [])]
    assert report["seeds"][0]["sets"]["d_test"] == report["base"]["d_test"]  # the base, drawn with seed 0 alike
    assert report["summary"]["d_test"]["pass@1"]["seeds"] == 2
    assert not (run.folder / "evaluation" / "seed-0").exists()  # no student to save
    assert "the untrained student (nothing promoted to train on)" in render_summary(report)
    markdown = write_report([run.folder], tmp_path / "report", command="sv-soar report ...").read_text()
    assert "| soar (PQ only) |" in markdown
    assert compute_matched_steps(run.folder) == 3


@pytest.mark.slow
def test_a_compute_matched_student_trains_the_matched_count_whatever_evaluation_steps_says(tmp_path, tiny_model_dir):
    """experiments/mechanism/run-comparison.sh: a config whose evaluation.steps is every method's final student's
    (80), with --set evaluation.compute_matched_to=SOAR_RUN. The matched student trains SOAR's count; before,
    `sv-soar evaluate` passed the config's steps as if given on the command line and the "compute-matched"
    student trained 80 steps (found in a dry run of the comparison's matched command). --steps with it is refused."""
    soar = make_run(tmp_path, tiny_model_dir, promoted=generate_e1_flows(3, seed=7), folder="soar",
                    evaluation={"steps": 2})
    (soar.folder / "steps.jsonl").write_text('{"step": 1, "student_steps": 3}\n')
    matched = make_run(tmp_path, tiny_model_dir, folder="matched",
                       evaluation={"steps": 1, "compute_matched_to": str(soar.folder)})
    command = [sys.executable, "-m", "sv_soar.cli", "evaluate", str(matched.folder), "--seeds", "0", "--samples", "1",
               "--no-base"]
    refused = subprocess.run(command + ["--steps", "4"], capture_output=True, text=True, timeout=300)
    assert refused.returncode == 2 and "both set the final students' steps" in refused.stdout
    result = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout + result.stderr[-2000:]
    report = json.loads((matched.folder / "evaluation" / "final.json").read_text())
    assert report["steps"] == 5 and len(report["seeds"][0]["train_log"]) == 5  # 3 in the loop + SOAR's final 2
    assert report["compute_matched_to"] == str(soar.folder)


def test_the_final_students_steps_follow_one_precedence(tmp_path, tiny_model_dir):
    """final_student_steps: nothing to train on → 0 (whatever else is asked); --steps; a compute-matched run's count
    over evaluation.steps; evaluation.steps; epochs. --steps with compute_matched_to is refused before any model
    loads, and the matched count takes SOAR's final student as its final.json records it."""
    from sv_soar.evaluation.final import compute_matched_steps, final_evaluation, final_student_steps

    soar = make_run(tmp_path, tiny_model_dir, promoted=generate_e1_flows(3, seed=7), folder="soar",
                    evaluation={"steps": 2})
    (soar.folder / "steps.jsonl").write_text('{"step": 0, "student_steps": 3}\n')
    matched = make_run(tmp_path, tiny_model_dir, folder="matched",
                       evaluation={"steps": 1, "compute_matched_to": str(soar.folder)})
    by_epochs = make_run(tmp_path, tiny_model_dir, folder="epochs", evaluation={"epochs": 2.0})
    rows = [list(generate_e1_flows(5, seed=1))]
    assert final_student_steps(matched.config, [], 4) == 0
    assert final_student_steps(soar.config, rows, 4) == 4
    assert final_student_steps(matched.config, rows) == 5  # 3 in SOAR's loop + its final student's 2
    assert final_student_steps(soar.config, rows) == 2
    assert final_student_steps(by_epochs.config, rows) == 5  # ceil(2 epochs · 5 rows / 2 prompts a step)
    with pytest.raises(RunDirError, match="both set the final students' steps"):
        final_evaluation(open_run(matched.folder), seeds=[0], samples=1, steps=4, curriculum=False, progress=False)
    (soar.folder / "evaluation").mkdir()
    (soar.folder / "evaluation" / "final.json").write_text('{"steps": 9}')  # evaluated with --steps 9
    assert compute_matched_steps(soar.folder) == 12
    (soar.folder / "evaluation" / "final.json").write_text('{"steps": "nine"}')
    with pytest.raises(RunDirError, match="'steps' is 'nine'"):
        compute_matched_steps(soar.folder)
