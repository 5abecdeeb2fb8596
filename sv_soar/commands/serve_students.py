"""`sv-soar serve-students`: train and score students for a remote teacher rubric (HTTP, token, loopback;
sv_soar.serving.student_service says what the service does)."""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
import tempfile
from pathlib import Path

from sv_soar.backends import BACKENDS, make_scorer
from sv_soar.backends.remote import TOKEN_ENV
from sv_soar.commands.servers import byte_size, interrupt, write_port_file
from sv_soar.serving.http_server import LOOPBACK
from sv_soar.serving.student_server import StudentServer
from sv_soar.serving.student_service import ServiceLimits, StudentService
from sv_soar.soar_defaults import DEFAULT_MODEL
from sv_soar.student.config import PRESET_NAMES, student_config

log = logging.getLogger("sv_soar.serve_students")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from sv_soar.grounded import GROUNDINGS  # delayed: sv_soar.grounded imports torch
    parser.add_argument("--model", default=DEFAULT_MODEL, help="student model (default: %(default)s)")
    parser.add_argument("--task", default="e1", help="task of the rows (default: %(default)s)")
    parser.add_argument("--preset", choices=PRESET_NAMES, default="paper",
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
    parser.add_argument("--max-request-bytes", type=byte_size, default=ServiceLimits.max_request_bytes,
                        help="largest job body, e.g. 16MiB (larger: HTTP 413)")
    parser.add_argument("--max-baseline-bytes", type=byte_size, default=ServiceLimits.max_baseline_bytes,
                        help="largest baseline upload, e.g. 2GiB")
    parser.add_argument("--max-queue", type=int, default=ServiceLimits.max_queue,
                        help="jobs waiting at most (beyond: 503 with Retry-After)")


def run(args: argparse.Namespace) -> int:
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(name)s: %(message)s")
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
        write_port_file(args.port_file, server.port)
    signal.signal(signal.SIGTERM, interrupt)
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
