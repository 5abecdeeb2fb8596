"""Fault injection in the grounded scorer: each fault ends in a retry or an explicit, counted failure.

Faults are injected where they happen in a real run: inside the verifier the student trainer calls on
every rollout (a task's score function), on the tiny real model and the real trainer. The toy task is
test_grounded's KIND (a student learns to answer digits); a row's answer names the fault:

    "oom-once"  MemoryError on the first call for that row in this test, then fine (a co-tenant freed memory)
    "oom"       MemoryError every time
    "hang"      a verifier stuck polling something that never comes (a short sleep in a loop, forever)
    "slow"      a verifier that takes slow_s a call (a step runs past the time limit, then returns)
    "boom"      a verifier that raises (KeyError);  "nan": a NaN reward (the student diverges)

Already covered in test_grounded.py: a verifier that raises (KeyError), a NaN reward (divergence), a
run past its time limit between steps. Never a silent zero: a failed student has reward None and its
cause; a dataset with no finished student has R_k None and an error, which the outer loop turns into
the configured floor reward and a counted, logged failure.
"""

from __future__ import annotations

import logging
import time

import pytest

import sv_soar.grounded as grounded
from sv_soar.grounded import Baseline, GroundedScorer
from sv_soar.models import load_model
from sv_soar.tasks import Task
from tests.test_grounded import hard_items, is_kind, kind_config

FAULTS = {"oom-once", "oom", "hang", "slow", "boom", "nan"}


class Faults:
    """The verifier of the fault rows; counts calls so a test can tell a retry from a skip."""

    def __init__(self) -> None:
        self.calls = {name: 0 for name in FAULTS}

    def success(self, text: str, row: dict) -> bool:
        answer = row["answer"]
        if answer in FAULTS:
            self.calls[answer] += 1
            if answer == "oom" or (answer == "oom-once" and self.calls[answer] == 1):
                raise MemoryError("cannot allocate 2147483648 bytes")  # as torch's CPU allocator says it
            if answer == "hang":
                while True:  # polling a service that never answers
                    time.sleep(0.01)
            if answer == "slow":
                time.sleep(self.slow_s)  # a verifier that is slow, but returns
            if answer == "boom":
                raise KeyError("oracle has no entry for this row")  # a verifier bug
            return is_kind(text, {**row, "answer": "digits"})
        return is_kind(text, row)

    slow_s = 0.15

    def score(self, text: str, row: dict) -> dict[str, float]:
        if row["answer"] == "nan":  # a verifier bug as it happens: a mean over no findings
            return {"reward": float("nan")}
        return {"reward": float(self.success(text, row))}

    def task(self) -> Task:
        return Task("kind-faults", "Answer with one word.", self.score,
                    lambda text, row: row["answer"] != "nan" and self.success(text, row),
                    lambda row: "all", lambda row: row)


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


@pytest.fixture
def faults():
    return Faults()


@pytest.fixture
def scorer(tiny_model_dir, faults):
    def make(**kwargs) -> GroundedScorer:
        kwargs.setdefault("progress", False)
        kwargs.setdefault("students", 1)
        kwargs.setdefault("retry_backoff_s", 0.05)
        return GroundedScorer(load_model(str(tiny_model_dir)), faults.task(), kind_config(steps=2, batch_prompts=2),
                              **kwargs)

    return make


def fault_rows(q_r: list[dict], fault: str) -> list[dict]:
    return [{**row, "answer": fault} for row in q_r[:2]]


def strip(score) -> list:
    return [(s.seed, s.accuracy, s.reward, s.failure, [e["loss"] for e in s.log]) for s in score.students]


def test_out_of_memory_once_is_retried_from_the_same_seed(scorer, faults, tmp_path, caplog):
    plain = scorer()
    q_r = hard_items(plain, n=4)
    [undisturbed] = plain.score([q_r[:2]], q_r, Baseline("base"), seed=0)  # the same rows, no fault
    retrying = scorer(cache_dir=tmp_path)
    with caplog.at_level(logging.WARNING, logger="sv_soar.grounded"):
        [score] = retrying.score([fault_rows(q_r, "oom-once")], q_r, Baseline("base"), seed=0)
    [student] = score.students
    assert student.failure is None and student.attempts == 2  # failed once, passed on the retry
    assert "attempt 1 failed: MemoryError" in caplog.text and "retrying in 0.1s" in caplog.text
    # the retry trains the student an undisturbed run trains: the same seed, the same losses and reward
    assert strip(score) == strip(undisturbed) and score.reward == undisturbed.reward
    assert retrying._cached(score.key, False) is not None  # a result that passed is cached
    assert retrying.engine.loaded_adapters() == ["sv-soar-base"]


def test_out_of_memory_every_time_is_an_explicit_failure_after_the_retries(scorer, faults, tmp_path, caplog):
    s = scorer(students=2, retries=2, cache_dir=tmp_path)
    q_r = hard_items(s, n=4)
    started = time.perf_counter()
    with caplog.at_level(logging.WARNING, logger="sv_soar.grounded"):
        oom, fine = s.score([fault_rows(q_r, "oom"), q_r[:2]], q_r, Baseline("base"), seed=0)
    assert time.perf_counter() - started >= 2 * (0.05 + 0.1)  # backoff 0.05 s, then 0.1 s, for each student
    assert oom.reward is None and oom.n_failed == 2 and "all 2 students failed" in oom.error
    for student in oom.students:
        assert student.failure.startswith("MemoryError: cannot allocate") and student.attempts == 3
        assert student.reward is None and student.accuracy is None  # never a silent zero
    assert fine.reward is not None and fine.n_failed == 0  # the other dataset of the call is scored
    assert caplog.text.count("retrying in") == 4 and "no R_k" in caplog.text
    assert s._cached(oom.key, False) is None  # a failure that may not repeat is not cached
    assert oom.to_dict()["students"][0]["attempts"] == 3  # and the count reaches the JSON the run writes


def test_a_hung_step_is_interrupted_past_the_limit_and_counted(scorer, faults, caplog):
    s = scorer(students=2, time_limit_s=0.3, hang_grace_s=0.5)
    q_r = hard_items(s, n=4)
    started = time.perf_counter()
    with caplog.at_level(logging.WARNING, logger="sv_soar.grounded"):
        (hung,) = s.score([fault_rows(q_r, "hang")], q_r, Baseline("base"), seed=0)
    took = time.perf_counter() - started
    s.time_limit_s = 120.0  # a 0.3 s limit also stops healthy students on a loaded machine: not what this checks
    (fine,) = s.score([q_r[:2]], q_r, Baseline("base"), seed=0)
    assert faults.calls["hang"] == 2  # each student reached the hanging verifier once, and was stopped there
    assert hung.reward is None and hung.n_failed == 2
    for student in hung.students:
        assert student.failure.startswith("StudentTimeout: hung in step 1/2") and "interrupted" in student.failure
        assert student.log == [] and student.attempts == 1  # a hang is not retried
        assert 0.8 - 0.05 <= student.seconds_train < 30.0  # limit + grace (+ a loaded machine), not forever
    assert fine.reward is not None and fine.n_failed == 0  # and the scorer still works afterwards
    assert took < 120 and "StudentTimeout" in caplog.text
    assert s.engine.loaded_adapters() == ["sv-soar-base"]


@pytest.mark.slow
def test_the_outer_loop_shows_failed_students_in_its_step_log_and_teacher_reward(tmp_path_factory, tmp_path,
                                                                                monkeypatch, capsys):
    """`sv-soar train` with every student out of memory (raised where the trainer starts: a real OOM cannot
    be caused safely here): the step is logged with its causes and retries, the teacher gets the floor."""
    from sv_soar.config import load_config
    from sv_soar.jsonl import read_jsonl
    from sv_soar.promotion import load_state
    from sv_soar.soar_loop import train
    from tests.killed_runs import shared_models, write_config

    model, teacher = shared_models(tmp_path_factory)
    config = load_config(write_config(tmp_path, model, teacher, outer_steps=1),
                         {"soar.retry_backoff_s": 0.01, "soar.floor": -0.5})

    def out_of_memory(*args, **kwargs):
        raise MemoryError("cannot allocate 2147483648 bytes")

    monkeypatch.setattr(grounded, "train_student", out_of_memory)
    train(config, tmp_path / "run", progress=False)
    [entry] = read_jsonl(tmp_path / "run" / "steps.jsonl")
    assert entry["R_k"] == [None, None] and entry["R_hat"] is None  # no number stands in for a failed dataset
    assert entry["teacher_rewards"] == [-0.5, -0.5]  # the configured floor, not a silent 0
    assert entry["failed_students"] == 4 and entry["student_retries"] == 4  # 2 datasets x 2 students, 1 retry each
    assert len(entry["student_failures"]) == 4
    assert all("MemoryError: cannot allocate" in f for f in entry["student_failures"])
    assert entry["promoted"] is False
    [record] = load_state(tmp_path / "run" / "state.json").history
    assert record.reward_hat is None and record.dataset_rewards == [None, None]  # not counted toward promotion
    assert "R_k fail fail" in capsys.readouterr().out  # and the printed step line says so


def test_hard_deadline_never_fires_after_its_block():
    # blocks that end just as their deadline passes: the exception is raised inside the block or not at all
    for _ in range(50):
        try:
            with grounded._hard_deadline(0.001):
                time.sleep(0.001)  # a C call: a fired exception waits for the next bytecode
        except grounded._StudentHung:
            pass
        time.sleep(0.002)  # nothing pending lands here
    with pytest.raises(grounded._StudentHung):
        with grounded._hard_deadline(0.01):
            while True:
                time.sleep(0.001)
