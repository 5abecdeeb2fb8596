"""`sv-soar serve-model`: an OpenAI-compatible chat API over one generation engine, on loopback.

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

import argparse
import asyncio
import json
import logging
import os
import re
import signal
import sys
import time
from collections.abc import AsyncIterator
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse

from sv_soar.generation import GenerationEngine, SamplingParams, tokens_over_context
from sv_soar.serving.batching import DynamicBatcher, QueueFull
from sv_soar.serving.http_server import (LOOPBACK, HttpServer, busy, check_api_key, install_error_handlers,
                                         json_body, prometheus_text, read_body, unless_disconnected)
from sv_soar.serving.openai_protocol import (ApiError, ChatRequest, ChunkStream, ServedModels, chat_completion,
                                             parse_chat_request)

logger = logging.getLogger("sv_soar.serve_model")

EMBEDDED_MODEL = "smollm2-135m-instruct"  # docs/design.md §6: the default model, shipped with no download
MAX_QUEUE = 256  # requests waiting for the engine: 16 batches of the default 16, ~10x vf-eval's 32 in flight


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


def _byte_size(text: str) -> int:
    """'1048576', '512KiB', '1MiB', '1 MB' -> bytes."""
    match = re.fullmatch(r"\s*(\d+)\s*([KMG]i?B)?\s*", text, flags=re.IGNORECASE)
    if not match:
        raise argparse.ArgumentTypeError(f"not a size: {text!r} (e.g. 1048576, 512KiB, 1MiB)")
    unit = (match.group(2) or "B")[0].upper()
    return int(match.group(1)) * {"B": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30}[unit]


def _adapter(text: str) -> tuple[str, str]:
    name, sep, path = text.partition("=")
    if not sep or not name or not path:
        raise argparse.ArgumentTypeError(f"expected NAME=PATH, got {text!r}")
    return name, path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", default=EMBEDDED_MODEL,
                        help=f"model to serve: the embedded {EMBEDDED_MODEL!r}, a HF model id or a local folder")
    parser.add_argument("--device", default="auto", help="torch device: auto (cuda when available), cpu, cuda, cuda:1")
    parser.add_argument("--served-model-name", default=None,
                        help="the name clients send as 'model' (default: --model as given)")
    parser.add_argument("--adapter", type=_adapter, action="append", default=[], metavar="NAME=PATH",
                        help="load a saved peft LoRA adapter, served as model NAME (repeatable)")
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default: loopback only)")
    parser.add_argument("--port", type=int, default=8000,
                        help="port to bind; 0 picks a free one (default 8000, where vf-eval's 'local' provider looks)")
    parser.add_argument("--port-file", type=Path, default=None, help="also write the bound port to this file")
    parser.add_argument("--api-key", default=None,
                        help="require 'Authorization: Bearer KEY' on /v1 routes (default: accept any key)")
    parser.add_argument("--max-batch-size", type=int, default=16,
                        help="most sequences (prompts x n) the engine generates in one call")
    parser.add_argument("--batch-window-ms", type=float, default=10.0,
                        help="how long to wait for more requests after the first before generating")
    parser.add_argument("--max-request-bytes", type=_byte_size, default=1 << 20,
                        help="largest request body accepted, e.g. 1MiB (larger: HTTP 413)")
    parser.add_argument("--default-max-tokens", type=int, default=SamplingParams().max_new_tokens,
                        help="max_tokens for requests that send none")
    parser.add_argument("--max-queue", type=int, default=MAX_QUEUE,
                        help="requests waiting for the engine at most; beyond, HTTP 503 with Retry-After "
                             "(default %(default)s)")


def load_engine(model: str, device: str = "auto") -> GenerationEngine:
    import torch

    from sv_soar.engines.transformers_engine import TransformersEngine

    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    return TransformersEngine(model, device=device)


def _write_port_file(path: Path, port: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(f"{port}\n")
    os.replace(tmp, path)  # readers never see a half-written file


def _interrupt(signum, frame) -> None:
    raise KeyboardInterrupt  # SIGTERM shuts down the same way Ctrl-C does


def run(args: argparse.Namespace) -> int:
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(name)s: %(message)s")
    if args.max_batch_size < 1 or args.batch_window_ms < 0 or args.default_max_tokens < 1 or args.max_queue < 1:
        raise SystemExit("sv-soar serve-model: --max-batch-size, --default-max-tokens and --max-queue must be >= 1, "
                         "--batch-window-ms >= 0")
    served_name = args.served_model_name or args.model
    adapter_names = [name for name, _ in args.adapter]
    if served_name in adapter_names or len(set(adapter_names)) != len(adapter_names):
        raise SystemExit("sv-soar serve-model: adapter names must be unique and differ from the served model name")
    if args.host not in LOOPBACK and args.api_key is None:  # loopback unless configured, and then with a key
        raise SystemExit(f"sv-soar serve-model: refusing to bind {args.host} without --api-key: anyone who can "
                         "reach it could use the model; give --api-key KEY (or bind 127.0.0.1)")

    engine = load_engine(args.model, args.device)
    for name, path in args.adapter:
        engine.load_adapter(name, path)
    batcher = DynamicBatcher(engine, max_batch_size=args.max_batch_size, batch_window_s=args.batch_window_ms / 1000,
                             max_queue=args.max_queue)
    config = ServerConfig(
        models=ServedModels(served_name, tuple(adapter_names)),
        api_key=args.api_key,
        max_request_bytes=args.max_request_bytes,
        default_max_tokens=args.default_max_tokens,
        max_n=args.max_batch_size,
    )
    server = ModelServer((args.host, args.port), config, batcher)
    if args.port_file:
        _write_port_file(args.port_file, server.port)
    signal.signal(signal.SIGTERM, _interrupt)
    host = f"[{args.host}]" if ":" in args.host else args.host
    try:  # a signal right after the ready line must still shut down cleanly
        print(f"sv-soar serve-model: listening on http://{host}:{server.port}/v1 (model {served_name})", flush=True)
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
        batcher.stop()
        logger.info("stopped")
    return 0
