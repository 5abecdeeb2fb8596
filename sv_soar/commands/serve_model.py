"""`sv-soar serve-model`: serve a model (and its LoRA adapters) as an OpenAI-compatible chat API on loopback
(sv_soar.serving.openai_server is the server)."""

from __future__ import annotations

import argparse
import logging
import signal
import sys
from pathlib import Path

from sv_soar.commands.servers import byte_size, interrupt, write_port_file
from sv_soar.generation import SamplingParams
from sv_soar.soar_defaults import DEFAULT_MODEL
from sv_soar.serving.batching import DynamicBatcher
from sv_soar.serving.http_server import LOOPBACK
from sv_soar.serving.openai_protocol import ServedModels
from sv_soar.serving.openai_server import ModelServer, ServerConfig, load_engine

logger = logging.getLogger("sv_soar.serve_model")

MAX_QUEUE = 256  # requests waiting for the engine: 16 batches of the default 16, ~10x vf-eval's 32 in flight


def _adapter(text: str) -> tuple[str, str]:
    name, sep, path = text.partition("=")
    if not sep or not name or not path:
        raise argparse.ArgumentTypeError(f"expected NAME=PATH, got {text!r}")
    return name, path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", default=DEFAULT_MODEL,
                        help=f"model to serve: the embedded {DEFAULT_MODEL!r}, a HF model id or a local folder")
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
    parser.add_argument("--max-request-bytes", type=byte_size, default=1 << 20,
                        help="largest request body accepted, e.g. 1MiB (larger: HTTP 413)")
    parser.add_argument("--default-max-tokens", type=int, default=SamplingParams().max_new_tokens,
                        help="max_tokens for requests that send none")
    parser.add_argument("--max-queue", type=int, default=MAX_QUEUE,
                        help="requests waiting for the engine at most; beyond, HTTP 503 with Retry-After "
                             "(default %(default)s)")


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
        write_port_file(args.port_file, server.port)
    signal.signal(signal.SIGTERM, interrupt)
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
