"""The HTTP front of `sv-soar serve-students` (routes: sv_soar.serving.student_service's docstring): FastAPI on
uvicorn, as serve-model. The service's own calls (validation, the store on disk, safetensors) run in the
threadpool, off the event loop that accepts connections."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from starlette.concurrency import run_in_threadpool

from sv_soar.serving.http_server import (HttpServer, busy, check_api_key, install_error_handlers, json_body,
                                         prometheus_text, read_body)
from sv_soar.serving.openai_protocol import ApiError
from sv_soar.backends.remote import TOKEN_ENV
from sv_soar.serving.student_service import StudentService


class StudentServer(HttpServer):
    """The HTTP front of a StudentService (FastAPI on uvicorn, as serve-model), bound at construction."""

    def __init__(self, address: tuple[str, int], service: StudentService, token: str) -> None:
        if not token:
            raise ValueError(f"a bearer token is required (--token-file or ${TOKEN_ENV})")
        self.service, self.token = service, token
        super().__init__(_app(self), address)

    def stats(self) -> dict[str, Any]:
        return {**self.service.stats(), **self.http_counts()}


def _app(server: StudentServer) -> FastAPI:
    app = FastAPI(title="sv-soar serve-students", docs_url=None, redoc_url=None, openapi_url=None)
    install_error_handlers(app)
    service, token = server.service, server.token

    @app.get("/health")
    async def health() -> dict:
        return {"status": "ok"}

    @app.get("/v1/info")
    async def info(request: Request) -> Response:
        check_api_key(request, token)
        return JSONResponse(await run_in_threadpool(service.info))

    @app.post("/v1/jobs")
    async def submit(request: Request) -> Response:
        check_api_key(request, token)
        body = json_body(await read_body(request, service.limits.max_request_bytes, "--max-request-bytes"))
        try:  # validation of a 16 MiB job and the store's disk reads run off the event loop
            status, view = await run_in_threadpool(service.submit, body)
        except ApiError as exc:
            if exc.status == 503:  # the queue is full
                return busy(str(exc), service.retry_after_s())
            raise
        return JSONResponse(view, status_code=status)

    @app.get("/v1/jobs/{job_id}")
    async def status(request: Request, job_id: str) -> Response:
        check_api_key(request, token)
        return JSONResponse(await run_in_threadpool(service.status, job_id))

    @app.get("/v1/jobs/{job_id}/adapters/{k:int}/{j:int}")
    async def adapter(request: Request, job_id: str, k: int, j: int) -> Response:
        check_api_key(request, token)
        return Response(await run_in_threadpool(service.adapter, job_id, k, j), media_type="application/octet-stream")

    @app.put("/v1/baselines/{baseline_id}")
    async def put_baseline(request: Request, baseline_id: str) -> Response:
        check_api_key(request, token)
        raw = await read_body(request, service.limits.max_baseline_bytes, "--max-baseline-bytes")
        return JSONResponse(await run_in_threadpool(service.put_baseline, baseline_id, raw))

    @app.get("/stats")
    async def stats(request: Request) -> Response:
        check_api_key(request, token)
        return JSONResponse(await run_in_threadpool(server.stats))

    @app.get("/metrics")
    async def metrics(request: Request) -> Response:
        check_api_key(request, token)
        s = await run_in_threadpool(server.stats)
        return prometheus_text([
            ("sv_soar_jobs_waiting", "gauge", "jobs queued (at most --max-queue)", s["queued"]),
            ("sv_soar_max_queue", "gauge", "jobs allowed to wait (--max-queue)", s["max_queue"]),
            ("sv_soar_jobs_running", "gauge", "jobs training students now", s["running"]),
            *[(f"sv_soar_jobs_{name}", "gauge", f"jobs {name} held in memory", s["jobs"][name])
              for name in ("done", "failed")],
            ("sv_soar_http_requests_in_flight", "gauge", "HTTP requests being answered", s["http_in_flight"]),
            ("sv_soar_jobs_refused_busy_total", "counter", "submissions refused with 503: queue full",
             s["refused_busy"]),
            ("sv_soar_jobs_trained_total", "counter", "jobs that reached the scorer", s["trained_jobs"]),
        ])

    return app
