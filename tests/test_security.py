"""Security: no shell anywhere in the source, services on loopback unless configured (and then with a
key), and a service refuses unauthenticated, oversize and malformed requests while it keeps serving.

The services (SERVICES): `sv-soar serve-model` (the OpenAI-compatible API) and `sv-soar serve-students`
(the remote student service); every check of a running service runs on each.
"""

from __future__ import annotations

import argparse
import ast
import contextlib
import http.client
import importlib
import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from sv_soar.cli import COMMANDS

REPO = Path(__file__).resolve().parents[1]
SOURCE_FOLDERS = ("sv_soar", "sv_soar_student", "sv_soar_teacher", "rubrics", "environments", "benchmarks",
                  "scripts", "tests")
LOOPBACK = {"127.0.0.1", "localhost", "::1"}
API_KEY = "sk-security-test"


def python_files() -> list[Path]:
    files = [p for folder in SOURCE_FOLDERS for p in (REPO / folder).rglob("*.py") if ".venv" not in p.parts]
    assert len(files) > 40, "the scan found too few files: is REPO right?"
    return files


# ------------------------------------------------------------------------------------ the source tree

# Calls that hand a string to a shell, or run pickled code from a file the project did not just write.
SHELL_CALLS = {("os", "system"), ("os", "popen"), ("subprocess", "getoutput"), ("subprocess", "getstatusoutput"),
               ("os", "execl"), ("os", "execlp"), ("os", "spawnl"), ("os", "spawnlp")}


def _dotted(node: ast.AST) -> tuple[str, ...]:
    if isinstance(node, ast.Name):
        return (node.id,)
    if isinstance(node, ast.Attribute):
        return (*_dotted(node.value), node.attr)
    return ()


def test_no_shell_and_no_unsafe_load_anywhere_in_the_source_tree():
    findings = []
    for path in python_files():
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        for node in ast.walk(tree):
            if not isinstance(node, ast.Call):
                continue
            where = f"{path.relative_to(REPO)}:{node.lineno}"
            name = _dotted(node.func)
            for keyword in node.keywords:
                if keyword.arg == "shell" and not (isinstance(keyword.value, ast.Constant) and keyword.value.value is False):
                    findings.append(f"{where}: shell={ast.unparse(keyword.value)}")
            if name[-2:] in SHELL_CALLS:
                findings.append(f"{where}: {'.'.join(name)}()")
            if name in (("eval",), ("exec",)):
                findings.append(f"{where}: {name[0]}()")
            if name[-2:] in (("pickle", "load"), ("pickle", "loads")):
                findings.append(f"{where}: {'.'.join(name)}() runs code from the file")
            if name[-2:] == ("torch", "load") and not any(
                    k.arg == "weights_only" and isinstance(k.value, ast.Constant) and k.value.value is True
                    for k in node.keywords):
                findings.append(f"{where}: torch.load without weights_only=True runs pickled code from the file")
    assert findings == []


def test_the_scan_catches_what_it_looks_for(tmp_path):
    # the scan itself, on code that does each forbidden thing
    bad = "import os, subprocess, torch\nsubprocess.run('ls', shell=True)\nos.system('ls')\ntorch.load('x')\n"
    tree = ast.parse(bad)
    calls = [_dotted(n.func) for n in ast.walk(tree) if isinstance(n, ast.Call)]
    assert ("os", "system") in calls and ("torch", "load") in calls
    assert any(k.arg == "shell" for n in ast.walk(tree) if isinstance(n, ast.Call) for k in n.keywords)


def test_no_source_binds_beyond_loopback_by_default():
    wildcard = []
    for path in python_files():
        if path.name == "test_security.py":
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Constant) and node.value in ("0.0.0.0", "::", "[::]"):
                wildcard.append(f"{path.relative_to(REPO)}:{node.lineno}: {node.value!r}")
    assert wildcard == []
    # every command with a --host option defaults to loopback
    hosts = {}
    for name, (module_name, _) in COMMANDS.items():
        parser = argparse.ArgumentParser()
        importlib.import_module(module_name).add_arguments(parser)
        for action in parser._actions:  # noqa: SLF001 - argparse has no public accessor
            if "--host" in action.option_strings:
                hosts[name] = action.default
    assert {"serve-model", "serve-students"} <= set(hosts) and all(host in LOOPBACK for host in hosts.values()), hosts


def test_serve_model_refuses_to_bind_beyond_loopback_without_a_key(tiny_model_dir):
    done = subprocess.run([sys.executable, "-m", "sv_soar.cli", "serve-model", "--model", str(tiny_model_dir),
                           "--host", "0.0.0.0", "--port", "0"], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert done.returncode != 0 and "refusing to bind 0.0.0.0 without --api-key" in done.stderr
    assert "listening" not in done.stdout


@pytest.mark.slow
def test_serve_students_refuses_to_start_without_a_token_and_warns_beyond_loopback(tiny_model_dir):
    """The student service trains on whatever a caller sends: no token, no service, on any address."""
    env = {k: v for k, v in os.environ.items() if k != "SV_SOAR_STUDENTS_TOKEN"}
    command = [sys.executable, "-m", "sv_soar.cli", "serve-students", "--model", str(tiny_model_dir), "--port", "0"]
    done = subprocess.run(command + ["--host", "0.0.0.0"], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 2 and "bearer token is required" in done.stderr and "listening" not in done.stdout
    # with a token it warns before it loads or binds anything; a bad --student then stops it right there, so
    # this test never opens a port beyond loopback
    done = subprocess.run(command + ["--host", "0.0.0.0", "--student", '{"stepz": 1}'], cwd=REPO,
                          env={**env, "SV_SOAR_STUDENTS_TOKEN": API_KEY}, capture_output=True, text=True, timeout=120)
    assert "binding 0.0.0.0: reachable beyond this machine; the token is all that guards it" in done.stderr
    assert done.returncode == 2 and "listening" not in done.stdout


# ------------------------------------------------------------------------------------ a running service


@dataclass
class Service:
    """A running service under test: where it listens and what a good authenticated request is."""

    port: int
    routes: list[tuple[str, str, bytes | None]]  # (method, path, good body) that need the key
    good: tuple[str, str, bytes | None]  # one request that must succeed with the key
    post: tuple[str, str]  # where request bodies go (method, path): the oversize and malformed ones too
    invalid: list[bytes]  # well-formed JSON with a field out of range (400)
    health: str = "/health"  # answers without a key (liveness only)


@contextlib.contextmanager
def serve_model(tiny_model_dir) -> Iterator[Service]:
    """`sv-soar serve-model`'s server in this process, on the tiny real model, with a key and a 16 KiB limit."""
    from sv_soar.engines.transformers_engine import TransformersEngine
    from sv_soar.serving.batching import DynamicBatcher
    from sv_soar.serving.openai_protocol import ServedModels
    from sv_soar.serving.openai_server import ModelServer, ServerConfig

    batcher = DynamicBatcher(TransformersEngine(str(tiny_model_dir)), max_batch_size=4)
    server = ModelServer(("127.0.0.1", 0), ServerConfig(ServedModels("tiny"), api_key=API_KEY,
                                                        max_request_bytes=MAX_BYTES, default_max_tokens=4), batcher)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    invalid = [json.dumps({"model": "tiny", "messages": [{"role": "user", "content": "x"}], **field}).encode()
               for field in ({"n": 10**9}, {"max_tokens": -1})]
    try:
        yield Service(server.port, [("POST", "/v1/chat/completions", GOOD), ("GET", "/v1/models", None),
                                    ("GET", "/stats", None), ("GET", "/metrics", None)],
                      ("POST", "/v1/chat/completions", GOOD),
                      ("POST", "/v1/chat/completions"), invalid)
    finally:
        server.shutdown()
        server.server_close()
        batcher.stop()


@contextlib.contextmanager
def serve_students(tiny_model_dir) -> Iterator[Service]:
    """`sv-soar serve-students`' server in this process, on the tiny real model, with a token and a 16 KiB job
    limit. Its good request is GET /v1/info: a good job would train students in the background, so the
    bodies posted to /v1/jobs here all fail validation (or the token) before anything trains."""
    from sv_soar.grounded import GroundedScorer
    from sv_soar.serving.student_service import ServiceLimits
    from sv_soar.student.config import student_config
    from tests.running_student_service import JOB, RunningStudentService

    scorer = GroundedScorer(str(tiny_model_dir), "e1", student_config("cpu", {"steps": 1}), students=1, progress=False)
    invalid = [json.dumps({**JOB, **field}).encode() for field in ({"seed": -1}, {"datasets": []},
                                                                    {"job_id": "../../etc"}, {"task": "e2"})]
    with tempfile.TemporaryDirectory() as store, \
            RunningStudentService(scorer, store, ServiceLimits(max_request_bytes=MAX_BYTES), token=API_KEY) as running:
        yield Service(running.port, [("POST", "/v1/jobs", json.dumps(JOB).encode()), ("GET", "/v1/info", None),
                                     ("GET", "/v1/jobs/job-1", None), ("GET", "/v1/jobs/job-1/adapters/0/0", None),
                                     ("PUT", "/v1/baselines/0123456789abcdef", b"\0" * 64), ("GET", "/stats", None),
                                     ("GET", "/metrics", None)],
                      ("GET", "/v1/info", None), ("POST", "/v1/jobs"), invalid)


# Every network service, started with API_KEY and a MAX_BYTES request limit.
MAX_BYTES = 16 * 1024
GOOD = json.dumps({"model": "tiny", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}).encode()
SERVICES = {"serve-model": serve_model, "serve-students": serve_students}


@pytest.fixture(scope="module", params=sorted(SERVICES))
def service(request, tiny_model_dir):
    with SERVICES[request.param](tiny_model_dir) as running:
        yield running


def request(service: Service, method: str, path: str, body: bytes | None = None, headers: dict | None = None):
    connection = http.client.HTTPConnection("127.0.0.1", service.port, timeout=60)
    try:
        connection.request(method, path, body=body, headers=headers or {})
        response = connection.getresponse()
        return response.status, json.loads(response.read() or b"{}")
    finally:
        connection.close()


AUTH = {"Authorization": f"Bearer {API_KEY}", "Content-Type": "application/json"}


def test_unauthenticated_requests_are_refused(service):
    # (a trailing space is not part of a header's value in HTTP, RFC 9110 §5.5, and uvicorn's parser drops it
    # as every server does: "Bearer KEY " is the key; a space inside the value, or a key with more, is not)
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": API_KEY},
                    {"Authorization": f"Bearer  {API_KEY}"}, {"Authorization": f"Bearer {API_KEY}x"},
                    {"Authorization": f"bearer {API_KEY}"}):
        for method, path, body in service.routes:
            status, reply = request(service, method, path, body, headers)
            assert status == 401 and reply["error"]["code"] == "invalid_api_key", (headers, path)
    assert request(service, *service.good, AUTH)[0] == 200
    assert request(service, "GET", service.health)[0] == 200  # liveness only: no model, no data


def test_oversize_and_malformed_requests_are_refused_and_the_service_keeps_serving(service):
    method, path = service.post
    too_big = b'{"model": "tiny", "pad": "' + b"x" * (MAX_BYTES + 1024) + b'"}'
    cases = [(too_big, 413), (b"[" * 10_000, 400), (b"\xff\xfe{", 400), (b"", 400), (b"null", 400)]
    cases += [(body, 400) for body in service.invalid]
    for body, status in cases:
        got, reply = request(service, method, path, body, AUTH)
        assert got == status and reply["error"]["message"], (body[:40], got, reply)
    # a Content-Length far past the limit is refused from the header alone, without reading the body
    with socket.create_connection(("127.0.0.1", service.port), timeout=30) as raw:
        raw.sendall(f"{method} {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer ".encode() + API_KEY.encode()
                    + b"\r\nContent-Length: 10000000000\r\n\r\n")
        assert raw.recv(4096).startswith(b"HTTP/1.1 413")
    assert request(service, *service.good, AUTH)[0] == 200


def test_raw_garbage_on_the_socket_never_stops_the_service(service):
    import random

    rng = random.Random(0)
    garbage = [bytes(rng.randrange(256) for _ in range(rng.randrange(1, 300))) for _ in range(30)]
    garbage += [b"GET / HTTP/1.1\r\n" + b"X: y\r\n" * 200 + b"\r\n", b"POST /v1/chat/completions HTTP/1.1\r\n"
                b"Content-Length: -5\r\n\r\n", b"\r\n\r\n", b"GET /" + b"a" * 70000 + b" HTTP/1.1\r\n\r\n"]
    for data in garbage:
        with socket.create_connection(("127.0.0.1", service.port), timeout=30) as raw:
            raw.sendall(data)
            raw.shutdown(socket.SHUT_WR)
            raw.settimeout(30)
            try:
                while raw.recv(65536):
                    pass
            except (ConnectionResetError, TimeoutError):
                pass
    assert request(service, "GET", "/health")[0] == 200
    assert request(service, *service.good, AUTH)[0] == 200
