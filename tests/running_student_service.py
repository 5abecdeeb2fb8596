"""`sv-soar serve-students` running in this process: a real StudentServer on a loopback socket, served from a
thread, over a scorer the test builds (so a test can serve the toy task KIND and count what it trains).
Used by the student-service, security and load tests."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import httpx

from sv_soar.serving.student_server import StudentServer
from sv_soar.serving.student_service import ServiceLimits, StudentService

# A job the service accepts: one E1 dataset of one row, that row as Q_R, from the base model.
ROW = {"question": "Device cam-1 observed tcp 1024→23, duration 0.5, bytes 100, flags [S]. Decide: Malicious or "
                   "Benign (you may Abstain if unsure).", "answer": "Malicious"}
JOB = {"job_id": "job-1", "task": "e1", "datasets": [[ROW]], "q_r": [ROW], "baseline": "base", "seed": 0}


class RunningStudentService:
    def __init__(self, scorer: Any, store: str | Path, limits: ServiceLimits = ServiceLimits(), *, token: str) -> None:
        self.token = token
        self.service = StudentService(scorer, store, limits)
        self.server = StudentServer(("127.0.0.1", 0), self.service, token)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()
        self.port = self.server.port
        self.url = f"http://127.0.0.1:{self.port}"

    def client(self, token: str | None = None) -> httpx.Client:
        """An HTTP client sending `token` (default: the service's own; "" sends none)."""
        token = self.token if token is None else token
        return httpx.Client(base_url=self.url, headers={"Authorization": f"Bearer {token}"} if token else {},
                            timeout=60)

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.service.close()

    def __enter__(self) -> "RunningStudentService":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop()
