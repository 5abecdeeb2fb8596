"""`sv-soar serve-students`: SOAR's student runs as an HTTP service (its client, `RemoteScorer`, is
sv_soar.backends.remote; the command line is sv_soar.commands.serve_students).

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

import json
import logging
import os
import queue
import re
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sv_soar.backends.remote import JOB_STATUSES, _digest
from sv_soar.baseline import Baseline
from sv_soar.jsonl import write_text_atomic
from sv_soar.scores import Scorer
from sv_soar.serving.openai_protocol import ApiError
from sv_soar.tasks import get_task

log = logging.getLogger("sv_soar.serve_students")

JOB_ID = re.compile(r"(?!\.{1,2}$)[A-Za-z0-9._-]{1,128}")  # a folder name under the store: never . or ..
BASELINE_ID = re.compile(r"base|[0-9a-f]{16}")  # Baseline.id: "base" or 16 hex digits of a content hash
JOB_FIELDS = {"job_id", "task", "datasets", "q_r", "baseline", "seed", "promoted", "keep_adapters"}


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

    def __init__(self, scorer: Scorer, store: str | Path, limits: ServiceLimits = ServiceLimits()) -> None:
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
        from safetensors.torch import load  # heavy: safetensors.torch imports torch

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
        from safetensors.torch import load_file  # heavy: safetensors.torch imports torch

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
        from safetensors.torch import save_file  # heavy: safetensors.torch imports torch

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
