"""Shared fixtures: the SV-Bench mini sets (skipped cleanly when absent), the tiny real model, the tiny teacher
warm-started from it, and a tiny mined E1 hard set."""

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


@pytest.fixture(scope="session")
def tiny_teacher_dir(tmp_path_factory) -> Path:
    """The tiny model after the format warm start on four teacher replies (sv_soar/format_warm_start.py): a real
    model that writes valid, varied-enough E1 problems at temperature 0.5. Built once a session (about a minute),
    in the folder tests/killed_runs.py's shared_models uses, so the outer-loop, tracking, fault and kill tests
    share one build."""
    from tests.killed_runs import shared_models

    return shared_models(tmp_path_factory)[1]


@pytest.fixture(scope="module")
def hard_set(tmp_path_factory) -> Path:
    """A `sv-soar hardset` folder written by the real miner from 12 built-in E1 flows (every problem failed 2/2
    samples): the teacher env's input. tests/test_soar_loop.py and tests/test_tracking.py override it with
    a plain 6/6 split."""
    import numpy as np

    from sv_soar.evaluation.hardset import mine_hard_set
    from sv_soar.tasks import get_task
    from sv_soar.tasks.e1.flows import generate_e1_flows

    task = get_task("e1")
    rows = [task.validate_row(row) for row in generate_e1_flows(12, seed=3)]
    out = tmp_path_factory.mktemp("hard")
    mine_hard_set(task, rows, np.zeros((len(rows), 2), dtype=bool), out, model="tiny", source="builtin",
                  temperature=1.0)
    return out
