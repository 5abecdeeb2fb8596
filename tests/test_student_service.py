"""`sv-soar serve-students` on loopback with the tiny real model: the remote R_k equals in-process scoring
(kept weights and an uploaded promoted baseline included), a retried request never trains twice, and the
service refuses a missing token, oversize bodies and bad fields, naming the field; the teacher rubric's
`students_url` sends its datasets there. The server runs in this process (a real HTTP server on a real
socket) so that the toy task KIND of tests/kind_task.py can be served; one test starts the real CLI."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import httpx
import pytest
import torch

from sv_soar.baseline import Baseline
from sv_soar.grounded import GroundedScorer
from sv_soar.models import load_model
from sv_soar.backends.remote import RemoteAdapterState, RemoteScorer, StudentServiceError
from sv_soar.serving.student_server import StudentServer
from sv_soar.serving.student_service import ServiceLimits
from tests.running_student_service import RunningStudentService
from tests.kind_task import KIND, comparable, flipped, hard_items, kind_config
from tests.teacher_env_inputs import STUDENT, VALID, load, teacher_rubric

REPO = Path(__file__).resolve().parents[1]
TOKEN = "sv-soar-test-token"
LIMITS = ServiceLimits(max_request_bytes=64 * 1024, max_baseline_bytes=4 << 20, max_queue=4)


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


def serve(scorer, store: Path, limits: ServiceLimits = LIMITS) -> RunningStudentService:
    """The student service in this process, with TOKEN and the LIMITS of these tests."""
    return RunningStudentService(scorer, store, limits, token=TOKEN)


@pytest.fixture(scope="module")
def served(tiny_model_dir, tmp_path_factory):
    scorer = GroundedScorer(str(tiny_model_dir), KIND, kind_config(steps=3), students=2, progress=False)
    running = serve(scorer, tmp_path_factory.mktemp("store"))
    yield running
    running.stop()


@pytest.fixture(scope="module")
def local(tiny_model_dir):
    return GroundedScorer(load_model(str(tiny_model_dir)), KIND, kind_config(steps=3), students=2, progress=False)


def remote_scorer(served, **kwargs) -> RemoteScorer:
    return RemoteScorer(served.url, KIND, kind_config(steps=3), token=TOKEN, students=2, poll_s=0.05, **kwargs)


def test_remote_scores_equal_in_process_and_a_retry_never_trains_twice(served, local):
    q_r = hard_items(local, n=6)
    datasets = [q_r[:4], flipped(q_r)[:4]]
    expected = local.score(datasets, q_r, Baseline("base"), seed=5, keep_adapters=True)
    remote = remote_scorer(served)
    got = remote.score(datasets, q_r, Baseline("base"), seed=5, keep_adapters=True)
    assert [comparable(s) for s in got] == [comparable(s) for s in expected]
    assert got[0].reward is not None and got[0].reward > 0  # a real signal
    for mine, theirs in zip(got, expected):  # kept weights come down on first read, equal to local ones
        for a, b in zip(mine.students, theirs.students):
            assert isinstance(a.adapter_state, RemoteAdapterState)
            assert all(torch.equal(a.adapter_state[k], b.adapter_state[k]) for k in b.adapter_state)
    trained = served.service.trained_jobs

    # the same call again (a retried request, a restarted trainer): the service answers, trains nothing
    again = remote_scorer(served).score(datasets, q_r, Baseline("base"), seed=5, keep_adapters=True)
    assert [comparable(s) for s in again] == [comparable(s) for s in expected]
    assert served.service.trained_jobs == trained

    # a promoted baseline: uploaded once by content id, and the service's R_k equals the local one
    promoted = Baseline("promoted", expected[0].students[0].adapter_state)
    want = local.score(datasets[1:], q_r, promoted, seed=6, promoted=True)
    have = remote.score(datasets[1:], q_r, promoted, seed=6, promoted=True)
    assert [comparable(s) for s in have] == [comparable(s) for s in want]
    assert (served.service.store / "baselines" / f"{promoted.id}.safetensors").is_file()
    # and the lazily-read weights work as a baseline (Baseline.id reads them through the mapping)
    assert Baseline("again", got[0].students[0].adapter_state).id == Baseline("x", expected[0].students[0].adapter_state).id


def test_a_restarted_service_answers_finished_jobs_from_its_store(served, local):
    q_r = hard_items(local, n=6)
    remote = remote_scorer(served)
    [first] = remote.score([q_r[:4]], q_r, Baseline("base"), seed=9)
    restarted = serve(served.service.scorer, served.service.store)  # a new process on the same --store
    try:
        [again] = remote_scorer(restarted).score([q_r[:4]], q_r, Baseline("base"), seed=9)
        assert comparable(again) == comparable(first) and restarted.service.trained_jobs == 0
    finally:
        restarted.stop()


def test_the_job_table_stays_bounded_and_older_jobs_are_answered_from_the_store(served, local, tmp_path):
    from dataclasses import replace

    q_r = hard_items(local, n=6)
    running = serve(served.service.scorer, tmp_path / "store", replace(LIMITS, max_finished_in_memory=1))
    try:
        remote = remote_scorer(running)
        [first] = remote.score([q_r[:3]], q_r, Baseline("base"), seed=21)
        remote.score([q_r[:2]], q_r, Baseline("base"), seed=22)
        assert len(running.service._jobs) == 1 and running.service.trained_jobs == 2
        assert all(job.request == {} for job in running.service._jobs.values())  # a done job's rows are let go
        [again] = remote.score([q_r[:3]], q_r, Baseline("base"), seed=21)  # dropped from memory: read from the store
        assert comparable(again) == comparable(first) and running.service.trained_jobs == 2
    finally:
        running.stop()


def test_a_failed_job_runs_again_when_retried(served, local, monkeypatch):
    q_r = hard_items(local, n=6)
    real_score = served.service.scorer.score
    calls = []

    def fails_once(*args, **kwargs):
        calls.append(1)
        if len(calls) == 1:
            raise RuntimeError("CUDA out of memory (simulated)")
        return real_score(*args, **kwargs)

    monkeypatch.setattr(served.service.scorer, "score", fails_once)
    remote = remote_scorer(served)
    with pytest.raises(StudentServiceError, match="simulated"):
        remote.score([q_r[:3]], q_r, Baseline("base"), seed=11)
    [score] = remote.score([q_r[:3]], q_r, Baseline("base"), seed=11)  # the same job id, run again
    assert score.reward is not None and len(calls) == 2


def job(job_id: str = "job-1", **fields) -> dict:
    body = {"job_id": job_id, "task": "kind", "datasets": [[{"question": "Item 1", "answer": "digits"}]],
            "q_r": [{"question": "Item 2", "answer": "digits"}], "baseline": "base", "seed": 0}
    return {**body, **fields}


def test_job_ids_are_idempotent_and_conflicts_named(served):
    with served.client() as client:
        first = client.post("/v1/jobs", json=job("idem-1"))
        assert first.status_code == 202 and first.json()["status"] in ("queued", "running")
        retry = client.post("/v1/jobs", json=job("idem-1"))
        assert retry.status_code == 200 and retry.json()["job_id"] == "idem-1"
        other = client.post("/v1/jobs", json=job("idem-1", seed=1))
        assert other.status_code == 409 and other.json()["error"]["param"] == "job_id"
        assert client.get("/v1/jobs/nope").status_code == 404


def test_token_is_required(served):
    with served.client(token="") as client:
        assert client.get("/health").status_code == 200  # liveness only
        assert client.get("/v1/info").status_code == 401
        assert client.post("/v1/jobs", json=job()).status_code == 401
    with served.client(token="wrong") as client:
        refused = client.post("/v1/jobs", json=job())
        assert refused.status_code == 401 and "Bearer" in refused.json()["error"]["message"]
    with pytest.raises(ValueError, match="bearer token"):
        StudentServer(("127.0.0.1", 0), served.service, "")
    with pytest.raises(ValueError, match="SV_SOAR_STUDENTS_TOKEN"):
        RemoteScorer(served.url, KIND, kind_config(), token=None)


def test_oversize_bodies_are_refused(served):
    with served.client() as client:
        big = job(datasets=[[{"question": "x" * 70_000, "answer": "digits"}]])
        refused = client.post("/v1/jobs", json=big)
        assert refused.status_code == 413 and "--max-request-bytes" in refused.json()["error"]["message"]
        upload = client.put("/v1/baselines/0123456789abcdef", content=b"\0" * (5 << 20))
        assert upload.status_code == 413 and "--max-baseline-bytes" in upload.json()["error"]["message"]
        assert client.get("/v1/info").status_code == 200  # still serving


@pytest.mark.parametrize("fields, param", [
    ({"datasets": [[{"question": "ok", "answer": "digits"}, {"answer": "digits"}]]}, "datasets[0][1]"),
    ({"q_r": []}, "q_r"),
    ({"task": "e1"}, "task"),
    ({"seed": -1}, "seed"),
    ({"baseline": "0123456789abcdef"}, "baseline"),
    ({"keep_adapters": "yes"}, "keep_adapters"),
    ({"job_id": "a/b"}, "job_id"),
    ({"job_id": ".."}, "job_id"),  # a job's folder under the store: ".." would be the store's parent
    ({"job_id": "."}, "job_id"),
    ({"students": 9}, "students"),
])
def test_bad_fields_are_named(served, fields, param):
    with served.client() as client:
        response = client.post("/v1/jobs", json={**job("bad"), **fields})
    assert response.status_code in (400, 409)
    assert response.json()["error"]["param"] == param, response.json()


def test_client_refuses_a_service_with_other_settings(served):
    with pytest.raises(StudentServiceError, match="students = 2"):
        RemoteScorer(served.url, KIND, kind_config(steps=3), token=TOKEN, students=4).score(
            [[{"question": "q", "answer": "digits"}]], [{"question": "q", "answer": "digits"}], Baseline("base"), seed=0)


def test_teacher_rubric_sends_datasets_to_students_url(hard_set, tiny_model_dir, tmp_path):
    from sv_soar.student.config import student_config

    scorer = GroundedScorer(str(tiny_model_dir), "e1", student_config("cpu", STUDENT), students=2, progress=False)
    running = serve(scorer, tmp_path / "store")
    try:
        remote_env = load(hard_set, tiny_model_dir, tmp_path / "remote-run", students_url=running.url,
                          students_token=TOKEN)
        local_env = load(hard_set, tiny_model_dir, tmp_path / "local-run")
        texts = VALID * 2 + ["not a problem"] * 2
        remote = teacher_rubric(remote_env).step.score(texts)
        in_process = teacher_rubric(local_env).step.score(texts)
        assert remote.error is None and running.service.trained_jobs == 1
        assert remote.rewards == in_process.rewards
        assert [comparable(s) for s in remote.scores] == [comparable(s) for s in in_process.scores]
    finally:
        running.stop()


@pytest.mark.slow
def test_cli_refuses_to_start_without_a_token(tiny_model_dir):
    env = {k: v for k, v in __import__("os").environ.items() if k != "SV_SOAR_STUDENTS_TOKEN"}
    proc = subprocess.run([sys.executable, "-m", "sv_soar.cli", "serve-students", "--model", str(tiny_model_dir),
                           "--port", "0"], cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "bearer token is required" in proc.stderr
    bad = subprocess.run([sys.executable, "-m", "sv_soar.cli", "serve-students", "--model", str(tiny_model_dir),
                          "--student", '{"stepz": 1}'], cwd=REPO, env={**env, "SV_SOAR_STUDENTS_TOKEN": "t"},
                         capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and "--student:" in bad.stderr and "stepz" in bad.stderr


@pytest.mark.slow
def test_cli_serves_on_loopback_with_a_token(tiny_model_dir, tmp_path):
    """The real `sv-soar serve-students` subprocess: ready line, loopback, the token, its settings."""
    import os
    import signal

    (tmp_path / "token").write_text(TOKEN + "\n")
    port_file = tmp_path / "port"
    proc = subprocess.Popen([sys.executable, "-m", "sv_soar.cli", "serve-students", "--model", str(tiny_model_dir),
                             "--preset", "cpu", "--student", '{"steps": 1}', "--students", "1", "--port", "0",
                             "--port-file", str(port_file), "--token-file", str(tmp_path / "token"),
                             "--store", str(tmp_path / "store")],
                            cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                            env={**os.environ, "OMP_NUM_THREADS": "1"})
    try:
        ready = proc.stdout.readline()
        assert "listening on http://127.0.0.1:" in ready, ready
        url = f"http://127.0.0.1:{int(port_file.read_text())}"
        assert httpx.get(url + "/v1/info", timeout=30).status_code == 401
        info = httpx.get(url + "/v1/info", headers={"Authorization": f"Bearer {TOKEN}"}, timeout=30).json()
        assert info["model"] == str(tiny_model_dir) and info["task"] == "e1" and info["students"] == 1
        assert info["config"]["steps"] == 1 and info["limits"]["max_request_bytes"] == 16 << 20
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 0
