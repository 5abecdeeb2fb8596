"""Fault injection in student runs and in the remote student service: each fault ends in a retry or an
explicit, counted failure.

Faults are injected where they happen in a real run: inside the verifier the student trainer calls on
every rollout (a task's score function), on the tiny real model and the real trainer. The toy task is
test_grounded's KIND (a student learns to answer digits); a row's answer names the fault:

    "oom-once"  MemoryError on the first call for that row in this test, then fine (a co-tenant freed memory)
    "oom"       MemoryError every time
    "hang"      a verifier stuck polling something that never comes (a short sleep in a loop, forever)
    "slow"      a verifier that takes slow_s a call (a step runs past the time limit, then returns)
    "boom"      a verifier that raises (KeyError);  "nan": a NaN reward (the student diverges)
    "exit"      the process dies where it stands (a native abort, the OOM killer), every time; "exit-once"
                only the first time (a marker file in `exit_marks`). Only inside a Ray actor
                (tests/test_ray_backend.py): here it would end the test process.

Already covered in test_grounded.py: a verifier that raises (KeyError), a NaN reward (divergence), a
run past its time limit between steps. Never a silent zero: a failed student has reward None and its
cause; a dataset with no finished student has R_k None and an error, which the outer loop turns into
the configured floor reward and a counted, logged failure.

The remote student service (`sv-soar serve-students`, RemoteScorer its client): nothing listening; a
service whose HTTP front goes down while a job runs and comes back (ServiceWithOutage); a server that
answers garbage (GARBAGE, a stdlib http.server). The client retries what may pass and ends everything
else in a StudentServiceError naming the URL, which the teacher rubric turns into the floor reward and a
visible error.
"""

from __future__ import annotations

import asyncio
import http.server
import json
import logging
import threading
import time
from typing import Any

import pytest

import sv_soar.student.watchdog as watchdog
import sv_soar.student_runs as student_runs
from sv_soar.baseline import Baseline
from sv_soar.grounded import GroundedScorer
from sv_soar.models import load_model
from sv_soar.backends.remote import RemoteScorer, StudentServiceError
from sv_soar.tasks import Task, get_task
from tests.injected_faults import (
    GARBAGE,
    TOKEN,
    Faults,
    ServiceWithOutage,
    fault_rows,
    garbage_service,
    nothing_listening,
    service_info,
    strip,
)
from tests.kind_task import hard_items, kind_config
from tests.teacher_env_inputs import STUDENT, VALID, group_states, load

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
    from sv_soar.promotion_run import load_state
    from sv_soar.soar_loop import train
    from tests.killed_runs import shared_models, write_config

    model, teacher = shared_models(tmp_path_factory)
    config = load_config(write_config(tmp_path, model, teacher, outer_steps=1),
                         {"soar.retry_backoff_s": 0.01, "soar.floor": -0.5})

    def out_of_memory(*args, **kwargs):
        raise MemoryError("cannot allocate 2147483648 bytes")

    monkeypatch.setattr(student_runs, "train_student", out_of_memory)
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
            with watchdog._hard_deadline(0.001):
                time.sleep(0.001)  # a C call: a fired exception waits for the next bytecode
        except watchdog._StudentHung:
            pass
        time.sleep(0.002)  # nothing pending lands here
    with pytest.raises(watchdog._StudentHung):
        with watchdog._hard_deadline(0.01):
            while True:
                time.sleep(0.001)


# ------------------------------------------------------------------------------- the remote student service


def remote(url: str, task: Task, config: Any, students: int = 1, **kwargs: Any) -> RemoteScorer:
    kwargs = {"poll_s": 0.02, "timeout_s": 60, "retries": 1, "retry_backoff_s": 0.01} | kwargs
    return RemoteScorer(url, task, config, token=TOKEN, students=students, **kwargs)


ROWS = [{"question": "Item 1: write the count.", "answer": "digits"}]


def test_a_service_that_is_down_is_retried_with_backoff_then_an_explicit_error(faults, caplog):
    url = nothing_listening()
    client = remote(url, faults.task(), kind_config(), retries=3, retry_backoff_s=0.05)
    started = time.perf_counter()
    with caplog.at_level(logging.WARNING, logger="sv_soar.serve_students"), \
            pytest.raises(StudentServiceError) as caught:
        client.score([ROWS], ROWS, Baseline("base"), seed=0)
    assert time.perf_counter() - started >= 0.05 + 0.1 + 0.2  # backoff doubles: 0.05 s, 0.1 s, 0.2 s
    assert str(caught.value).startswith(f"{url}: GET /v1/info: ConnectError") and "tried 4 times" in str(caught.value)
    assert client.retried == 3 and caplog.text.count("retrying in") == 3


def test_a_service_down_mid_job_is_retried_and_the_job_trains_once(scorer, tmp_path):
    s = scorer()
    q_r = hard_items(s, n=4)
    [undisturbed] = s.score([q_r[:2]], q_r, Baseline("base"), seed=0)
    flaky = ServiceWithOutage(s, tmp_path / "store", down_s=0.5)
    try:
        client = remote(flaky.url, s.task, s.config, retries=8, retry_backoff_s=0.05)
        [score] = client.score([q_r[:2]], q_r, Baseline("base"), seed=0)
    finally:
        flaky.close()
    assert flaky.outages == 1 and client.retried >= 1  # the polls met the outage and were retried
    assert strip(score) == strip(undisturbed) and flaky.service.trained_jobs == 1  # trained once, same R_k


@pytest.mark.parametrize("kind", sorted(GARBAGE))
def test_a_service_answering_garbage_ends_in_an_explicit_error(kind, faults):
    config = kind_config()
    with garbage_service(kind, service_info(faults.task(), config, students=1)) as url:
        client = remote(url, faults.task(), config)
        with pytest.raises(StudentServiceError) as caught:
            client.score([ROWS], ROWS, Baseline("base"), seed=0)
    message = str(caught.value)
    assert message.startswith(url) and GARBAGE[kind][1] in message, message


def test_the_teacher_gets_the_floor_and_a_visible_error_from_a_garbage_service(hard_set, tmp_path, caplog):
    """The teacher rubric with students_url on a service that says "done" with no result: every rollout gets the
    floor (not 0), the metric scoring_error is 1, the error is logged and kept in the step's record."""
    from sv_soar.student.config import student_config

    model = str(tmp_path / "model")  # the rubric never loads it: the students train on the service
    info = service_info(get_task("e1"), student_config("cpu", STUDENT), 2, model)
    with garbage_service("done-without-result", info) as url:
        env = load(hard_set, model, tmp_path / "run", students_url=url, students_token=TOKEN, floor=-0.5)
        states = group_states(VALID + ["not a problem"] * 6)
        with caplog.at_level(logging.ERROR, logger="sv_soar_teacher"):
            asyncio.run(env.rubric.score_group(states))
    assert [s["reward"] for s in states] == [-0.5] * 10
    assert all(s["metrics"]["scoring_error"] == 1.0 for s in states)
    assert f"StudentServiceError: {url}: job" in caplog.text and "not a list of 2 dataset score(s)" in caplog.text
    (record,) = json.loads((tmp_path / "run" / "state.json").read_text())["history"]
    assert record["reward_hat"] is None and "not a list of 2 dataset score(s)" in record["error"]


def test_a_busy_service_is_retried_after_the_wait_its_retry_after_asks(faults, caplog):
    """503 with Retry-After (the service's answer when its queue is full): the client waits that long, not its
    own shorter backoff, then asks again. A stdlib server on loopback stands in for the busy service; its
    second answer to /v1/info is the real one, and it refuses the job (400) so the call ends there."""
    config = kind_config()
    info = json.dumps(service_info(faults.task(), config, students=1)).encode()
    answers = [(503, {"Retry-After": "1"}, b'{"error": {"message": "queue full"}}'), (200, {}, info)]

    class Handler(http.server.BaseHTTPRequestHandler):
        def answer(self) -> None:
            self.rfile.read(int(self.headers.get("Content-Length") or 0))
            status, headers, body = answers.pop(0) if self.path == "/v1/info" else (400, {}, b'{"error": {}}')
            self.send_response(status)
            for name, value in {**headers, "Content-Length": str(len(body))}.items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(body)

        do_GET = do_POST = answer

        def log_message(self, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        client = remote(f"http://127.0.0.1:{server.server_address[1]}", faults.task(), config, retry_backoff_s=0.01)
        with caplog.at_level(logging.WARNING, logger="sv_soar.serve_students"), \
                pytest.raises(StudentServiceError, match="POST /v1/jobs: HTTP 400"):
            client.score([ROWS], ROWS, Baseline("base"), seed=0)
    finally:
        server.shutdown()
        server.server_close()
    assert client.retried == 1 and "HTTP 503; retrying in 1.00s" in caplog.text and answers == []


def test_retry_after_is_read_with_limits():
    from sv_soar.backends.remote import MAX_RETRY_WAIT_S, retry_after_s

    assert retry_after_s("2") == 2.0 and retry_after_s(" 0.5 ") == 0.5
    assert retry_after_s("99999") == MAX_RETRY_WAIT_S  # a service cannot park the client for a day
    for value in (None, "", "soon", "-1", "nan", "inf", "Wed, 21 Oct 2015 07:28:00 GMT", "1" * 40):
        assert retry_after_s(value) is None, value
