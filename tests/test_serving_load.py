"""Serving under load, small numbers: 64 clients at once against each service with a queue of 8; every client
gets an answer or a status code (503 with Retry-After beyond the queue), no connection is dropped, and a
client that hangs up while its request waits withdraws it. benchmarks/serving_load.py runs 8 to 512 clients
for RELIABILITY.md."""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any

import httpx
import pytest

from tests.served_model import API_KEY, SERVED, e1_prompt, start_server, stop_server

CLIENTS = 64
MAX_QUEUE = 8


async def at_once(url: str, token: str, requests: list[tuple[str, str, Any]]) -> list[httpx.Response | Exception]:
    """Every request on its own connection, all sent at once; a failed one comes back as its exception."""
    limits = httpx.Limits(max_connections=len(requests), max_keepalive_connections=len(requests))
    async with httpx.AsyncClient(base_url=url, headers={"Authorization": f"Bearer {token}"}, limits=limits,
                                 timeout=httpx.Timeout(300, connect=60)) as client:
        return await asyncio.gather(*(client.request(method, path, json=body) for method, path, body in requests),
                                    return_exceptions=True)


def assert_answered_or_refused(replies: list[httpx.Response | Exception], ok: set[int]) -> tuple[int, int]:
    dropped = [repr(r) for r in replies if isinstance(r, Exception)]
    assert dropped == [], f"{len(dropped)} of {len(replies)} connections dropped: {dropped[:3]}"
    statuses = [r.status_code for r in replies]
    assert set(statuses) <= ok | {503}, statuses
    for reply in replies:
        if reply.status_code == 503:  # a clean refusal: OpenAI's error shape and when to come back
            assert int(reply.headers["retry-after"]) >= 1
            assert reply.json()["error"]["type"] == "server_busy" and reply.json()["error"]["code"] == "queue_full"
    return sum(s in ok for s in statuses), statuses.count(503)


@pytest.fixture(scope="module")
def busy_server(tiny_model_dir, tmp_path_factory):
    """serve-model with a queue of 8 and a 2 s batch window: requests collected in the window still wait for
    the engine and count against the queue, so 64 requests sent at once meet a full queue."""
    served = start_server(tiny_model_dir, tmp_path_factory.mktemp("busy") / "server.log",
                          "--served-model-name", SERVED, "--api-key", API_KEY, "--max-queue", str(MAX_QUEUE),
                          "--batch-window-ms", "2000", "--max-batch-size", "64")
    try:
        yield served
    finally:
        stop_server(served.proc)


@pytest.mark.slow
def test_serve_model_answers_or_refuses_every_client_and_drops_none(busy_server):
    before = busy_server.stats()
    body = {"model": SERVED, "messages": e1_prompt(1), "max_tokens": 8, "temperature": 0}
    replies = asyncio.run(at_once(busy_server.url, API_KEY, [("POST", "/v1/chat/completions", body)] * CLIENTS))
    answered, refused = assert_answered_or_refused(replies, {200})
    assert answered + refused == CLIENTS and answered >= MAX_QUEUE and refused >= 1
    after = busy_server.stats()
    assert after["refused_busy"] - before["refused_busy"] == refused
    assert after["requests"] - before["requests"] == answered and after["queued"] == 0
    with busy_server.client() as client:
        metrics = client.get("/metrics")
        assert metrics.status_code == 200 and metrics.headers["content-type"].startswith("text/plain")
        assert f"sv_soar_requests_refused_busy_total {after['refused_busy']}" in metrics.text.splitlines()
        assert f"sv_soar_max_queue {MAX_QUEUE}" in metrics.text.splitlines()
        assert client.post("/v1/chat/completions", json=body).status_code == 200  # a retry is served


def test_a_client_that_hangs_up_withdraws_its_waiting_request(busy_server):
    before = busy_server.stats()
    body = {"model": SERVED, "messages": e1_prompt(2), "max_tokens": 4, "temperature": 0}
    answered: list[int] = []
    stays = threading.Thread(target=lambda: answered.append(
        httpx.post(f"{busy_server.url}/v1/chat/completions", json=body, timeout=120,
                   headers={"Authorization": f"Bearer {API_KEY}"}).status_code))
    stays.start()
    with pytest.raises(httpx.ReadTimeout):  # gives up inside the 2 s batch window, while its request waits
        httpx.post(f"{busy_server.url}/v1/chat/completions", json=body, timeout=httpx.Timeout(30, read=0.5),
                   headers={"Authorization": f"Bearer {API_KEY}"})
    stays.join()
    after = busy_server.stats()
    assert answered == [200]
    assert after["cancelled"] - before["cancelled"] == 1  # withdrawn: never generated
    assert after["requests"] - before["requests"] == 1


class GatedScorer:
    """Stand-in scorer for the student service: the real trainer takes seconds a job and is not what this
    test is about (the HTTP front and the job queue are); a job runs until the test opens the gate."""

    def __init__(self) -> None:
        self.task, self.gate, self.jobs = "e1", threading.Event(), 0

    def score(self, datasets, q_r, baseline, **kwargs) -> list:
        self.jobs += 1
        self.gate.wait(120)
        return []


def test_serve_students_answers_or_refuses_every_client_and_drops_none(tmp_path):
    from sv_soar.serving.student_service import ServiceLimits
    from tests.running_student_service import JOB, RunningStudentService

    scorer = GatedScorer()
    with RunningStudentService(scorer, tmp_path, ServiceLimits(max_queue=MAX_QUEUE), token=API_KEY) as running:
        jobs = [("POST", "/v1/jobs", {**JOB, "job_id": f"load-{i}"}) for i in range(CLIENTS)]
        replies = asyncio.run(at_once(running.url, API_KEY, jobs))
        accepted, refused = assert_answered_or_refused(replies, {202})
        # MAX_QUEUE wait, and one more if the worker took the first to the gate before the queue filled
        assert MAX_QUEUE <= accepted <= MAX_QUEUE + 1 and accepted + refused == CLIENTS
        queued = next(r.json()["job_id"] for r in replies if r.status_code == 202)  # arrival order is not send order
        polls = asyncio.run(at_once(running.url, API_KEY, [("GET", f"/v1/jobs/{queued}", None)] * CLIENTS))
        assert_answered_or_refused(polls, {200})
        with running.client() as client:
            stats = client.get("/stats").json()
            assert stats["running"] == 1 and stats["queued"] == accepted - 1 and stats["refused_busy"] == refused
            assert f"sv_soar_jobs_waiting {accepted - 1}" in client.get("/metrics").text.splitlines()
            scorer.gate.set()
            deadline = time.monotonic() + 60
            while (stats := client.get("/stats").json())["jobs"]["done"] < accepted and time.monotonic() < deadline:
                time.sleep(0.05)
            assert stats["jobs"]["done"] == scorer.jobs == accepted  # every accepted job ran, once
