"""`sv-soar serve-model`: an OpenAI-compatible chat API over one generation engine, on loopback.

vf-eval, verifiers environments and hosted trainers reach models through the OpenAI API; serving the
project's own engine (and its LoRA adapters, one `model` name each) lets them score the embedded model
or a trained student without vLLM.

Endpoints: POST /v1/chat/completions, GET /v1/models, GET /health, GET /stats (batching counters).
HTTP threads parse the request (`openai_protocol`), hand it to the `DynamicBatcher` that owns the
engine, wait for their batch, and reply.

The stack is the standard library's ThreadingHTTPServer: no dependency beyond the engine, one thread
per connection, and HTTP/1.1 keep-alive so that clients reuse their connections.
"""

from __future__ import annotations

import argparse
import hmac
import json
import logging
import os
import re
import signal
import socket
import sys
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Callable
from urllib.parse import urlsplit

from sv_soar.generation import GenerationEngine, SamplingParams, tokens_over_context
from sv_soar.serving.batching import DynamicBatcher
from sv_soar.serving.openai_protocol import ApiError, ChatRequest, ServedModels, chat_completion, parse_chat_request

logger = logging.getLogger("sv_soar.serve_model")

EMBEDDED_MODEL = "smollm2-135m-instruct"  # DESIGN §6: the default model, shipped with no download
LOOPBACK = ("127.0.0.1", "localhost", "::1")


@dataclass(frozen=True)
class ServerConfig:
    models: ServedModels
    api_key: str | None = None  # None: any key (or none) is accepted, as vf-eval sends "EMPTY"
    max_request_bytes: int = 1 << 20
    default_max_tokens: int = SamplingParams().max_new_tokens
    max_n: int = 16


class ModelServer(ThreadingHTTPServer):
    daemon_threads = True  # a client waiting on a long generation must not block shutdown

    def __init__(self, address: tuple[str, int], config: ServerConfig, batcher: DynamicBatcher):
        if ":" in address[0]:
            self.address_family = socket.AF_INET6
        self.config, self.batcher, self.started = config, batcher, int(time.time())
        super().__init__(address, _Handler)

    @property
    def port(self) -> int:
        return self.server_address[1]

    def handle_error(self, request, client_address) -> None:
        if isinstance(sys.exc_info()[1], ConnectionError):  # a client that hung up: not our error
            logger.debug("client %s disconnected", client_address)
        else:
            super().handle_error(request, client_address)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive: the openai client reuses its connections
    disable_nagle_algorithm = True  # headers and body go out as two writes; don't hold the second for an ACK
    server: ModelServer

    def do_GET(self) -> None:
        self._dispatch({"/health": self._health, "/v1/models": self._models, "/stats": self._stats})

    def do_POST(self) -> None:
        self._dispatch({"/v1/chat/completions": self._chat_completions})

    def _dispatch(self, routes: dict[str, Callable[[], dict]]) -> None:
        path = urlsplit(self.path).path.rstrip("/")
        self._body_consumed = False
        try:
            if path not in routes:
                raise ApiError(f"no route {self.command} {path or '/'}", status=404, type="not_found_error")
            if path != "/health":
                self._check_api_key()
            status, payload = 200, routes[path]()
        except ApiError as exc:
            status, payload = exc.status, exc.payload()
        except Exception as exc:  # the engine failed: say why, keep serving
            error = ApiError(f"{type(exc).__name__}: {exc}", status=500, type="server_error")
            status, payload = error.status, error.payload()
        if self.command in ("POST", "PUT") and not self._body_consumed:
            self.close_connection = True  # its unread body would be parsed as the next request
        self._send_json(status, payload)

    def _health(self) -> dict:
        return {"status": "ok"}

    def _models(self) -> dict:
        models = self.server.config.models
        entries = [{"id": models.base, "object": "model", "created": self.server.started, "owned_by": "sv-soar", "parent": None}]
        entries += [
            {"id": name, "object": "model", "created": self.server.started, "owned_by": "sv-soar", "parent": models.base}
            for name in models.adapters
        ]
        return {"object": "list", "data": entries}

    def _stats(self) -> dict:
        return self.server.batcher.stats()

    def _chat_completions(self) -> dict:
        config = self.server.config
        request = parse_chat_request(
            self._json_body(), config.models, default_max_tokens=config.default_max_tokens, max_n=config.max_n
        )
        self._check_context_length(request)
        completions = self.server.batcher.submit(request.prompt, request.params, request.adapter)
        return chat_completion(request.model, completions, request.tools)

    def _check_context_length(self, request: ChatRequest) -> None:
        """Refuse a prompt the model cannot read whole, as vLLM does and in its words (verifiers reads them
        as an overlong prompt); generating anyway would also hold up every request batched with it."""
        engine, max_tokens = self.server.batcher.engine, request.params.max_new_tokens
        prompt_tokens = tokens_over_context(engine, request.prompt, max_tokens)
        if prompt_tokens is not None:
            raise ApiError(f"This model's maximum context length is {engine.context_window} tokens. However, you "
                           f"requested {prompt_tokens + max_tokens} tokens ({prompt_tokens} in the messages, {max_tokens} "
                           "in the completion). Please reduce the length of the messages or completion.", "messages",
                           code="context_length_exceeded")

    def _check_api_key(self) -> None:
        key = self.server.config.api_key
        if key is None:
            return
        sent = self.headers.get("Authorization", "")
        if not hmac.compare_digest(sent.encode(), f"Bearer {key}".encode()):
            raise ApiError(
                "missing or wrong API key: send 'Authorization: Bearer KEY'",
                status=401, code="invalid_api_key",
            )

    def _json_body(self) -> Any:
        raw = self._body(self.server.config.max_request_bytes)
        try:
            return json.loads(raw)
        except (ValueError, UnicodeDecodeError) as exc:
            raise ApiError(f"request body is not valid JSON: {exc}") from None
        except RecursionError:  # "[[[[...": a client error (400), not a server one (500)
            raise ApiError("request body is not valid JSON: nested too deeply") from None

    def _body(self, limit: int, flag: str = "--max-request-bytes") -> bytes:
        """The request body, refused with 411 without a Content-Length and 413 above `limit` bytes."""
        length = self.headers.get("Content-Length")
        if length is None or not length.isdigit():
            raise ApiError("a request body with a Content-Length header is required", status=411)
        size = int(length)
        if size > limit:
            if size <= 16 * limit:  # read it away so the client sees the 413, not a reset connection
                remaining = size
                while remaining > 0 and (chunk := self.rfile.read(min(remaining, 1 << 16))):
                    remaining -= len(chunk)
                self._body_consumed = True
            raise ApiError(f"request body is {size} bytes; this server accepts at most {limit} ({flag})", status=413)
        raw = self.rfile.read(size)
        self._body_consumed = True
        return raw

    def _send_json(self, status: int, payload: dict) -> None:
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: Any) -> None:
        logger.debug("%s %s", self.address_string(), format % args)


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
    if args.max_batch_size < 1 or args.batch_window_ms < 0 or args.default_max_tokens < 1:
        raise SystemExit("sv-soar serve-model: --max-batch-size and --default-max-tokens must be >= 1, "
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
    batcher = DynamicBatcher(engine, max_batch_size=args.max_batch_size, batch_window_s=args.batch_window_ms / 1000)
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
