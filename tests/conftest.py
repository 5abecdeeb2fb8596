"""Shared fixtures: the SV-Bench mini sets (skipped cleanly when absent) and the tiny real model."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def svbench_mini_dir() -> Path:
    return Path(os.environ.get("SVBENCH_MINI", REPO.parent / "shared" / "svbench-mini"))


@pytest.fixture(scope="module")
def one_thread():
    """One torch thread for a module (`pytestmark = pytest.mark.usefixtures("one_thread")`): the tiny
    model's ops are microseconds long, and with 2 intra-op threads on a loaded 2-core machine OpenMP's
    barrier waits made a step 20-40x slower (measured 0.4 s against 8-17 s for 10 steps). Ray's actors
    run one thread each too, so local and Ray float sums agree."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def svbench_mini() -> Path:
    """Folder with SV-Bench's e1.jsonl / e2.jsonl; the test skips when it is not there."""
    folder = svbench_mini_dir()
    if not (folder / "e1.jsonl").is_file():
        pytest.skip(f"SV-Bench mini sets not found at {folder} (set SVBENCH_MINI)")
    return folder


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    """A tiny Llama with a locally trained tokenizer, saved as a HF folder (seconds, no download)."""
    from tests.tiny_llama import build_tiny_llama

    return build_tiny_llama(tmp_path_factory.mktemp("tiny-llama"))
