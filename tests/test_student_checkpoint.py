"""A long student run stopped partway comes back to the step it had reached (sv_soar.student.checkpoint): on the tiny
real model, a stopped and resumed run ends with the weights and log of a run never stopped, a checkpoint of another
run is set aside rather than resumed, and `sv-soar evaluate`'s final students resume the same way."""

from __future__ import annotations

import logging

import pytest
import torch

from sv_soar.engines.transformers_engine import TransformersEngine
from sv_soar.models import load_model
from sv_soar.run_dir import open_run
from sv_soar.student import trainer
from sv_soar.student.adapters import remove_student_adapter, student_policy
from sv_soar.student.checkpoint import StudentCheckpoint
from sv_soar.student.full_finetune import trainable_copy
from sv_soar.student.trainer import train_student
from sv_soar.tasks.e1.flows import generate_e1_flows
from tests.digits_task import DIGIT_ROWS, DIGITS, TIMING_FIELDS, quiet, toy_config
from tests.tiny_runs import make_run

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py

STEPS = 5


class Stop(Exception):
    """A stop between two steps, as a session's hard end or a kill makes one."""


def stop_at(step):
    def log(entry):
        if entry["step"] == step:
            raise Stop
    return log


def untimed(log):
    return [{k: v for k, v in entry.items() if k not in TIMING_FIELDS} for entry in log]


@pytest.fixture
def shared(tiny_model_dir):
    model, tokenizer = load_model(str(tiny_model_dir))
    policy = student_policy(model, toy_config())
    return policy, TransformersEngine(policy, tokenizer)


def run(policy, engine, config, seed, checkpoint=None, log=quiet, init=None, restored=None):
    try:
        return train_student(policy, engine, DIGITS, DIGIT_ROWS, config, adapter_name="s", seed=seed, steps=STEPS,
                             log=log, checkpoint=checkpoint, init_adapter_state=init, restored=restored)
    finally:
        remove_student_adapter(policy, "s")


def same_weights(a, b):
    return a.keys() == b.keys() and all(torch.equal(a[k], v) for k, v in b.items())


ONE_TOKEN = {"max_new_tokens": 1, "group_size": 8, "batch_prompts": 4, "learning_rate": 3e-2}
VARIANTS = {  # student config, and whether it starts from a promoted baseline
    "generate": ({}, False),  # answers of six tokens: generate, then a forward of their own
    "fused-from-a-baseline": (ONE_TOKEN, True),  # tests/test_fused_rollouts.py; the KL's reference adapter
    "dropout": ({"lora_dropout": 0.3}, False),  # the update's forward draws from torch's global generator
    "full": ({"finetune": "full", "learning_rate": 1e-3}, False),  # every weight of the student's own model
}


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_a_stopped_student_resumes_to_the_weights_and_log_of_a_run_never_stopped(tiny_model_dir, tmp_path, variant,
                                                                                 monkeypatch):
    overrides, from_baseline = VARIANTS[variant]
    config = toy_config(**overrides)
    model, tokenizer = load_model(str(tiny_model_dir))
    policy = student_policy(model, config)
    engine = TransformersEngine(policy, tokenizer)
    if config.finetune == "full":
        engine = engine.over(trainable_copy(policy))
    init = run(policy, engine, config, seed=9).adapter_state if from_baseline else None
    whole = run(policy, engine, config, seed=3, init=init)
    assert any(entry["grad_norm"] > 0 for entry in whole.log)  # the steps move the weights: a real comparison

    kept = run(policy, engine, config, seed=3, init=init, checkpoint=StudentCheckpoint(tmp_path / "kept", every_s=0))
    assert same_weights(kept.adapter_state, whole.adapter_state)  # keeping a checkpoint changes nothing

    checkpoint = StudentCheckpoint(tmp_path / "ckpt", every_s=0)  # saved after every step
    with pytest.raises(Stop):
        run(policy, engine, config, seed=3, init=init, checkpoint=checkpoint, log=stop_at(3))  # step 3 not kept
    assert torch.load(checkpoint.path, weights_only=True)["step"] == 2
    seen = []
    resumed = run(policy, engine, config, seed=3, init=init, checkpoint=checkpoint, log=seen.append)
    assert [entry["step"] for entry in seen] == [1, 2, 3, 4, 5]  # the kept steps' entries first, then the rest
    assert untimed(resumed.log) == untimed(whole.log)
    assert same_weights(resumed.adapter_state, whole.adapter_state)

    # the last step is kept too, without the optimizer: a stop after training (while scoring) trains nothing again
    last = torch.load(checkpoint.path, weights_only=True)
    assert last["step"] == STEPS and last["optimizer"] is None
    trained = []
    scored = trainer.group_rewards
    monkeypatch.setattr(trainer, "group_rewards", lambda *args: trained.append(args[-1]) or scored(*args))
    given, logged = [], []  # a caller that counts restored steps apart (a progress bar's pace) gets them in one call
    again = run(policy, engine, config, seed=3, init=init, checkpoint=checkpoint, log=logged.append,
                restored=given.append)
    assert trained == [] and again.log == resumed.log and same_weights(again.adapter_state, whole.adapter_state)
    assert [[entry["step"] for entry in entries] for entries in given] == [[1, 2, 3, 4, 5]] and logged == []


def test_a_checkpoint_of_another_run_or_one_that_does_not_fit_is_set_aside_not_resumed(shared, tmp_path, caplog):
    policy, engine = shared
    config = toy_config()
    fresh = run(policy, engine, config, seed=4)
    checkpoint = StudentCheckpoint(tmp_path / "ckpt", every_s=0)
    stale = checkpoint.path.with_name("ckpt.stale")

    def seed_3_at_step(step):  # a checkpoint of seed 3's run after `step` steps
        with pytest.raises(Stop):
            run(policy, engine, config, seed=3, checkpoint=checkpoint, log=stop_at(step + 1))

    seed_3_at_step(3)  # the first case's file; the others write theirs over what a case leaves
    seed_4_run = StudentCheckpoint(tmp_path / "seed-4", every_s=0)
    with pytest.raises(Stop):
        run(policy, engine, config, seed=4, checkpoint=seed_4_run, log=stop_at(3))
    mine = torch.load(seed_4_run.path, weights_only=True)
    one_weight_short = {**mine, "params": mine["params"][:-1], "names": mine["names"][:-1]}

    for damage in ("another run", b"not a torch file", one_weight_short):
        if isinstance(damage, bytes):
            checkpoint.path.write_bytes(damage)
        elif isinstance(damage, dict):
            torch.save(damage, checkpoint.path)
        stale.unlink(missing_ok=True)
        with caplog.at_level(logging.WARNING, logger="sv_soar.student"):
            seed_4 = run(policy, engine, config, seed=4, checkpoint=checkpoint)
        assert "not resumed" in caplog.text and stale.is_file()
        assert [e["step"] for e in seed_4.log] == [1, 2, 3, 4, 5]
        assert same_weights(seed_4.adapter_state, fresh.adapter_state)
        caplog.clear()


def test_a_stopped_final_evaluation_resumes_its_students_and_removes_their_checkpoints(tmp_path, tiny_model_dir,
                                                                                       monkeypatch):
    """`sv-soar evaluate --curriculum` (two phases a seed) stopped in seed 1's second phase, after seed 0 was trained
    and scored: run again, it trains only that phase's remaining step (each later phase's fingerprint holds the
    weights the phase before ended with), and writes the report of an evaluation never stopped. (The tiny random model
    earns no E1 reward, so its steps leave the weights as they were: that a resumed run's weights equal an unstopped
    one's where steps move them is the first test's.)"""
    from sv_soar.evaluation import final

    def evaluate(folder):
        return final.final_evaluation(open_run(folder), seeds=[0, 1], samples=2, steps=4, curriculum=True,
                                      score_base=False, progress=False)

    def run_folder(name):
        return make_run(tmp_path / name, tiny_model_dir, promoted=generate_e1_flows(3, seed=7), learning_rate=3e-2).folder

    whole = evaluate(run_folder("whole"))
    folder = run_folder("stopped")

    class StoppingBar:  # counts the students' steps as the real bar does, and stops the evaluation at the 8th
        def __init__(self, *args, **kwargs):
            self.n = 0

        def update(self, n=1):
            self.n += n
            if self.n == 8:  # seed 1, phase 1 (3 promoted flows, then D_train's 4: 2 steps each), step 2
                raise Stop

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False

    with monkeypatch.context() as patch:
        patch.setattr(final, "progress_bar", StoppingBar)
        patch.setattr(StudentCheckpoint, "due", lambda self: True)  # a checkpoint every step, not every 5 minutes
        with pytest.raises(Stop):
            evaluate(folder)
    kept = sorted(p.name for p in (folder / "evaluation").glob("*.checkpoint"))
    assert kept == [f"seed-{s}.phase-{p}.checkpoint" for s in (0, 1) for p in (0, 1)]
    assert torch.load(folder / "evaluation" / kept[-1], weights_only=True)["step"] == 1
    (folder / "evaluation" / "seed-7.phase-0.checkpoint.stale").write_bytes(b"set aside by an earlier run")

    trained = []  # the steps the second run trains: group_rewards scores each trained step's rollouts once
    scored = trainer.group_rewards
    monkeypatch.setattr(trainer, "group_rewards", lambda *args: trained.append(args[-1]) or scored(*args))
    again = evaluate(folder)
    for mine, theirs in zip(again["seeds"], whole["seeds"], strict=True):
        assert untimed(mine["train_log"]) == untimed(theirs["train_log"])
        assert mine["sets"]["d_test"]["successes"] == theirs["sets"]["d_test"]["successes"]
    assert trained == [1]  # seed 1's second phase, its second step (0-based); the rest came back from checkpoints
    assert not list((folder / "evaluation").glob("*checkpoint*"))  # all removed once final.json is written


@pytest.mark.slow  # three real `sv-soar evaluate` processes
def test_sigkill_during_sv_soar_evaluate_then_run_again_ends_as_an_evaluation_never_killed(tmp_path, tiny_model_dir):
    """A session's hard end: `sv-soar evaluate` (a real subprocess) killed with SIGKILL while its final student
    trains, run again: it resumes from the last checkpoint and writes the final.json of an evaluation never killed."""
    import json
    import os
    import signal
    import subprocess
    import sys
    import time

    from tests.killed_runs import REPO

    def evaluate(folder):
        return subprocess.Popen(
            [sys.executable, "-m", "sv_soar.cli", "evaluate", str(folder), "--seeds", "0", "--steps", "20",
             "--samples", "1", "--no-base", "--no-progress", "--checkpoint-every", "0"],
            cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
            env={**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"})

    def finished(folder):
        process = evaluate(folder)
        assert process.wait(timeout=600) == 0, process.stderr.read()[-2000:]
        return json.loads((folder / "evaluation" / "final.json").read_text())

    whole = finished(make_run(tmp_path / "whole", tiny_model_dir).folder)
    folder = make_run(tmp_path / "killed", tiny_model_dir).folder
    checkpoint = folder / "evaluation" / "seed-0.phase-0.checkpoint"
    process = evaluate(folder)
    deadline = time.monotonic() + 300
    while not (checkpoint.exists() and torch.load(checkpoint, weights_only=True)["step"] >= 3):
        assert process.poll() is None and time.monotonic() < deadline, "the evaluation ended before it was killed"
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    assert process.wait(timeout=60) == -signal.SIGKILL
    kept = torch.load(checkpoint, weights_only=True)["step"]
    assert 3 <= kept < 20 and not (folder / "evaluation" / "final.json").exists()

    again = finished(folder)
    assert untimed(again["seeds"][0]["train_log"]) == untimed(whole["seeds"][0]["train_log"])
    assert again["seeds"][0]["sets"]["d_test"]["successes"] == whole["seeds"][0]["sets"]["d_test"]["successes"]
    assert not [p.name for p in (folder / "evaluation").iterdir() if "checkpoint" in p.name]
