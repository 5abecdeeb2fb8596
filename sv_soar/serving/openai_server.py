"""An OpenAI-compatible chat API over one generation engine, on loopback (`sv-soar serve-model` runs it:
sv_soar.commands.serve_model).

vf-eval, verifiers environments and hosted trainers reach models through the OpenAI API; serving the
project's own engine (and its LoRA adapters, one `model` name each) lets them score the embedded model
or a trained student without vLLM.

Endpoints: POST /v1/chat/completions (`stream: true` as server-sent events), GET /v1/models, GET /health,
GET /stats (batching and queue counters), GET /metrics (the same, in Prometheus' text format).
A request is parsed (`openai_protocol`), handed to the `DynamicBatcher` that owns the engine, and answered
when its batch has run. The stack is FastAPI on uvicorn (`http_server`); at most --max-queue requests wait
for the engine, and the next is refused with 503 and Retry-After; a client that hangs up while its request
waits withdraws it.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse

from sv_soar.generation import GenerationEngine, SamplingParams, tokens_over_context
from sv_soar.serving.batching import DynamicBatcher, QueueFull
from sv_soar.serving.http_server import (HttpServer, busy, check_api_key, install_error_handlers,
                                         json_body, prometheus_text, read_body, unless_disconnected)
from sv_soar.serving.openai_protocol import (ApiError, ChatRequest, ChunkStream, ServedModels, chat_completion,
                                             parse_chat_request)


@dataclass(frozen=True)
class ServerConfig:
    models: ServedModels
    api_key: str | None = None  # None: any key (or none) is accepted, as vf-eval sends "EMPTY"
    max_request_bytes: int = 1 << 20
    default_max_tokens: int = SamplingParams().max_new_tokens
    max_n: int = 16


class ModelServer(HttpServer):
    """serve-model's HTTP front over a batcher, bound at construction (`port`), served by serve_forever()."""

    def __init__(self, address: tuple[str, int], config: ServerConfig, batcher: DynamicBatcher):
        self.config, self.batcher, self.started = config, batcher, int(time.time())
        super().__init__(_app(self), address)

    def stats(self) -> dict[str, Any]:
        return {**self.batcher.stats(), **self.http_counts()}


def _app(server: ModelServer) -> Any:
    app = FastAPI(title="sv-soar serve-model", docs_url=None, redoc_url=None, openapi_url=None)
    install_error_handlers(app)
    config, batcher = server.config, server.batcher

    @app.get("/health")
    async def health() -> dict:
        return {"status": "ok"}

    @app.get("/v1/models")
    async def models(request: Request) -> dict:
        check_api_key(request, config.api_key)
        served = config.models
        entries = [{"id": served.base, "object": "model", "created": server.started, "owned_by": "sv-soar",
                    "parent": None}]
        entries += [{"id": name, "object": "model", "created": server.started, "owned_by": "sv-soar",
                     "parent": served.base} for name in served.adapters]
        return {"object": "list", "data": entries}

    @app.get("/stats")
    async def stats(request: Request) -> dict:
        check_api_key(request, config.api_key)
        return server.stats()

    @app.get("/metrics")
    async def metrics(request: Request) -> Response:
        check_api_key(request, config.api_key)
        s = server.stats()
        return prometheus_text([
            ("sv_soar_requests_waiting", "gauge", "requests waiting for the engine", s["queued"]),
            ("sv_soar_max_queue", "gauge", "requests allowed to wait (--max-queue; -1: unbounded)",
             -1 if s["max_queue"] is None else s["max_queue"]),
            ("sv_soar_sequences_running", "gauge", "sequences in the engine call under way", s["running"]),
            ("sv_soar_http_requests_in_flight", "gauge", "HTTP requests being answered", s["http_in_flight"]),
            ("sv_soar_requests_total", "counter", "requests the engine ran", s["requests"]),
            ("sv_soar_requests_failed_total", "counter", "requests the engine failed on", s["failed_requests"]),
            ("sv_soar_requests_refused_busy_total", "counter", "requests refused with 503: queue full",
             s["refused_busy"]),
            ("sv_soar_requests_cancelled_total", "counter", "requests withdrawn by a client that hung up",
             s["cancelled"]),
            ("sv_soar_engine_calls_total", "counter", "batched generate calls", s["engine_calls"]),
            ("sv_soar_generated_tokens_total", "counter", "completion tokens generated", s["generated_tokens"]),
            ("sv_soar_engine_seconds_total", "counter", "seconds spent in generate calls", s["engine_seconds"]),
        ])

    @app.post("/v1/chat/completions")
    async def chat_completions(request: Request) -> Response:
        check_api_key(request, config.api_key)
        body = json_body(await read_body(request, config.max_request_bytes, "--max-request-bytes"))
        chat = parse_chat_request(body, config.models, default_max_tokens=config.default_max_tokens,
                                  max_n=config.max_n)
        _check_context_length(batcher.engine, chat)
        try:
            future = batcher.enqueue(chat.prompt, chat.params, chat.adapter)
        except QueueFull as exc:
            return busy(f"the server is busy: {exc}; retry later", batcher.retry_after_s())
        if chat.stream:
            return StreamingResponse(_events(request, batcher, future, chat), media_type="text/event-stream",
                                     headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
        try:
            answered, completions = await unless_disconnected(request, asyncio.wrap_future(future))
        except Exception as exc:  # the engine failed: say why, keep serving
            raise ApiError(f"{type(exc).__name__}: {exc}", status=500, type="server_error") from None
        finally:
            batcher.cancel(future)  # withdraws it only if it still waits: its client hung up
        if not answered:
            return Response(status_code=499)  # nginx's "client closed request"; nobody reads it
        return JSONResponse(chat_completion(chat.model, completions, chat.tools))

    return app


async def _events(request: Request, batcher: DynamicBatcher, future: Future, chat: ChatRequest) -> AsyncIterator[bytes]:
    """A streamed answer: the role deltas at once, the rest when the batch is done, then [DONE]. An engine
    error after the 200 went out is sent as an {"error": ...} event, as vLLM does (the openai client raises it)."""
    stream = ChunkStream(chat)
    try:
        for chunk in stream.roles():
            yield _event(chunk)
        try:
            answered, completions = await unless_disconnected(request, asyncio.wrap_future(future))
        except Exception as exc:  # noqa: BLE001 - sent to the client, the server goes on
            yield _event(ApiError(f"{type(exc).__name__}: {exc}", status=500, type="server_error").payload())
            answered, completions = True, None
        if not answered:
            return
        for chunk in stream.completed(completions) if completions is not None else ():
            yield _event(chunk)
        yield b"data: [DONE]\n\n"
    finally:
        batcher.cancel(future)


def _event(payload: dict) -> bytes:
    return b"data: " + json.dumps(payload).encode() + b"\n\n"


def _check_context_length(engine: GenerationEngine, request: ChatRequest) -> None:
    """Refuse a prompt the model cannot read whole, as vLLM does and in its words (verifiers reads them
    as an overlong prompt); generating anyway would also hold up every request batched with it."""
    max_tokens = request.params.max_new_tokens
    prompt_tokens = tokens_over_context(engine, request.prompt, max_tokens)
    if prompt_tokens is not None:
        raise ApiError(f"This model's maximum context length is {engine.context_window} tokens. However, you "
                       f"requested {prompt_tokens + max_tokens} tokens ({prompt_tokens} in the messages, {max_tokens} "
                       "in the completion). Please reduce the length of the messages or completion.", "messages",
                       code="context_length_exceeded")


def load_engine(model: str, device: str = "auto") -> GenerationEngine:
    """The engine serve-model serves: the project's transformers engine, on CUDA when there is one (`auto`)."""
    import torch  # heavy: torch, loaded only when a model loads

    from sv_soar.engines.transformers_engine import (  # delayed: sv_soar.engines.transformers_engine imports torch
        TransformersEngine)

    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    return TransformersEngine(model, device=device)
