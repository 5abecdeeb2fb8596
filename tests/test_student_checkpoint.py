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
from sv_soar.student.adapters import remove_student_adapter, student_policy
from sv_soar.student.checkpoint import StudentCheckpoint
from sv_soar.student import trainer
from sv_soar.student.trainer import train_student
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


def run(policy, engine, config, seed, checkpoint=None, log=quiet, init=None):
    try:
        return train_student(policy, engine, DIGITS, DIGIT_ROWS, config, adapter_name="s", seed=seed, steps=STEPS,
                             log=log, checkpoint=checkpoint, init_adapter_state=init)
    finally:
        remove_student_adapter(policy, "s")


# sampled answers of six tokens (generate, then a forward of their own) and one-token answers from a promoted
# baseline (the fused rollouts, tests/test_fused_rollouts.py; the KL's reference adapter)
@pytest.mark.parametrize("one_token", [False, True], ids=["generate", "fused-from-a-baseline"])
def test_a_stopped_student_resumes_to_the_weights_and_log_of_a_run_never_stopped(shared, tmp_path, one_token):
    policy, engine = shared
    one = {"max_new_tokens": 1, "group_size": 8, "batch_prompts": 4, "learning_rate": 3e-2}
    config = toy_config(**one) if one_token else toy_config()
    init = run(policy, engine, toy_config(), seed=9).adapter_state if one_token else None
    whole = run(policy, engine, config, seed=3, init=init)
    assert any(entry["grad_norm"] > 0 for entry in whole.log)  # the steps move the weights: a real comparison

    kept = run(policy, engine, config, seed=3, init=init, checkpoint=StudentCheckpoint(tmp_path / "kept", every_s=0))
    assert all(torch.equal(kept.adapter_state[k], v) for k, v in whole.adapter_state.items())  # keeping changes nothing

    checkpoint = StudentCheckpoint(tmp_path / "ckpt", every_s=0)  # saved after every step
    with pytest.raises(Stop):
        run(policy, engine, config, seed=3, init=init, checkpoint=checkpoint, log=stop_at(3))  # step 3 not kept
    assert torch.load(checkpoint.path, weights_only=True)["step"] == 2
    seen = []
    resumed = run(policy, engine, config, seed=3, init=init, checkpoint=checkpoint, log=seen.append)
    assert [entry["step"] for entry in seen] == [1, 2, 3, 4, 5]  # the kept steps' entries first, then the rest
    assert untimed(resumed.log) == untimed(whole.log)
    assert all(torch.equal(resumed.adapter_state[k], v) for k, v in whole.adapter_state.items())
    assert resumed.seconds >= sum(e["seconds_generation"] + e["seconds_forward_backward"] for e in seen)
    # the run's last step is kept too: a stop after training (while scoring) trains nothing again
    assert torch.load(checkpoint.path, weights_only=True)["step"] == STEPS
    again = run(policy, engine, config, seed=3, init=init, checkpoint=checkpoint, log=stop_at(STEPS + 1))
    assert again.log == resumed.log


def test_a_checkpoint_of_another_run_or_a_damaged_one_is_set_aside_not_resumed(shared, tmp_path, caplog):
    policy, engine = shared
    config = toy_config()
    fresh = run(policy, engine, config, seed=4)
    checkpoint = StudentCheckpoint(tmp_path / "ckpt", every_s=0)
    with pytest.raises(Stop):
        run(policy, engine, config, seed=3, checkpoint=checkpoint, log=stop_at(4))  # seed 3's, at step 3

    for damage in (None, b"not a torch file"):
        if damage is not None:
            checkpoint.path.write_bytes(damage)
        with caplog.at_level(logging.WARNING, logger="sv_soar.student"):
            seed_4 = run(policy, engine, config, seed=4, checkpoint=checkpoint)
        assert "not resumed" in caplog.text and checkpoint.path.with_name("ckpt.stale").is_file()
        assert [e["step"] for e in seed_4.log] == [1, 2, 3, 4, 5]
        assert all(torch.equal(seed_4.adapter_state[k], v) for k, v in fresh.adapter_state.items())
        caplog.clear()


def test_a_stopped_final_evaluation_resumes_its_students_and_removes_their_checkpoints(tmp_path, tiny_model_dir,
                                                                                       monkeypatch):
    """`sv-soar evaluate` stopped in seed 1's training, after seed 0 was trained and scored: run again, it trains only
    seed 1's remaining steps, and writes the report of an evaluation never stopped. (The tiny random model earns no E1
    reward, so its steps leave the weights as they were: that a resumed run's weights equal an unstopped one's where
    steps move them is the first test's.)"""
    from sv_soar.evaluation import final

    def evaluate(folder):
        return final.final_evaluation(open_run(folder), seeds=[0, 1], samples=2, steps=4, curriculum=False,
                                      score_base=False, progress=False)

    whole = evaluate(make_run(tmp_path / "whole", tiny_model_dir, learning_rate=3e-2).folder)
    folder = make_run(tmp_path / "stopped", tiny_model_dir, learning_rate=3e-2).folder

    class StoppingBar:  # counts the students' steps as the real bar does, and stops the evaluation at the 6th
        def __init__(self, *args, **kwargs):
            self.n = 0

        def update(self, n=1):
            self.n += n
            if self.n == 6:
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
    assert kept == ["seed-0.phase-0.checkpoint", "seed-1.phase-0.checkpoint"]
    assert torch.load(folder / "evaluation" / kept[1], weights_only=True)["step"] == 1

    trained = []  # the steps the second run trains: group_rewards scores each trained step's rollouts once
    scored = trainer.group_rewards
    monkeypatch.setattr(trainer, "group_rewards", lambda *args: trained.append(args[-1]) or scored(*args))
    again = evaluate(folder)
    for mine, theirs in zip(again["seeds"], whole["seeds"], strict=True):
        assert untimed(mine["train_log"]) == untimed(theirs["train_log"])
        assert mine["sets"]["d_test"]["successes"] == theirs["sets"]["d_test"]["successes"]
    assert trained == [1, 2, 3]  # seed 1's steps 2-4 (0-based); seed 0 and seed 1's step 1 came back from checkpoints
    assert not list((folder / "evaluation").glob("*.checkpoint*"))  # removed once final.json is written
