"""[logging]: the outer loop's and the student runs' metrics in TensorBoard and in W&B offline mode (no network),
from a real two-dataset outer step of the tiny model (the outer loop's tiny run, tests/tiny_runs.py)."""

from __future__ import annotations

import json

import pytest

from sv_soar.config import parse_config
from sv_soar.soar_loop import train
from sv_soar.tracking import flatten, student_metrics
from tests.tiny_runs import split_hard_set, tiny_config


@pytest.fixture
def hard_set(tmp_path):
    return split_hard_set(tmp_path / "hs")


def test_flatten_keeps_finite_numbers_under_slash_keys():
    entry = {"step": 0, "R_k": [0.5, None, -0.25], "promoted": True, "baseline": "base", "R_hat": None,
             "seconds": {"total": 2.0, "scoring": float("nan")}, "student_failures": ["X_1 student 0: boom"]}
    assert flatten(entry, "outer/") == {"outer/step": 0.0, "outer/R_k/1": 0.5, "outer/R_k/3": -0.25,
                                        "outer/promoted": 1.0, "outer/seconds/total": 2.0}


def test_student_metrics_average_every_inner_step_of_every_run():
    class Student:
        def __init__(self, log):
            self.log = log

    class Score:
        def __init__(self, students):
            self.students = students

    runs = [Score([Student([{"mean_reward": 0.0, "kl": 0.1}, {"mean_reward": 1.0, "kl": 0.3}]), Student([])]),
            Score([Student([{"mean_reward": 0.5, "kl": 0.2}])])]
    metrics = student_metrics(runs)
    assert metrics["student/runs"] == 2  # the failed run with no log is not counted
    assert metrics["student/mean_reward"] == pytest.approx(0.5)
    assert metrics["student/kl"] == pytest.approx(0.2)
    assert metrics["student/final_mean_reward"] == pytest.approx(0.75)


def tracked_config(tiny_model_dir, teacher, hard, **logging):
    config = tiny_config(tiny_model_dir, teacher, hard)
    return parse_config({**config.resolved(), "run": {**config.resolved()["run"], "outer_steps": 1},
                         "logging": logging})


@pytest.mark.slow
def test_tensorboard_gets_outer_and_student_metrics(tmp_path, tiny_model_dir, tiny_teacher_dir, hard_set):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    assert parse_config({"data": {"hard_set": str(hard_set)}}).logging.backend == "none"  # off by default
    config = tracked_config(tiny_model_dir, tiny_teacher_dir, hard_set, backend="tensorboard")
    train(config, tmp_path / "run", progress=False)
    events = EventAccumulator(str(tmp_path / "run" / "tensorboard"))
    events.Reload()
    tags = set(events.Tags()["scalars"])
    assert {"outer/valid_rate", "outer/R_k/1", "outer/R_k/2", "outer/seconds/total", "student/mean_reward",
            "student/runs", "student/seconds_generation"} <= tags
    [runs] = events.Scalars("student/runs")
    assert (runs.step, runs.value) == (1, 4.0)  # g·r = 2·2 student runs at outer step 1
    steps = [json.loads(line) for line in (tmp_path / "run" / "steps.jsonl").read_text().splitlines()]
    [valid] = events.Scalars("outer/valid_rate")
    assert valid.value == pytest.approx(steps[0]["valid_rate"])


@pytest.mark.slow
def test_wandb_offline_writes_the_run_without_network(tmp_path, tiny_model_dir, tiny_teacher_dir, hard_set,
                                                      monkeypatch):
    pytest.importorskip("wandb")
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.setenv("WANDB_API_KEY", "")
    config = tracked_config(tiny_model_dir, tiny_teacher_dir, hard_set, backend="wandb", name="tiny-run")
    train(config, tmp_path / "run", progress=False)
    [offline] = list((tmp_path / "run" / "wandb").glob("offline-run-*/run-*.wandb"))
    [row] = wandb_history(offline)  # one outer step, one point; `wandb sync` would upload it
    assert json.loads(row["outer_step"]) == 1 and json.loads(row["student/runs"]) == 4
    assert "outer/R_k/1" in row and "student/mean_reward" in row


def wandb_history(path) -> list[dict[str, str]]:
    """The history rows of an offline W&B run file, read with wandb's own record reader."""
    from wandb.proto import wandb_internal_pb2
    from wandb.sdk.internal.datastore import DataStore

    store = DataStore()
    store.open_for_scan(str(path))
    rows = []
    while (data := store.scan_data()) is not None:
        record = wandb_internal_pb2.Record()
        record.ParseFromString(data)
        if record.WhichOneof("record_type") == "history":
            rows.append({item.key or "/".join(item.nested_key): item.value_json for item in record.history.item})
    return rows
