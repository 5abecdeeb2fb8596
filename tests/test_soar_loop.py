"""SOAR's outer loop on the tiny real model: steps, the teacher update, resume, config refusal.

A random tiny Llama writes no valid teacher problem, so the teacher is the tiny model after the
format warm start (sv_soar/format_warm_start.py) on four example replies, sampled at temperature
0.5: a real model that writes valid, varied-enough problems. τ = −1 makes every step promote, so promotion, the
baseline hand-over and the teacher update all run.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file

from sv_soar.config import apply_overrides, parse_config
from sv_soar.jsonl import read_jsonl
from sv_soar.models import load_model
from sv_soar.run_dir import RunDirError
from sv_soar.soar_loop import train
from sv_soar.soar_step import learnability, rloo_teacher_advantages
from sv_soar.teacher_policy import Teacher, TeacherSample, teacher_prompt_of
from tests.tiny_runs import split_hard_set, tiny_config

TIMINGS = {"seconds", "teacher_update"}


def test_teacher_rloo_advantages_by_hand():
    # A_k = R_k − mean_{j≠k} R_j
    assert rloo_teacher_advantages([0.3, 0.1, 0.2]) == pytest.approx([0.15, -0.15, 0.0])
    assert rloo_teacher_advantages([0.5]) == [0.0]


def test_the_methods_table_holds_every_method_the_config_accepts():
    """run.method's values and the loop's METHODS are one list: a method added to the config without its row (or
    the other way round) fails here, not in a run."""
    from typing import get_args

    from sv_soar.config import RunSection
    from sv_soar.soar_loop import METHODS

    assert set(METHODS) == set(get_args(RunSection.model_fields["method"].annotation))
    assert [m.name for m in METHODS.values() if m.updates_teacher] == ["soar", "intrinsic-t"]
    assert [m.name for m in METHODS.values() if not m.has_teacher] == ["hard-only"]


def test_learnability_by_hand():
    # s̄ = 0 -> 0; s̄ = 1/4 -> 3/4; s̄ = 1 -> 0
    assert learnability([[False] * 4, [True, False, False, False], [True] * 4]) == pytest.approx(0.25)


@pytest.fixture
def hard_set(tmp_path):
    return split_hard_set(tmp_path / "hs")


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory, tiny_model_dir, tiny_teacher_dir):
    """(config, folder) of the tiny two-step SOAR run, trained once for the tests that only read it or copy it:
    the resume test's uninterrupted run and the pipeline test's SOAR run are the same run."""
    folder = tmp_path_factory.mktemp("tiny-run")
    config = tiny_config(tiny_model_dir, tiny_teacher_dir, split_hard_set(folder / "hs"))
    train(config, folder / "whole", progress=False)
    return config, folder / "whole"


def comparable(folder):
    steps = [{k: v for k, v in entry.items() if k not in TIMINGS} for entry in read_jsonl(folder / "steps.jsonl")]
    state = json.loads((folder / "state.json").read_text())
    teacher = load_file(str(folder / "teacher" / "step-000002" / "adapter_model.safetensors"))
    return steps, state, teacher


@pytest.mark.slow
def test_two_steps_then_resume_equals_an_uninterrupted_run(tmp_path, tiny_run):
    config, whole = tiny_run
    steps, state, teacher = comparable(whole)
    assert [e["step"] for e in steps] == [0, 1]
    first = steps[0]
    assert first["valid"] >= 2 and len(first["R_k"]) == 2 and first["promoted"] is True
    assert set(first["diversity"]) == {"distinct_2", "distinct_3", "pairwise_jaccard_distance"}
    assert state["promotions"] == 2 and len(state["promoted_datasets"]) == 2
    assert (whole / state["baseline"]["folder"] / "adapter_model.safetensors").is_file()
    assert not (whole / "teacher" / "step-000001").exists()  # only the newest checkpoint is kept

    split = tmp_path / "split"
    train(config, split, progress=False, max_steps=1)
    assert json.loads((split / "state.json").read_text())["step"] == 1
    train(config, split, resume=True, progress=False)
    steps2, state2, teacher2 = comparable(split)
    assert steps2 == steps
    assert {k: v for k, v in state2.items()} == state
    assert teacher2.keys() == teacher.keys()
    assert all(torch.equal(teacher[k], teacher2[k]) for k in teacher)


def full_config(tiny_model_dir, tiny_teacher_dir, hard_set):
    """tiny_config with teacher.finetune = student.finetune = "full" (lr 1e-4: 1e-3 on every weight of the
    tiny teacher would wreck the format it was warm-started on)."""
    return parse_config(apply_overrides(tiny_config(tiny_model_dir, tiny_teacher_dir, hard_set).resolved(), {
        "teacher.finetune": "full", "teacher.learning_rate": 1e-4, "student.finetune": "full"}))


def full_checkpoint(folder):
    """A fully fine-tuned run's comparable state: steps, state.json, the teacher's whole model after step 2."""
    steps = [{k: v for k, v in entry.items() if k not in TIMINGS} for entry in read_jsonl(folder / "steps.jsonl")]
    state = json.loads((folder / "state.json").read_text())
    return steps, state, load_file(str(folder / "teacher" / "step-000002" / "model.safetensors"))


@pytest.mark.slow
def test_full_fine_tuning_runs_checkpoints_and_resumes_to_an_uninterrupted_run(tmp_path, tiny_model_dir,
                                                                                tiny_teacher_dir, hard_set):
    """teacher.finetune and student.finetune = "full": every teacher weight trains (checkpointed whole), the
    promoted baseline is a whole student model, and a resumed run ends where an uninterrupted one does."""
    config = full_config(tiny_model_dir, tiny_teacher_dir, hard_set)
    whole = tmp_path / "whole"
    train(config, whole, progress=False)
    steps, state, teacher = full_checkpoint(whole)
    assert [e["step"] for e in steps] == [0, 1] and steps[0]["promoted"] is True
    assert all(None not in e["R_k"] for e in steps)
    baseline = whole / state["baseline"]["folder"]
    assert (baseline / "model.safetensors").is_file() and not (baseline / "adapter_model.safetensors").exists()
    initial, _ = load_model(str(tiny_teacher_dir))
    assert teacher.keys() == initial.state_dict().keys()  # the whole model, no lora_* keys

    split = tmp_path / "split"
    train(config, split, progress=False, max_steps=1)
    assert (split / "teacher" / "step-000001" / "model.safetensors").is_file()
    train(config, split, resume=True, progress=False)
    steps2, state2, teacher2 = full_checkpoint(split)
    assert steps2 == steps and state2 == state
    assert teacher2.keys() == teacher.keys() and all(torch.equal(teacher[k], teacher2[k]) for k in teacher)


@pytest.mark.slow
def test_a_fully_fine_tuned_teacher_moves_every_weight_against_the_initial_model(tmp_path, tiny_model_dir,
                                                                                tiny_teacher_dir, hard_set):
    """teacher.finetune = "full": an update with advantages moves the model's own weights; the KL reference is
    a frozen copy of the initial teacher (so the second update sees KL > 0), and a checkpoint loaded into a
    new Teacher restores the weights while its reference stays the initial model."""
    config = full_config(tiny_model_dir, tiny_teacher_dir, hard_set)
    teacher = Teacher(config)
    initial = {k: v.clone() for k, v in teacher.policy.state_dict().items()}
    prompt_ids = teacher.engine.prompt_token_ids(teacher_prompt_of(config))
    written = [teacher.engine.prompt_token_ids([{"role": "user", "content": text}])[-12:]
               for text in ("Device a observed tcp 1->2", "Decide: Malicious or Benign")]
    sample = TeacherSample(rows=[{}, {}], token_ids=written, prompt_token_ids=prompt_ids, drawn=2, rejected={})
    first = teacher.update(sample, [1.0, -1.0], step=0)
    second = teacher.update(sample, [1.0, -1.0], step=1)
    assert first["grad_norm"] > 0 and first["kl"] == 0 and second["kl"] > 0
    moved = [k for k, v in teacher.policy.state_dict().items() if not torch.equal(v, initial[k])]
    assert any(k.endswith("mlp.up_proj.weight") for k in moved) and any("embed_tokens" in k for k in moved)
    assert all(torch.equal(v, initial[k]) for k, v in teacher.reference.state_dict().items())

    teacher.save(tmp_path / "checkpoint")
    assert (tmp_path / "checkpoint" / "model.safetensors").is_file()
    resumed = Teacher(config)
    resumed.load(tmp_path / "checkpoint")
    assert all(torch.equal(v, teacher.policy.state_dict()[k]) for k, v in resumed.policy.state_dict().items())
    assert all(torch.equal(v, initial[k]) for k, v in resumed.reference.state_dict().items())


@pytest.mark.slow
def test_a_killed_step_is_replayed_from_its_commit(tmp_path, tiny_model_dir, tiny_teacher_dir, hard_set):
    """A step killed after its log line and checkpoint but before state.json: resume redoes it."""
    config = tiny_config(tiny_model_dir, tiny_teacher_dir, hard_set, outer_steps=1)
    folder = tmp_path / "run"
    train(config, folder, progress=False)
    # pretend step 0 never committed: roll state.json back to a fresh state, keep the later files
    state = json.loads((folder / "state.json").read_text())
    steps_before = read_jsonl(folder / "steps.jsonl")
    fresh = {**state, "step": 0, "history": [], "promotions": 0, "promoted_datasets": [],
             "baseline": {"name": "base", "id": "base", "folder": None}, "last_promotion_step": None}
    (folder / "state.json").write_text(json.dumps(fresh))
    train(config, folder, resume=True, progress=False)
    steps_after = read_jsonl(folder / "steps.jsonl")
    assert [e["step"] for e in steps_after] == [0]
    strip = lambda entries: [{k: v for k, v in e.items() if k not in TIMINGS | {"cached_datasets"}} for e in entries]  # noqa: E731
    assert strip(steps_after) == strip(steps_before)
    assert steps_after[0]["cached_datasets"] == 2  # the reward cache spared retraining the students


@pytest.mark.slow
def test_resume_with_another_config_is_refused_with_the_keys(tmp_path, tiny_model_dir, tiny_teacher_dir, hard_set):
    config = tiny_config(tiny_model_dir, tiny_teacher_dir, hard_set, outer_steps=1, method="hard-only")
    folder = tmp_path / "run"
    train(config, folder, progress=False)  # hard-only: the folder only
    assert (folder / "config.toml").is_file() and not (folder / "steps.jsonl").exists()
    toml = tmp_path / "other.toml"
    toml.write_text((folder / "config.toml").read_text().replace("q_r = 4", "q_r = 5"))
    result = subprocess.run([sys.executable, "-m", "sv_soar.cli", "train", "--resume", str(folder), "--config", str(toml)],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    assert "refusing to resume with a different config" in result.stdout and "soar.q_r: 4 != 5" in result.stdout
    with pytest.raises(RunDirError, match="not an sv-soar run folder"):
        train(config, tmp_path, resume=True)


def test_unstuck_reads_the_baseline_and_the_promoted_median_student():
    from sv_soar.soar_loop import _unstuck

    stuck = {"baseline_accuracy": 0.0, "promoted": True, "promoted_dataset": 0, "student_accuracies": [[0.0, 0.25]]}
    assert not _unstuck([stuck])  # median_low of [0, 0.25] is 0
    promoted = {**stuck, "student_accuracies": [[0.25, 0.5]]}
    assert _unstuck([promoted])
    assert _unstuck([{"baseline_accuracy": 0.125}])
    assert not _unstuck([{"error": "the teacher wrote 1 valid problem", "R_k": []}])


@pytest.mark.slow
def test_train_evaluate_report_with_a_compute_matched_hard_only(tmp_path, tiny_model_dir, tiny_teacher_dir, tiny_run):
    """The pipeline `make demo` runs, on tiny models: SOAR, then a Hard-only run matched to its student
    compute, both evaluated, one report comparing them. The SOAR run is the module's tiny run, copied (the
    evaluation writes into its folder)."""
    from sv_soar.evaluation.final import compute_matched_steps, final_evaluation
    from sv_soar.evaluation.report import write_report
    from sv_soar.run_dir import open_run

    config, trained = tiny_run
    soar_dir, hard_dir = tmp_path / "soar", tmp_path / "hard-only"
    shutil.copytree(trained, soar_dir)
    hard_set = config.data.hard_set
    entries = read_jsonl(soar_dir / "steps.jsonl")
    # 2 datasets x 2 students x 1 step (steps_after_promotion is 1 too), twice; the final student: 1 step
    assert [e["student_steps"] for e in entries] == [4, 4]
    # the step log keeps the teacher's problems (question, label) of each dataset, as its class balance counts them
    for e in entries:
        assert [len(d) for d in e["datasets"]] == [sum(b.values()) for b in e["dataset_balance"]]
        assert all(isinstance(q, str) and q for d in e["datasets"] for q, _ in d)
    assert compute_matched_steps(soar_dir) == 9
    matched = tiny_config(tiny_model_dir, tiny_teacher_dir, hard_set, method="hard-only")
    matched.evaluation.compute_matched_to = soar_dir
    train(matched, hard_dir, progress=False)
    for folder in (soar_dir, hard_dir):
        final_evaluation(open_run(folder), seeds=[0], samples=2, steps=None, curriculum=False, progress=False)
    hard_report = json.loads((hard_dir / "evaluation" / "final.json").read_text())
    assert hard_report["steps"] == 9 and hard_report["promoted_questions"] == 0
    assert len(hard_report["seeds"][0]["train_log"]) == 9
    soar_report = json.loads((soar_dir / "evaluation" / "final.json").read_text())
    promoted = sum(len(dataset) for dataset in open_run(soar_dir).promoted_datasets())
    assert promoted > 0 and soar_report["steps"] == 1 and soar_report["promoted_questions"] == promoted
    d_test = open_run(soar_dir).d_test()
    assert soar_report["seeds"][0]["sets"]["d_test"]["labels"] == [row["answer"] for row in d_test]

    markdown = write_report([soar_dir, hard_dir], tmp_path / "report", command="sv-soar report ...").read_text()
    for png in ("pass_at_k.png", "reward.png", "teacher.png"):
        assert (tmp_path / "report" / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "| soar | 1 | 1 |" in markdown and "| hard-only-matched | 1 | 1 |" in markdown  # its own row
    assert "base (untrained)" in markdown and "promotions (step)" in markdown
    assert "| 1, 2 |" in markdown  # both outer steps promoted (tau = -1)
    assert "pass@1 Benign" in markdown and "pass@1 Malicious" in markdown  # the hard set has both labels


def test_report_of_a_folder_that_is_not_a_run_says_so(tmp_path):
    (tmp_path / "junk").mkdir()
    result = subprocess.run([sys.executable, "-m", "sv_soar.cli", "report", str(tmp_path / "junk")],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 2 and "not an sv-soar run folder" in result.stdout
    result = subprocess.run([sys.executable, "-m", "sv_soar.cli", "report", str(tmp_path / "a"), str(tmp_path / "b")],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 2 and "--out" in result.stdout
