"""`RemoteScorer`: GroundedScorer's `score`, with the students trained by `sv-soar serve-students` on another
machine (sv_soar.serving.student_service: the HTTP protocol); a teacher environment with no GPU sets
students_url and its rubric does not change (docs/design.md §5)."""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import time
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from sv_soar.baseline import Baseline
from sv_soar.scores import DatasetScore
from sv_soar.student.config import refuse_full_finetune
from sv_soar.tasks import get_task

log = logging.getLogger("sv_soar.serve_students")

TOKEN_ENV = "SV_SOAR_STUDENTS_TOKEN"
JOB_STATUSES = ("queued", "running", "done", "failed")
# answers the client retries: the service is busy (503), or a proxy in front of it found it down (502, 504)
RETRIED_STATUSES = {502, 503, 504}
MAX_RETRY_WAIT_S = 30.0  # the longest the client sleeps before one retry, whatever the backoff or Retry-After say


def retry_after_s(value: str | None) -> float | None:
    """A Retry-After header in seconds (the service sends whole seconds when its queue is full), capped at
    MAX_RETRY_WAIT_S; None when absent or not a plain non-negative number (an HTTP date, garbage): then the
    client's own backoff decides."""
    if value is None or len(value) > 16:
        return None
    try:
        seconds = float(value.strip())
    except ValueError:
        return None
    return min(seconds, MAX_RETRY_WAIT_S) if math.isfinite(seconds) and seconds >= 0 else None


def _digest(request: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(request, sort_keys=True, default=str).encode()).hexdigest()


class StudentServiceError(RuntimeError):
    """The service refused a request, failed a job, could not be reached, or answered something that is not
    a student service's answer; the message names the URL and what was wrong."""

    def __init__(self, message: str, *, status: int | None = None, code: str | None = None) -> None:
        super().__init__(message)
        self.status, self.code = status, code


class RemoteAdapterState(Mapping):
    """A kept student's LoRA weights, left on the service until first read (see the module docstring)."""

    def __init__(self, client: "RemoteScorer", job_id: str, k: int, j: int) -> None:
        self._client, self._where, self._state = client, (job_id, k, j), None

    def _load(self) -> dict[str, Any]:
        if self._state is None:
            from safetensors.torch import load  # heavy: safetensors.torch imports torch

            job_id, k, j = self._where
            raw = self._client._request("GET", f"/v1/jobs/{job_id}/adapters/{k}/{j}", raw=True)
            try:
                self._state = load(raw)
            except Exception as exc:  # safetensors raises its own error types for a damaged file
                raise StudentServiceError(f"{self._client.url}: the weights of student {j} of dataset {k} of job "
                                          f"{job_id} are not a safetensors file: {exc}") from None
        return self._state

    def __getitem__(self, key: str) -> Any:
        return self._load()[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._load())

    def __len__(self) -> int:
        return len(self._load())


class RemoteScorer:
    """GroundedScorer's `score`, answered by `sv-soar serve-students` at `url`.

    The job id is a hash of the whole request, so a call retried after a lost connection, or re-run by a
    restarted trainer, finds the job the service already has and never trains its students twice.
    `model`, `students`, `grounding` and `config` must match the service's (checked on first use).

    Faults: a connection error or a 502/503/504 is retried `retries` times, waiting retry_backoff_s, then twice
    that, and so on (30 s at most), or as long as the answer's Retry-After asks when that is longer; a job the
    service lost (404: restarted without its store) is submitted again. Anything else that is not a student
    service's answer (not JSON, the wrong shape, an unknown job status, a malformed result) raises
    StudentServiceError naming the URL and what was wrong, which the teacher rubric turns into the floor reward
    and a counted, logged error (never a silent zero).
    """

    def __init__(self, url: str, task: Any, config: Any, *, token: str | None = None, model: str | None = None,
                 students: int = 4, grounding: str = "correctness", poll_s: float = 1.0,
                 timeout_s: float | None = None, retries: int = 5, retry_backoff_s: float = 0.5) -> None:
        refuse_full_finetune(config, f"compute.students_url = {url!r}")
        token = token or os.environ.get(TOKEN_ENV)
        if not token:
            raise ValueError(f"students_url needs the service's bearer token: pass students_token or set ${TOKEN_ENV}")
        self.url, self._token = url.rstrip("/"), token
        self.task = get_task(task) if isinstance(task, str) else task
        self.config, self.model_name, self.students, self.grounding = config, model, students, grounding
        self.poll_s, self.timeout_s, self.retries, self.retry_backoff_s = poll_s, timeout_s, retries, retry_backoff_s
        self.retried = 0  # requests sent again after a connection error or a 502/503/504 (benchmarks/faults.py)
        self._checked = False
        self.seconds_load = 0.0

    def score(self, datasets: Sequence[Sequence[dict]], q_r: Sequence[dict], baseline: Baseline, *, seed: int,
              promoted: bool = False, keep_adapters: bool = False) -> list[Any]:
        from sv_soar.reward_cache import problem_content  # delayed: sv_soar.reward_cache imports torch

        self._check_service()
        request = {"task": self.task.name, "datasets": [[_wire(r) for r in d] for d in datasets],
                   "q_r": [_wire(r) for r in q_r], "baseline": baseline.id, "seed": seed, "promoted": promoted,
                   "keep_adapters": keep_adapters}
        identity = {**request, "datasets": [[problem_content(r) for r in d] for d in datasets],
                    "q_r": [problem_content(r) for r in q_r], "model": self.model_name}
        job_id = "job-" + _digest(identity)[:32]
        request["job_id"] = job_id
        self._submit(request, baseline)
        view = self._wait(request, baseline)
        scores = self._result(view, job_id, len(datasets))
        if keep_adapters:
            for k, score in enumerate(scores):
                for j, student in enumerate(score.students):
                    if student.failure is None:
                        student.adapter_state = RemoteAdapterState(self, job_id, k, j)
        return scores

    def _submit(self, request: dict[str, Any], baseline: Any) -> None:
        try:
            self._request("POST", "/v1/jobs", request)
        except StudentServiceError as exc:
            if exc.code != "unknown_baseline":
                raise
            self._upload_baseline(baseline)  # once per promoted baseline: the service keeps it by id
            self._request("POST", "/v1/jobs", request)

    def _wait(self, request: dict[str, Any], baseline: Any) -> dict[str, Any]:
        job_id = request["job_id"]
        started = time.monotonic()
        lost = 0
        while True:
            try:
                view = self._request("GET", f"/v1/jobs/{job_id}")
            except StudentServiceError as exc:
                if exc.status != 404:
                    raise
                lost += 1
                if lost > self.retries:  # a restart loses a job once; a service that never keeps it is broken
                    raise StudentServiceError(f"{self.url}: job {job_id} was lost {lost} times right after it was "
                                              f"submitted: {exc}", status=404) from None
                log.warning("%s lost job %s (restarted?); submitting it again", self.url, job_id)
                self._submit(request, baseline)  # the same id: a job it finished before is answered, not re-run
                continue
            status = view.get("status")
            if status == "done":
                return view
            if status == "failed":
                raise StudentServiceError(f"{self.url}: job {job_id} failed: {str(view.get('error'))[:2000]}")
            if status not in JOB_STATUSES:
                raise StudentServiceError(f"{self.url}: GET /v1/jobs/{job_id}: unknown job status {str(status)[:100]!r} "
                                          f"(a student service answers one of {', '.join(JOB_STATUSES)})")
            if self.timeout_s is not None and time.monotonic() - started > self.timeout_s:
                raise TimeoutError(f"{self.url}: job {job_id} not done after {self.timeout_s:g}s ({status})")
            time.sleep(self.poll_s)

    def _result(self, view: dict[str, Any], job_id: str, count: int) -> list[DatasetScore]:
        """A done job's R_k, one DatasetScore a dataset (DatasetScore.from_dict validates every field)."""
        result, where = view.get("result"), f"{self.url}: job {job_id} is done, but its result"
        if not isinstance(result, list) or len(result) != count:
            raise StudentServiceError(f"{where} is not a list of {count} dataset score(s): {str(result)[:200]}")
        try:
            return [DatasetScore.from_dict(entry) for entry in result]
        except (KeyError, TypeError, ValueError, AttributeError, OverflowError) as exc:
            raise StudentServiceError(f"{where} is malformed: {type(exc).__name__}: {str(exc)[:200]}") from None

    def _check_service(self) -> None:
        if self._checked:
            return
        info = self._request("GET", "/v1/info")
        wanted = {"task": self.task.name, "students": self.students, "grounding": self.grounding,
                  "config": self.config.model_dump()}
        if self.model_name is not None:
            wanted["model"] = self.model_name
        for key, value in wanted.items():
            if info.get(key) != value:
                raise StudentServiceError(f"{self.url} trains with {key} = {info.get(key)!r}, but this run asks for "
                                          f"{value!r}: start the service with the run's settings")
        self._checked = True

    def _upload_baseline(self, baseline: Any) -> None:
        from safetensors.torch import save  # heavy: safetensors.torch imports torch

        data = save({k: v.contiguous() for k, v in baseline.adapter_state.items()})
        self._request("PUT", f"/v1/baselines/{baseline.id}", raw_body=data)

    def _request(self, method: str, path: str, body: Any = None, *, raw_body: bytes | None = None,
                 raw: bool = False) -> Any:
        """One request, retried with backoff on connection errors and RETRIED_STATUSES (the same job id:
        idempotent); the answer's JSON object (its bytes with `raw`), else StudentServiceError."""
        import httpx  # heavy: httpx, only the client's requests need it

        headers = {"Authorization": f"Bearer {self._token}"}
        content = raw_body if raw_body is not None else (json.dumps(body).encode() if body is not None else None)
        if body is not None:
            headers["Content-Type"] = "application/json"
        where = f"{self.url}: {method} {path}"
        for attempt in range(self.retries + 1):
            asked = 0.0  # the Retry-After of a busy service's answer: wait at least that
            try:
                response = httpx.request(method, self.url + path, content=content, headers=headers, timeout=300)
            except httpx.TransportError as exc:
                if attempt == self.retries:
                    raise StudentServiceError(f"{where}: {type(exc).__name__}: {exc} (tried {attempt + 1} "
                                              "times)") from exc
                why = f"{type(exc).__name__}: {exc}"
            else:
                if response.status_code not in RETRIED_STATUSES or attempt == self.retries:
                    break
                why = f"HTTP {response.status_code}"
                asked = retry_after_s(response.headers.get("retry-after")) or 0.0
            wait = max(asked, min(MAX_RETRY_WAIT_S, self.retry_backoff_s * 2**attempt))
            log.warning("%s: %s; retrying in %.2fs (%d of %d)", where, why, wait, attempt + 1, self.retries)
            self.retried += 1
            time.sleep(wait)
        if response.status_code >= 400:
            try:
                error = response.json()["error"]
            except (ValueError, KeyError, TypeError):
                error = None
            if not isinstance(error, dict):  # not the service's {"error": {...}}: a proxy's page, a stranger
                error = {"message": response.text[:500]}
            raise StudentServiceError(f"{where}: HTTP {response.status_code}: {str(error.get('message'))[:500]}",
                                      status=response.status_code, code=error.get("code"))
        if raw:
            return response.content
        try:
            answer = response.json()
        except ValueError:  # JSONDecodeError and UnicodeDecodeError
            answer = None
        if not isinstance(answer, dict):
            raise StudentServiceError(f"{where}: HTTP {response.status_code}, but the answer is not a JSON object: "
                                      f"{response.text[:200]!r}", status=response.status_code)
        return answer


def _wire(row: dict) -> dict:
    """A row as JSON sends it (meta may hold numpy scalars from a miner; JSON round trip settles them)."""
    return json.loads(json.dumps(row, default=str))


