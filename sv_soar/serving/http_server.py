"""The HTTP stack both services run on: FastAPI on uvicorn, the stack vLLM's OpenAI-compatible server uses.

The standard library's ThreadingHTTPServer listens with a backlog of 5: under a few dozen clients at once it
reset a third to a half of their connections (benchmarks/results/serving-load-before.json). uvicorn accepts
on an asyncio loop with a backlog of 2048, and each service bounds the work it queues itself, refusing the
excess with 503 and Retry-After, so a client gets an answer or a status code, never a reset.

`HttpServer` keeps the interface the ThreadingHTTPServer had (bind at construction, `port`, `serve_forever`,
`shutdown`, `server_close`), so the CLI, tests and benchmarks start and stop a service the same way.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import socket
import threading
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response

from sv_soar.serving.openai_protocol import ApiError

logger = logging.getLogger("sv_soar.serving.http")

BACKLOG = 2048  # uvicorn's default, set explicitly: connections the kernel holds while the loop is busy
LOOPBACK = ("127.0.0.1", "localhost", "::1")


class InFlight:
    """ASGI wrapper: counts the HTTP requests being answered, and serves /path/ as /path (the routes the
    ThreadingHTTPServer matched after rstrip("/"))."""

    def __init__(self, app: Callable) -> None:
        self.app, self.count, self.total = app, 0, 0

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path = scope["path"]
        if len(path) > 1 and path.endswith("/"):
            scope = {**scope, "path": path.rstrip("/") or "/"}
        self.count += 1
        self.total += 1
        try:
            await self.app(scope, receive, send)
        finally:
            self.count -= 1


class HttpServer:
    """uvicorn serving `app` on a socket bound here (so a taken port fails at construction, and port 0's
    choice is known before serving starts)."""

    def __init__(self, app: Callable, address: tuple[str, int], *, backlog: int = BACKLOG,
                 graceful_shutdown_s: float = 5.0) -> None:
        import uvicorn  # heavy: uvicorn, loaded only when a server starts

        self.app = app if isinstance(app, InFlight) else InFlight(app)
        app = self.app
        host, port = address
        self.socket = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
        self.socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # a restart reuses its port at once
        try:
            self.socket.bind((host, port))
            self.socket.listen(backlog)
        except OSError:
            self.socket.close()
            raise
        self.server_address = self.socket.getsockname()
        # access_log off: a line a request is noise at hundreds of requests a second; log_config None leaves
        # logging to the CLI's basicConfig (uvicorn's own lines are warnings and errors only, see below)
        config = uvicorn.Config(app, backlog=backlog, access_log=False, log_config=None, lifespan="off",
                                timeout_graceful_shutdown=graceful_shutdown_s, server_header=False)
        logging.getLogger("uvicorn.error").setLevel(logging.WARNING)
        self._server = uvicorn.Server(config)
        self._serving = threading.Event()
        self._stopped = threading.Event()

    def http_counts(self) -> dict[str, int]:
        """HTTP requests being answered now and since the start, for /stats."""
        return {"http_in_flight": self.app.count, "http_requests": self.app.total}

    @property
    def port(self) -> int:
        return self.server_address[1]

    def serve_forever(self) -> None:
        """Serve until shutdown() (or, in the main thread, SIGINT/SIGTERM: uvicorn finishes the requests in
        flight, then re-raises the signal to the handler installed before)."""
        self._serving.set()
        try:
            self._server.run(sockets=[self.socket])
        finally:
            self._stopped.set()

    def shutdown(self, timeout_s: float = 30.0) -> None:
        """Stop serving and wait for serve_forever to return (from another thread)."""
        self._server.should_exit = True
        if self._serving.is_set():
            self._stopped.wait(timeout_s)

    def server_close(self) -> None:
        self.socket.close()


# ------------------------------------------------------------------------------------------- requests


def error_response(error: ApiError, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse(error.payload(), status_code=error.status, headers=headers)


def busy(message: str, retry_after_s: float) -> JSONResponse:
    """503 with Retry-After: the queue is full; the openai client and RemoteScorer retry it."""
    error = ApiError(message, status=503, type="server_busy", code="queue_full")
    return error_response(error, {"Retry-After": str(max(1, round(retry_after_s)))})


def check_api_key(request: Request, key: str | None) -> None:
    """'Authorization: Bearer KEY' exactly, compared in constant time; None accepts any key."""
    if key is None:
        return
    sent = request.headers.get("authorization", "")
    if not hmac.compare_digest(sent.encode(), f"Bearer {key}".encode()):
        raise ApiError("missing or wrong API key: send 'Authorization: Bearer KEY'", status=401, code="invalid_api_key")


class BodyTooLarge(ApiError):
    """413; `close` when the announced body is so large that reading it away is not worth it."""

    def __init__(self, message: str, close: bool) -> None:
        super().__init__(message, status=413)
        self.close = close


async def read_body(request: Request, limit: int, flag: str) -> bytes:
    """The request body, refused from its Content-Length header alone (before any of it is read) with 411
    when there is none and 413 above `limit` bytes."""
    length = request.headers.get("content-length")
    if length is None or not length.isdigit():
        raise ApiError("a request body with a Content-Length header is required", status=411)
    size = int(length)
    if size > limit:
        # up to 16x the limit uvicorn reads the rest away after the answer, so the client sees the 413 (a
        # socket closed on unread data is reset, and the client may never read it); beyond, the connection
        # is closed rather than read for gigabytes
        raise BodyTooLarge(f"request body is {size} bytes; this server accepts at most {limit} ({flag})",
                           close=size > 16 * limit)
    chunks, received = [], 0
    async for chunk in request.stream():
        received += len(chunk)
        if received > size:  # h11 frames the body by Content-Length; this is a second guard
            raise ApiError("request body is longer than its Content-Length", status=400)
        chunks.append(chunk)
    return b"".join(chunks)


def json_body(raw: bytes) -> Any:
    try:
        return json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ApiError(f"request body is not valid JSON: {exc}") from None
    except RecursionError:  # "[[[[...": a client error (400), not a server one (500)
        raise ApiError("request body is not valid JSON: nested too deeply") from None


def install_error_handlers(app: Any) -> None:
    """Every refusal in OpenAI's error shape: ApiError as itself, an unknown route as 404 (405 for a known
    path with another method), anything unexpected as a 500 naming the exception, and the service goes on."""
    @app.exception_handler(ApiError)
    async def _api_error(request: Request, exc: ApiError) -> Response:
        headers = {"Connection": "close"} if isinstance(exc, BodyTooLarge) and exc.close else None
        return error_response(exc, headers)

    @app.exception_handler(HTTPException)
    async def _no_route(request: Request, exc: HTTPException) -> Response:
        if exc.status_code not in (404, 405):
            return error_response(ApiError(str(exc.detail), status=exc.status_code))
        return error_response(ApiError(f"no route {request.method} {request.url.path or '/'}", status=exc.status_code,
                                       type="not_found_error"))

    @app.exception_handler(ClientDisconnect)
    async def _gone(request: Request, exc: ClientDisconnect) -> Response:
        return Response(status_code=499)  # hung up while sending its body: nobody reads this; not our error

    @app.exception_handler(Exception)
    async def _server_error(request: Request, exc: Exception) -> Response:
        logger.error("%s %s failed", request.method, request.url.path, exc_info=exc)
        return error_response(ApiError(f"{type(exc).__name__}: {exc}", status=500, type="server_error"))


async def until_disconnected(request: Request) -> None:
    """Return when the client has gone (uvicorn answers http.disconnect once the body is read and the
    client closes, or once the response is complete)."""
    while (await request.receive())["type"] != "http.disconnect":
        pass


async def unless_disconnected(request: Request, work: Awaitable[Any]) -> tuple[bool, Any]:
    """Await `work` while watching the connection: (True, result), or (False, None) when the client hung up
    first (the caller cancels what it queued)."""
    work = asyncio.ensure_future(work)
    watcher = asyncio.ensure_future(until_disconnected(request))
    try:
        done, _ = await asyncio.wait({work, watcher}, return_when=asyncio.FIRST_COMPLETED)
        if work in done:
            return True, work.result()
        # the caller withdraws the work; if it was already running, its outcome is read here, unlogged
        work.add_done_callback(lambda f: f.cancelled() or f.exception())
        return False, None
    finally:
        watcher.cancel()


# ------------------------------------------------------------------------------------------- metrics


def prometheus_text(metrics: Iterable[tuple[str, str, str, float]]) -> Response:
    """(name, type, help, value) as Prometheus' text exposition format (version 0.0.4)."""
    lines = []
    for name, kind, help_text, value in metrics:
        number = str(int(value)) if float(value).is_integer() else repr(float(value))
        lines += [f"# HELP {name} {help_text}", f"# TYPE {name} {kind}", f"{name} {number}"]
    return Response("\n".join(lines) + "\n", media_type="text/plain; version=0.0.4; charset=utf-8")
