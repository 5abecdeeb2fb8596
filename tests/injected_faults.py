"""Faults injected where they happen in a real run, shared by tests/test_faults.py, tests/test_ray_backend.py and
benchmarks/faults.py: a verifier whose rows name their fault (Faults, on the toy task KIND of tests/kind_task.py),
and the remote student service down, down for a while, or answering garbage."""

from __future__ import annotations

import contextlib
import http.server
import json
import os
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from sv_soar.grounded import GroundedScorer
from sv_soar.serving.student_server import StudentServer
from sv_soar.serving.student_service import StudentService
from sv_soar.tasks import Task
from tests.kind_task import is_kind

FAULTS = {"oom-once", "oom", "hang", "slow", "boom", "nan", "exit-once", "exit"}
TOKEN = "sv-soar-faults-token"


class Faults:
    """The verifier of the fault rows; counts calls so a test can tell a retry from a skip."""

    def __init__(self, exit_marks: Path | None = None) -> None:
        self.calls = {name: 0 for name in FAULTS}
        self.exit_marks = exit_marks  # the folder of "exit-once"'s marker, shared by the actor processes
        self.driver_pid = os.getpid()

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
            if answer in ("exit", "exit-once"):
                self.exit(answer)
            return is_kind(text, {**row, "answer": "digits"})
        return is_kind(text, row)

    slow_s = 0.15

    def exit(self, answer: str) -> None:
        if os.getpid() == self.driver_pid:
            raise RuntimeError("the exit faults run inside Ray actors only: here they would end this process")
        if answer == "exit-once":
            mark = self.exit_marks / "exited-once"
            if mark.exists():
                return
            mark.touch()
        os._exit(1)

    def score(self, text: str, row: dict) -> dict[str, float]:
        if row["answer"] == "nan":  # a verifier bug as it happens: a mean over no findings
            return {"reward": float("nan")}
        return {"reward": float(self.success(text, row))}

    def task(self) -> Task:
        return Task("kind-faults", "Answer with one word.", self.score,
                    lambda text, row: row["answer"] != "nan" and self.success(text, row),
                    lambda row: "all", lambda row: row)


def fault_rows(q_r: list[dict], fault: str) -> list[dict]:
    return [{**row, "answer": fault} for row in q_r[:2]]


def strip(score) -> list:
    return [(s.seed, s.accuracy, s.reward, s.failure, [e["loss"] for e in s.log]) for s in score.students]


def service_info(task: Task, config: Any, students: int, model: str | None = None) -> dict[str, Any]:
    """What `GET /v1/info` of a student service with these settings answers (what RemoteScorer checks)."""
    info = {"task": task.name, "students": students, "grounding": "correctness", "config": config.model_dump()}
    return info | ({"model": model} if model else {})


# What a broken service, a proxy's error page or a stranger on the port answers, by route ("info": GET /v1/info,
# "submit": POST /v1/jobs, "job": GET /v1/jobs/ID; "*": every route; routes not named answer as a service
# would), and the words of the StudentServiceError the client must end in.
GARBAGE: dict[str, tuple[dict[str, tuple[int, bytes]], str]] = {
    "not-json": ({"*": (200, b"<html><body>It works!</body></html>")}, "not a JSON object"),
    "info-a-list": ({"info": (200, b"[]")}, "GET /v1/info: HTTP 200, but the answer is not a JSON object"),
    "submit-a-string": ({"submit": (200, b'"queued"')}, "POST /v1/jobs: HTTP 200, but the answer is not a JSON"),
    "unknown-status": ({"job": (200, b'{"status": "paused"}')}, "unknown job status 'paused'"),
    "done-without-result": ({"job": (200, b'{"status": "done"}')}, "is not a list of 1 dataset score(s): None"),
    "done-malformed-result": ({"job": (200, json.dumps({"status": "done", "result": [
        {"reward": "high", "baseline_accuracy": 0.5, "students": [{"seed": 0}], "error": None, "key": "k",
         "seconds": {}}]}).encode())}, "its result is malformed: KeyError"),
    "job-always-lost": ({"job": (404, b'{"error": {"message": "no job"}}')}, "was lost 2 times"),
    "error-a-string": ({"*": (400, b'{"error": "no"}')}, 'HTTP 400: {"error": "no"}'),
    "http-500": ({"*": (500, b"Internal Server Error")}, "HTTP 500: Internal Server Error"),
}


@contextlib.contextmanager
def garbage_service(kind: str, info: dict[str, Any]) -> Iterator[str]:
    """A stdlib HTTP server on loopback answering GARBAGE[kind] (a fake: the real service never does);
    yields its URL."""
    garbage = GARBAGE[kind][0]
    answers = {"info": (200, json.dumps(info).encode()), "submit": (202, b'{"status": "queued"}'),
               "job": (200, b'{"status": "running"}')}
    answers = {route: garbage.get(route, garbage.get("*", answer)) for route, answer in answers.items()}

    class Handler(http.server.BaseHTTPRequestHandler):
        def answer(self) -> None:
            self.rfile.read(int(self.headers.get("Content-Length") or 0))
            route = "info" if self.path == "/v1/info" else "submit" if self.command == "POST" else "job"
            status, body = answers[route]
            self.send_response(status)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        do_GET = do_POST = do_PUT = answer

        def log_message(self, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def nothing_listening() -> str:
    """The URL of a loopback port nobody listens on (a service that is down)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    return f"http://127.0.0.1:{port}"


class ServiceWithOutage:
    """`sv-soar serve-students` in this process whose HTTP front goes down as each job starts and comes back
    on the same port `down_s` later (a network partition, a restarted proxy); the job runs on. This object is
    the service's scorer: it passes the job to `scorer` after the outage."""

    def __init__(self, scorer: GroundedScorer, store: Path, down_s: float) -> None:
        self.scorer, self.down_s, self.outages = scorer, down_s, 0
        self.service = StudentService(self, store)
        self.server = self._serve(0)
        self.url = f"http://127.0.0.1:{self.server.port}"

    def __getattr__(self, name: str) -> Any:  # task, model_name, students, grounding, config: the scorer's
        return getattr(self.scorer, name)

    def score(self, *args: Any, **kwargs: Any) -> Any:
        port = self.server.port
        self.server.shutdown()
        self.server.server_close()
        time.sleep(self.down_s)
        self.server = self._serve(port)
        self.outages += 1
        return self.scorer.score(*args, **kwargs)

    def _serve(self, port: int) -> StudentServer:
        server = StudentServer(("127.0.0.1", port), self.service, TOKEN)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        return server

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.service.close()
