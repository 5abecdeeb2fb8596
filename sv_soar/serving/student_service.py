"""`sv-soar serve-students`: SOAR's student runs as an HTTP service, and `RemoteScorer`, its client.

A hosted environment server may have no GPU (docs/design.md §5): the teacher rubric's `students_url` sends
each outer step's datasets here, where a GroundedScorer (local or Ray backend) trains the r students
of every X_k and answers R_k. The client has GroundedScorer's `score`, so the rubric does not change.

    POST /v1/jobs                 {job_id, task, datasets, q_r, baseline, seed, promoted, keep_adapters}
                                  -> 202 queued; the same job_id and body again -> 200, its status
                                  (a retried request never trains twice; only a failed job runs again);
                                  another body -> 409
    GET  /v1/jobs/ID              {status: queued|running|done|failed, position, result | error}
    GET  /v1/jobs/ID/adapters/K/J the weights of student J of dataset K (safetensors), keep_adapters only
    PUT  /v1/baselines/ID         a promoted baseline's LoRA weights (safetensors); ID is Baseline.id
    GET  /v1/info                 model, task, r, grounding, the student config, the queue
    GET  /stats, /metrics         queue depth, jobs by status, HTTP requests in flight (JSON; Prometheus text)
    GET  /health                  no token needed

Safety: a bearer token is required on every /v1 route (the service refuses to start without one),
it binds 127.0.0.1 unless told otherwise, request bodies are size-limited (jobs and baselines
separately), the queue is bounded (503 with Retry-After when full), and every refused request names the field
at fault. The HTTP front is FastAPI on uvicorn (`sv_soar.serving.http_server`). A job outlives the connection
that submitted it (clients poll, and retry a lost connection with the same job id), so a client hanging up
does not withdraw its job.
Jobs run one at a time, in arrival order, on the one model. Finished jobs are kept in `--store`
(result.json and the kept adapters), so a restarted service still answers a job id it ran before.

Adapters stay on the service until read: a kept student's `adapter_state` on the client is a
`RemoteAdapterState` that downloads on first use, since promotion reads only one student's weights a
step (sv_soar.promotion.median_student) and a 3B model's LoRA weights are ~100 MB a student.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import os
import queue
import re
import signal
import sys
import tempfile
import threading
import time
from collections import deque
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sv_soar.jsonl import write_text_atomic
from sv_soar.serving.openai_protocol import ApiError

log = logging.getLogger("sv_soar.serve_students")

TOKEN_ENV = "SV_SOAR_STUDENTS_TOKEN"
JOB_ID = re.compile(r"(?!\.{1,2}$)[A-Za-z0-9._-]{1,128}")  # a folder name under the store: never . or ..
BASELINE_ID = re.compile(r"base|[0-9a-f]{16}")  # Baseline.id: "base" or 16 hex digits of a content hash
JOB_FIELDS = {"job_id", "task", "datasets", "q_r", "baseline", "seed", "promoted", "keep_adapters"}
JOB_STATUSES = ("queued", "running", "done", "failed")
# answers the client retries: the service is busy (503), or a proxy in front of it found it down (502, 504)
RETRIED_STATUSES = {502, 503, 504}


# ------------------------------------------------------------------------------------------- the service


@dataclass(frozen=True)
class ServiceLimits:
    max_request_bytes: int = 16 << 20  # a job: g datasets of n rows and Q_R, as JSON
    max_baseline_bytes: int = 2 << 30  # one LoRA adapter (safetensors); a 3B model's rank-16 one is ~100 MB
    max_queue: int = 64  # jobs waiting (not counting the running one)
    max_datasets: int = 64
    max_rows: int = 4096  # rows of one dataset, and of Q_R
    max_finished_in_memory: int = 256  # finished jobs answered from memory; older ones from the store


@dataclass
class Job:
    job_id: str
    digest: str  # of the request body: the same id with another body is refused
    request: dict[str, Any] = field(repr=False)
    status: str = "queued"  # queued | running | done | failed
    result: list[dict[str, Any]] | None = None
    error: str | None = None
    submitted: float = field(default_factory=time.time)
    seconds: float | None = None

    def view(self, position: int | None) -> dict[str, Any]:
        body: dict[str, Any] = {"job_id": self.job_id, "status": self.status, "seconds": self.seconds}
        if position is not None:
            body["position"] = position
        if self.result is not None:
            body["result"] = self.result
        if self.error is not None:
            body["error"] = self.error
        return body


class StudentService:
    """The job queue in front of one scorer (no HTTP here: `StudentServer` wraps it)."""

    def __init__(self, scorer: Any, store: str | Path, limits: ServiceLimits = ServiceLimits()) -> None:
        from sv_soar.tasks import get_task

        self.scorer, self.limits = scorer, limits
        self.task = scorer.task if not isinstance(scorer.task, str) else get_task(scorer.task)
        self.store = Path(store)
        (self.store / "jobs").mkdir(parents=True, exist_ok=True)
        (self.store / "baselines").mkdir(parents=True, exist_ok=True)
        self._jobs: dict[str, Job] = {}
        self._order: list[str] = []  # queued job ids, for positions
        self._finished: deque[str] = deque()  # done jobs held in memory, oldest first (a days-long run has thousands)
        self._lock = threading.Lock()
        self._queue: queue.Queue[str | None] = queue.Queue()
        self._baselines: dict[str, Any] = {}
        self.trained_jobs = 0  # jobs that reached the scorer (tests check a retry adds none)
        self.refused_busy = 0  # submissions refused with 503: the queue was full
        self._job_seconds: deque[float] = deque(maxlen=16)  # running time of the last jobs, for Retry-After
        self._worker = threading.Thread(target=self._work, name="sv-soar-students", daemon=True)
        self._worker.start()

    def info(self) -> dict[str, Any]:
        with self._lock:
            counts = {s: sum(j.status == s for j in self._jobs.values()) for s in ("queued", "running", "done", "failed")}
        return {"model": self.scorer.model_name, "task": self.task.name, "students": self.scorer.students,
                "grounding": self.scorer.grounding, "config": self.scorer.config.model_dump(), "jobs": counts,
                "limits": vars(self.limits)}

    # --- jobs ---------------------------------------------------------------------------------------

    def submit(self, body: Any) -> tuple[int, dict[str, Any]]:
        request = self._validate(body)
        digest = _digest(request)
        job_id = request["job_id"]
        with self._lock:
            job = self._jobs.get(job_id) or self._stored(job_id)
            if job is not None:
                if job.digest != digest:
                    raise ApiError(f"job_id {job_id!r} was already used for another request; a retry must send "
                                   "the same body (or use a new job_id)", "job_id", status=409, code="job_id_conflict")
                if job.status != "failed":  # queued, running or done: never trained twice
                    return 200, job.view(self._position(job_id))
                # it failed (an error that may not repeat: out of memory, a lost GPU): a retry runs it again
                job.status, job.error = "queued", None
                self._order.append(job_id)
                self._queue.put(job_id)
                return 202, job.view(self._position(job_id))
            if len(self._order) >= self.limits.max_queue:
                self.refused_busy += 1
                raise ApiError(f"the job queue is full ({self.limits.max_queue} waiting); retry later",
                               status=503, type="server_busy")
            job = self._jobs[job_id] = Job(job_id, digest, request)
            self._order.append(job_id)
            self._queue.put(job_id)
            return 202, job.view(self._position(job_id))

    def status(self, job_id: str) -> dict[str, Any]:
        with self._lock:
            job = self._jobs.get(job_id) or self._stored(job_id)
            if job is None:
                raise ApiError(f"no job {job_id!r}", "job_id", status=404, type="not_found_error")
            return job.view(self._position(job_id))

    def adapter(self, job_id: str, k: int, j: int) -> bytes:
        path = self.store / "jobs" / job_id / f"x{k}-s{j}.safetensors"
        if not JOB_ID.fullmatch(job_id) or not path.is_file():
            raise ApiError(f"no kept adapter for student {j} of dataset {k} of job {job_id!r} (was it submitted "
                           "with keep_adapters and did that student finish?)", status=404, type="not_found_error")
        return path.read_bytes()

    def put_baseline(self, baseline_id: str, raw: bytes) -> dict[str, Any]:
        from safetensors.torch import load

        from sv_soar.grounded import Baseline

        if not BASELINE_ID.fullmatch(baseline_id) or baseline_id == "base":
            raise ApiError(f"{baseline_id!r} is not a Baseline.id (16 hex digits)", "baseline", status=400)
        try:
            baseline = Baseline(f"remote-{baseline_id}", load(raw))
        except Exception as exc:  # safetensors raises its own types for a damaged header
            raise ApiError(f"the body is not a safetensors file: {exc}", "body") from None
        if baseline.id != baseline_id:
            raise ApiError(f"these weights hash to {baseline.id}, not {baseline_id}", "baseline", status=400)
        path = self.store / "baselines" / f"{baseline_id}.safetensors"
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_bytes(raw)
        os.replace(tmp, path)
        with self._lock:
            self._baselines = {baseline_id: baseline}  # the newest only: a step uses one
        return {"baseline": baseline_id, "stored": True}

    def stats(self) -> dict[str, Any]:
        with self._lock:
            counts = {s: sum(j.status == s for j in self._jobs.values()) for s in JOB_STATUSES}
            return {"queued": len(self._order), "max_queue": self.limits.max_queue, "jobs": counts,
                    "running": counts["running"], "refused_busy": self.refused_busy, "trained_jobs": self.trained_jobs}

    def retry_after_s(self) -> float:
        """When a queue slot is likely free: the mean running time of the last jobs (10 s before any ran)."""
        with self._lock:
            return sum(self._job_seconds) / len(self._job_seconds) if self._job_seconds else 10.0

    def close(self) -> None:
        self._queue.put(None)
        self._worker.join(timeout=5)

    def _baseline(self, baseline_id: str) -> Any:
        from safetensors.torch import load_file

        from sv_soar.grounded import Baseline

        if baseline_id == "base":
            return Baseline("base")
        with self._lock:
            if baseline_id in self._baselines:
                return self._baselines[baseline_id]
        path = self.store / "baselines" / f"{baseline_id}.safetensors"
        if not path.is_file():
            return None
        baseline = Baseline(f"remote-{baseline_id}", load_file(str(path)))
        with self._lock:
            self._baselines = {baseline_id: baseline}
        return baseline

    def _position(self, job_id: str) -> int | None:
        return self._order.index(job_id) if job_id in self._order else None

    def _stored(self, job_id: str) -> Job | None:
        """A job this store finished before (another run of the service): answered, never re-run."""
        path = self.store / "jobs" / job_id / "result.json"
        if not path.is_file():
            return None
        try:
            saved = json.loads(path.read_text(encoding="utf-8"))
            job = Job(job_id, saved["digest"], {}, status="done", result=saved["result"], seconds=saved["seconds"])
        except (OSError, ValueError, KeyError) as exc:
            log.warning("ignoring unreadable %s (%s)", path, exc)
            return None
        self._jobs[job_id] = job
        self._remember_done(job_id)
        return job

    def _remember_done(self, job_id: str) -> None:
        """Keep the newest done jobs in memory; an older one is dropped and read back from the store
        (result.json) when asked for, so the job table stays bounded however long the service runs."""
        self._finished.append(job_id)
        while len(self._finished) > self.limits.max_finished_in_memory:
            self._jobs.pop(self._finished.popleft(), None)

    def _work(self) -> None:
        while (job_id := self._queue.get()) is not None:
            with self._lock:
                job = self._jobs[job_id]
                self._order.remove(job_id)
                job.status = "running"
            started = time.perf_counter()
            try:
                result = self._run(job)
                status, error = "done", None
            except Exception as exc:  # noqa: BLE001 - a failed job is answered with its cause; the service goes on
                log.exception("job %s failed", job_id)
                result, status, error = None, "failed", f"{type(exc).__name__}: {exc}"[:2000]
            with self._lock:
                job.status, job.result, job.error = status, result, error
                job.seconds = time.perf_counter() - started  # running time, queue wait not included
                self._job_seconds.append(job.seconds)
                if status == "done":  # a failed job keeps its request: a retry runs it again
                    job.request = {}
                    self._remember_done(job_id)

    def _run(self, job: Job) -> list[dict[str, Any]]:
        from safetensors.torch import save_file

        request = job.request
        baseline = self._baseline(request["baseline"])
        if baseline is None:  # checked at submit too; the file may have gone since
            raise ValueError(f"baseline {request['baseline']} is not on this service")
        self.trained_jobs += 1
        scores = self.scorer.score(request["datasets"], request["q_r"], baseline, seed=request["seed"],
                                   promoted=request["promoted"], keep_adapters=request["keep_adapters"])
        folder = self.store / "jobs" / job.job_id
        folder.mkdir(parents=True, exist_ok=True)
        for k, score in enumerate(scores):
            for j, student in enumerate(score.students):
                if student.adapter_state is not None:
                    save_file({n: t.contiguous() for n, t in student.adapter_state.items()},
                              str(folder / f"x{k}-s{j}.safetensors"))
        result = [score.to_dict() for score in scores]
        seconds = time.time() - job.submitted
        write_text_atomic(folder / "result.json", json.dumps({"digest": job.digest, "result": result, "seconds": seconds}))
        return result

    # --- validation: every refusal names its field ----------------------------------------------------

    def _validate(self, body: Any) -> dict[str, Any]:
        if not isinstance(body, dict):
            raise ApiError(f"the body must be a JSON object, got {type(body).__name__}")
        unknown = sorted(set(body) - JOB_FIELDS)
        if unknown:
            raise ApiError(f"unknown field {_shown(unknown[0])}; a job has {sorted(JOB_FIELDS)}", unknown[0][:60])
        for name in ("job_id", "task", "datasets", "q_r", "baseline", "seed"):
            if name not in body:
                raise ApiError(f"{name!r} is required", name)
        job_id = body["job_id"]
        if not isinstance(job_id, str) or not JOB_ID.fullmatch(job_id):
            raise ApiError("'job_id' must be 1-128 characters of A-Z a-z 0-9 . _ -, and not . or ..", "job_id")
        if body["task"] != self.task.name:
            raise ApiError(f"'task' is {_shown(body['task'])}, but this service trains {self.task.name!r} students", "task")
        seed = body["seed"]
        if not isinstance(seed, int) or isinstance(seed, bool) or not 0 <= seed < 2**63:
            raise ApiError("'seed' must be a non-negative integer", "seed")
        flags = {name: body.get(name, False) for name in ("promoted", "keep_adapters")}
        for name, value in flags.items():
            if not isinstance(value, bool):
                raise ApiError(f"{name!r} must be true or false", name)
        baseline = body["baseline"]
        if not isinstance(baseline, str) or not BASELINE_ID.fullmatch(baseline):
            raise ApiError("'baseline' must be \"base\" or a Baseline.id (16 hex digits)", "baseline")
        if self._baseline(baseline) is None:
            raise ApiError(f"baseline {baseline} is not on this service: PUT /v1/baselines/{baseline} first",
                           "baseline", status=409, code="unknown_baseline")
        datasets = body["datasets"]
        if not isinstance(datasets, list) or not 1 <= len(datasets) <= self.limits.max_datasets:
            raise ApiError(f"'datasets' must be a list of 1 to {self.limits.max_datasets} datasets", "datasets")
        rows = [self._rows(d, f"datasets[{k}]") for k, d in enumerate(datasets)]
        return {"job_id": job_id, "task": self.task.name, "datasets": rows, "q_r": self._rows(body["q_r"], "q_r"),
                "baseline": baseline, "seed": seed, **flags}

    def _rows(self, value: Any, where: str) -> list[dict[str, Any]]:
        if not isinstance(value, list) or not 1 <= len(value) <= self.limits.max_rows:
            raise ApiError(f"{where!r} must be a list of 1 to {self.limits.max_rows} rows", where)
        rows = []
        for i, row in enumerate(value):
            try:
                if not isinstance(row, dict) or not isinstance(row.get("question"), str):
                    raise ValueError("a row must be an object with a string 'question'")
                rows.append(self.task.validate_row(row))
            except ValueError as exc:
                raise ApiError(f"{where}[{i}]: {exc}", f"{where}[{i}]") from None
        return rows


def _shown(value: Any, limit: int = 60) -> str:
    """A refused value as its refusal quotes it: repr, cut to `limit` characters (a body may be megabytes)."""
    text = repr(value)
    return text if len(text) <= limit else text[:limit - 3] + "..."


def _digest(request: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(request, sort_keys=True, default=str).encode()).hexdigest()


# ------------------------------------------------------------------------------------------- HTTP


def __getattr__(name: str) -> Any:
    """StudentServer lives in sv_soar.serving.student_server (FastAPI, uvicorn): imported when asked for, so
    RemoteScorer, the client a teacher environment runs, needs neither."""
    if name == "StudentServer":
        from sv_soar.serving.student_server import StudentServer

        return StudentServer
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


# ------------------------------------------------------------------------------------------- the client


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
            from safetensors.torch import load

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
    that, and so on (30 s at most); a job the service lost (404: restarted without its store) is submitted
    again. Anything else that is not a student service's answer (not JSON, the wrong shape, an unknown job
    status, a malformed result) raises StudentServiceError naming the URL and what was wrong, which the
    teacher rubric turns into the floor reward and a counted, logged error (never a silent zero).
    """

    def __init__(self, url: str, task: Any, config: Any, *, token: str | None = None, model: str | None = None,
                 students: int = 4, grounding: str = "correctness", poll_s: float = 1.0,
                 timeout_s: float | None = None, retries: int = 5, retry_backoff_s: float = 0.5) -> None:
        from sv_soar.tasks import get_task

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

    def score(self, datasets: Sequence[Sequence[dict]], q_r: Sequence[dict], baseline: Any, *, seed: int,
              promoted: bool = False, keep_adapters: bool = False) -> list[Any]:
        from sv_soar.reward_cache import problem_content

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

    def _result(self, view: dict[str, Any], job_id: str, count: int) -> list[Any]:
        """A done job's R_k, one DatasetScore a dataset (DatasetScore.from_dict validates every field)."""
        from sv_soar.grounded import DatasetScore

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
        from safetensors.torch import save

        data = save({k: v.contiguous() for k, v in baseline.adapter_state.items()})
        self._request("PUT", f"/v1/baselines/{baseline.id}", raw_body=data)

    def _request(self, method: str, path: str, body: Any = None, *, raw_body: bytes | None = None,
                 raw: bool = False) -> Any:
        """One request, retried with backoff on connection errors and RETRIED_STATUSES (the same job id:
        idempotent); the answer's JSON object (its bytes with `raw`), else StudentServiceError."""
        import httpx

        headers = {"Authorization": f"Bearer {self._token}"}
        content = raw_body if raw_body is not None else (json.dumps(body).encode() if body is not None else None)
        if body is not None:
            headers["Content-Type"] = "application/json"
        where = f"{self.url}: {method} {path}"
        for attempt in range(self.retries + 1):
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
            wait = min(30.0, self.retry_backoff_s * 2**attempt)
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


# ------------------------------------------------------------------------------------------- the command


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from sv_soar.backends import BACKENDS
    from sv_soar.serving.openai_server import _byte_size
    from sv_soar.grounded import GROUNDINGS, PRESETS
    from sv_soar.models import DEFAULT_MODEL

    parser.add_argument("--model", default=DEFAULT_MODEL, help="student model (default: %(default)s)")
    parser.add_argument("--task", default="e1", help="task of the rows (default: %(default)s)")
    parser.add_argument("--preset", choices=PRESETS, default="paper",
                        help="student config: paper (SOAR's inner loop) or cpu (StudentTrainConfig.cpu_small)")
    parser.add_argument("--student", metavar="JSON", default=None,
                        help="student config overrides as a JSON object, e.g. '{\"steps\": 3}'")
    parser.add_argument("--students", type=int, default=4, help="r, students a dataset (SOAR: 4)")
    parser.add_argument("--grounding", choices=GROUNDINGS, default="correctness")
    parser.add_argument("--time-limit", type=float, metavar="S", help="seconds a student run may take")
    parser.add_argument("--backend", choices=BACKENDS, default="local", help="where students train (default: local)")
    parser.add_argument("--ray-address", default=None, help="with --backend ray: the cluster (default: start one)")
    parser.add_argument("--ray-actors", type=int, default=None, help="with --backend ray: actors (default: one a GPU)")
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default: loopback only)")
    parser.add_argument("--port", type=int, default=8100, help="port; 0 picks a free one (default %(default)s)")
    parser.add_argument("--port-file", type=Path, default=None, help="also write the bound port here")
    parser.add_argument("--token-file", type=Path, default=None,
                        help=f"file holding the bearer token clients must send (default: ${TOKEN_ENV})")
    parser.add_argument("--store", type=Path, default=None,
                        help="folder for finished jobs, kept adapters and baselines (default: a new temp folder)")
    parser.add_argument("--cache", type=Path, default=None, help="reward-cache folder (default: STORE/reward_cache)")
    parser.add_argument("--max-request-bytes", type=_byte_size, default=ServiceLimits.max_request_bytes,
                        help="largest job body, e.g. 16MiB (larger: HTTP 413)")
    parser.add_argument("--max-baseline-bytes", type=_byte_size, default=ServiceLimits.max_baseline_bytes,
                        help="largest baseline upload, e.g. 2GiB")
    parser.add_argument("--max-queue", type=int, default=ServiceLimits.max_queue,
                        help="jobs waiting at most (beyond: 503 with Retry-After)")


def run(args: argparse.Namespace) -> int:
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(name)s: %(message)s")
    from sv_soar.backends import make_scorer
    from sv_soar.serving.http_server import LOOPBACK
    from sv_soar.serving.openai_server import _interrupt, _write_port_file
    from sv_soar.serving.student_server import StudentServer
    from sv_soar.student.config import student_config

    token = args.token_file.read_text().strip() if args.token_file else os.environ.get(TOKEN_ENV, "")
    if not token:
        print(f"sv-soar serve-students: a bearer token is required: --token-file FILE or ${TOKEN_ENV}", file=sys.stderr)
        return 2
    if args.max_queue < 1 or args.students < 1:
        print("sv-soar serve-students: --max-queue and --students must be at least 1", file=sys.stderr)
        return 2
    if args.host not in LOOPBACK:
        log.warning("binding %s: reachable beyond this machine; the token is all that guards it (use TLS in front)",
                    args.host)
    store = args.store or Path(tempfile.mkdtemp(prefix="sv-soar-students-"))
    try:  # JSONDecodeError and pydantic's ValidationError are ValueErrors
        config = student_config(args.preset, json.loads(args.student) if args.student else None)
    except ValueError as exc:
        print(f"sv-soar serve-students: --student: {exc}", file=sys.stderr)
        return 2
    scorer = make_scorer(args.model, args.task, config, backend=args.backend, ray_address=args.ray_address,
                         ray_actors=args.ray_actors, students=args.students, grounding=args.grounding,
                         time_limit_s=args.time_limit, cache_dir=args.cache or store / "reward_cache", progress=False)
    limits = ServiceLimits(max_request_bytes=args.max_request_bytes, max_baseline_bytes=args.max_baseline_bytes,
                           max_queue=args.max_queue)
    service = StudentService(scorer, store, limits)
    server = StudentServer((args.host, args.port), service, token)
    if args.port_file:
        _write_port_file(args.port_file, server.port)
    signal.signal(signal.SIGTERM, _interrupt)
    host = f"[{args.host}]" if ":" in args.host else args.host
    try:
        print(f"sv-soar serve-students: listening on http://{host}:{server.port} (model {args.model}, "
              f"task {args.task}, r={args.students}, store {store})", flush=True)
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
        service.close()
        if hasattr(scorer, "close"):
            scorer.close()
    return 0
