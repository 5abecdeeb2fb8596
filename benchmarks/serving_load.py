"""Serving under load: 8 -> 512 concurrent clients against `sv-soar serve-model` and `sv-soar serve-students`,
each a real subprocess on loopback over the tiny test model; writes benchmarks/results/serving-load.json.

    python benchmarks/serving_load.py                          # then: python scripts/reliability.py
    python benchmarks/serving_load.py --label before --out benchmarks/results/serving-load-before.json

Every round opens one connection a client and sends all requests at once (as vf-eval's and the openai client's
pools do). Each client's outcome is one of: answered (the server's answer: a chat completion; for the student
service its job done), refused (an HTTP status the server chose: 503 with Retry-After when its queue is full,
any other 4xx/5xx), dropped (the connection failed: reset, closed without an answer, refused at connect) or
unanswered (no answer within --round-timeout). Dropped must be 0.

serve-model clients each ask one chat completion (greedy, --max-tokens tokens). serve-students clients each
submit one job (one dataset of one E1 row, one student, one training step) and poll its status until it is
done; all jobs carry the same rows and seed, so the service's reward cache answers all but the first without
training: what is measured is the HTTP front and the job queue, not the trainer.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import queue
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

RESULTS = REPO / "benchmarks" / "results" / "serving-load.json"
TOKEN = "sv-soar-load-benchmark"
READY = re.compile(r"listening on http://127\.0\.0\.1:(\d+)")
ROW = {"question": "Device cam-1 observed tcp 1024→23, duration 0.5, bytes 100, flags [S]. Decide: Malicious or "
                   "Benign (you may Abstain if unsure).", "answer": "Malicious"}


# ------------------------------------------------------------------------------------------- the servers


class Server:
    """A CLI server as a subprocess; `peak_rss_mb` is the kernel's high-water mark of its resident memory."""

    def __init__(self, command: list[str], log: Path, env: dict[str, str] | None = None, timeout_s: float = 300):
        self.log = log
        with log.open("w") as stderr:
            self.proc = subprocess.Popen(command, cwd=REPO, stdout=subprocess.PIPE, stderr=stderr, text=True,
                                         env={**os.environ, "PYTHONPATH": str(REPO), **(env or {})})
        lines: queue.Queue = queue.Queue()
        threading.Thread(target=lambda: [lines.put(line) for line in self.proc.stdout], daemon=True).start()
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            try:
                line = lines.get(timeout=0.5)
            except queue.Empty:
                if self.proc.poll() is not None:
                    raise RuntimeError(f"{command[3]} exited with {self.proc.returncode}:\n{log.read_text()[-3000:]}")
                continue
            if match := READY.search(line):
                self.url = f"http://127.0.0.1:{match.group(1)}"
                return
        self.stop()
        raise RuntimeError(f"{command[3]} printed no ready line in {timeout_s} s:\n{log.read_text()[-3000:]}")

    def peak_rss_mb(self) -> float:
        status = Path(f"/proc/{self.proc.pid}/status").read_text()
        return int(re.search(r"VmHWM:\s+(\d+) kB", status).group(1)) / 1024

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def serve_model(model: Path, folder: Path, extra: list[str]) -> Server:
    return Server([sys.executable, "-m", "sv_soar.cli", "serve-model", "--model", str(model), "--served-model-name",
                   "tiny", "--port", "0", "--api-key", TOKEN, *extra], folder / "serve-model.log")


def serve_students(model: Path, folder: Path, extra: list[str]) -> Server:
    return Server([sys.executable, "-m", "sv_soar.cli", "serve-students", "--model", str(model), "--task", "e1",
                   "--preset", "cpu", "--student", '{"steps": 1}', "--students", "1", "--port", "0",
                   "--store", str(folder / "store"), *extra], folder / "serve-students.log",
                  env={"SV_SOAR_STUDENTS_TOKEN": TOKEN})


# ------------------------------------------------------------------------------------------- the clients


def _outcome(exc: BaseException) -> str:
    import httpx

    if isinstance(exc, httpx.TimeoutException) and not isinstance(exc, httpx.ConnectTimeout):
        return "unanswered"
    return "dropped"  # ReadError, RemoteProtocolError (closed without an answer), ConnectError, ConnectTimeout


async def chat_client(client: Any, i: int, max_tokens: int) -> dict[str, Any]:
    body = {"model": "tiny", "max_tokens": max_tokens, "temperature": 0, "messages": [
        {"role": "system", "content": "You are a network security analyst. Answer with JSON only."},
        {"role": "user", "content": f"Device unknown-device observed tcp {40000 + i}→23, duration 3.5, bytes ?, "
                                    "flags [S]. Decide: Malicious or Benign (you may Abstain if unsure)."}]}
    started = time.perf_counter()
    try:
        reply = await client.post("/v1/chat/completions", json=body)
    except Exception as exc:  # noqa: BLE001 - every failure is counted by kind
        return {"outcome": _outcome(exc), "error": f"{type(exc).__name__}: {exc}"[:200]}
    seconds = time.perf_counter() - started
    if reply.status_code != 200:
        return {"outcome": "refused", "status": reply.status_code, "retry_after": reply.headers.get("retry-after"),
                "seconds": seconds}
    return {"outcome": "answered", "status": 200, "seconds": seconds,
            "tokens": reply.json()["usage"]["completion_tokens"]}


async def job_client(client: Any, i: int, run: str, deadline: float) -> dict[str, Any]:
    job = {"job_id": f"load-{run}-{i}", "task": "e1", "datasets": [[ROW]], "q_r": [ROW], "baseline": "base", "seed": 0}
    started = time.perf_counter()
    try:
        reply = await client.post("/v1/jobs", json=job)
        if reply.status_code not in (200, 202):
            return {"outcome": "refused", "status": reply.status_code,
                    "retry_after": reply.headers.get("retry-after"), "seconds": time.perf_counter() - started}
        while reply.json().get("status") not in ("done", "failed"):
            if time.monotonic() > deadline:
                return {"outcome": "unanswered", "error": "job not done by the round's deadline"}
            await asyncio.sleep(0.25)
            reply = await client.get(f"/v1/jobs/{job['job_id']}")
            if reply.status_code != 200:
                return {"outcome": "refused", "status": reply.status_code, "seconds": time.perf_counter() - started}
    except Exception as exc:  # noqa: BLE001
        return {"outcome": _outcome(exc), "error": f"{type(exc).__name__}: {exc}"[:200]}
    return {"outcome": "answered" if reply.json()["status"] == "done" else "refused", "status": 200,
            "seconds": time.perf_counter() - started}


async def one_round(server: Server, kind: str, clients: int, run: str, args: argparse.Namespace) -> dict[str, Any]:
    import httpx

    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    timeout = httpx.Timeout(args.round_timeout, connect=60)
    headers = {"Authorization": f"Bearer {TOKEN}"}
    deadline = time.monotonic() + args.round_timeout
    async with httpx.AsyncClient(base_url=server.url, headers=headers, limits=limits, timeout=timeout) as client:
        started = time.perf_counter()
        if kind == "serve-model":
            tasks = [chat_client(client, i, args.max_tokens) for i in range(clients)]
        else:
            tasks = [job_client(client, i, run, deadline) for i in range(clients)]
        results = await asyncio.gather(*tasks)
        seconds = time.perf_counter() - started
    outcomes = {name: sum(r["outcome"] == name for r in results)
                for name in ("answered", "refused", "dropped", "unanswered")}
    latencies = sorted(r["seconds"] for r in results if r["outcome"] == "answered")
    tokens = sum(r.get("tokens", 0) for r in results)
    refused_statuses: dict[str, int] = {}
    for r in results:
        if r["outcome"] == "refused":
            refused_statuses[str(r["status"])] = refused_statuses.get(str(r["status"]), 0) + 1
    errors = sorted({r["error"].split(":")[0] for r in results if r.get("error")})
    return {"clients": clients, **outcomes, "refused_statuses": refused_statuses,
            "refusals_with_retry_after": sum(bool(r.get("retry_after")) for r in results if r["outcome"] == "refused"),
            "errors": errors, "p50_s": _quantile(latencies, 0.5), "p99_s": _quantile(latencies, 0.99),
            "tokens_per_s": round(tokens / seconds, 1) if kind == "serve-model" else None,
            "seconds": round(seconds, 2), "peak_rss_mb": round(server.peak_rss_mb(), 1)}


def _quantile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    return round(values[min(len(values) - 1, int(q * len(values)))], 3)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, nargs="+", default=[8, 16, 32, 64, 128, 256, 512])
    parser.add_argument("--servers", nargs="+", default=["serve-model", "serve-students"],
                        choices=["serve-model", "serve-students"])
    parser.add_argument("--max-tokens", type=int, default=8, help="max_tokens of each chat completion")
    parser.add_argument("--round-timeout", type=float, default=180.0, help="seconds a round may take")
    parser.add_argument("--model-args", default="", help="extra serve-model flags, e.g. '--max-queue 256'")
    parser.add_argument("--students-args", default="", help="extra serve-students flags")
    parser.add_argument("--label", default="after", help="what this run measures (before / after a change)")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()

    from tests.tiny_llama import build_tiny_llama

    load_before = os.getloadavg()[0]  # the machine is shared: its load says how far the timings can be trusted
    rounds: dict[str, list[dict[str, Any]]] = {}
    peak: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        model = build_tiny_llama(folder / "model")
        for kind in args.servers:
            if kind == "serve-model":
                start, extra = serve_model, args.model_args
            else:
                start, extra = serve_students, args.students_args
            server = start(model, folder, extra.split())
            try:
                rounds[kind] = []
                for n in args.clients:
                    result = asyncio.run(one_round(server, kind, n, f"{n}-{time.time_ns()}", args))
                    rounds[kind].append(result)
                    print(kind, json.dumps(result), flush=True)
                peak[kind] = round(server.peak_rss_mb(), 1)
            finally:
                server.stop()
    dropped = sum(r["dropped"] for runs in rounds.values() for r in runs)
    out = {"label": args.label, "rounds": rounds, "peak_rss_mb": peak, "max_tokens": args.max_tokens,
           "round_timeout_s": args.round_timeout, "dropped": dropped, "passed": dropped == 0,
           "python": platform.python_version(), "cpus": os.cpu_count(),
           "load_average_1m": [round(load_before, 2), round(os.getloadavg()[0], 2)],
           "command": " ".join(["python benchmarks/serving_load.py", *sys.argv[1:]])}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=1) + "\n")
    print(f"wrote {args.out}: {dropped} dropped")
    return 0 if out["passed"] else 1


if __name__ == "__main__":
    sys.exit(main())
