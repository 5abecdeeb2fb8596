"""`sv-soar serve-model` as a real subprocess: start it, wait for its ready line, stop it. Shared by the serving,
teacher-env and hosted v1 tests."""

from __future__ import annotations

import os
import queue
import re
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

REPO = Path(__file__).resolve().parents[1]
SERVED = "tiny-llama"
API_KEY = "sk-test-serve-model"
READY = re.compile(r"sv-soar serve-model: listening on http://127\.0\.0\.1:(\d+)/v1 \(model (.+)\)")
MAX_REQUEST_BYTES = 64 * 1024


@dataclass
class Served:
    proc: subprocess.Popen
    port: int
    log: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def client(self, key: str | None = API_KEY) -> httpx.Client:
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        return httpx.Client(base_url=self.url, headers=headers, timeout=120)

    def stats(self) -> dict:
        with self.client() as client:
            return client.get("/stats").json()


def start_server(model_dir: Path, log: Path, *extra: str, timeout_s: float = 180) -> Served:
    """Start `sv-soar serve-model` and wait for its ready line; the caller must stop_server() it."""
    command = [sys.executable, "-m", "sv_soar.cli", "serve-model", "--model", str(model_dir), "--port", "0", *extra]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    with log.open("w") as stderr:
        proc = subprocess.Popen(command, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=stderr, text=True)
    lines: queue.Queue = queue.Queue()
    threading.Thread(target=lambda: [lines.put(line) for line in proc.stdout], daemon=True).start()
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            line = lines.get(timeout=0.5)
        except queue.Empty:
            if proc.poll() is not None:
                pytest.fail(f"serve-model exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
            continue
        if match := READY.search(line):
            return Served(proc=proc, port=int(match.group(1)), log=log)
    stop_server(proc)
    pytest.fail(f"serve-model printed no ready line within {timeout_s} s:\n{log.read_text()[-3000:]}")


def stop_server(proc: subprocess.Popen) -> int:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    return proc.returncode


def e1_prompt(i: int) -> list[dict]:
    """E1-shaped chat prompts whose lengths differ with i, so each reply's prompt_tokens identifies it."""
    return [
        {"role": "system", "content": "You are a network security analyst. Answer with JSON only."},
        {
            "role": "user",
            "content": f"Device unknown-device observed tcp {40000 + i}→23, duration 3.5, bytes ?, "
            f"flags [S]{', A' * i}. Decide: Malicious or Benign (you may Abstain if unsure).",
        },
    ]
