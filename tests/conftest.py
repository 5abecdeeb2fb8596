"""Shared fixtures: the SV-Bench mini sets (skipped cleanly when absent), the tiny real model, the tiny teacher
warm-started from it, a tiny mined E1 hard set, and the verifiers v1 venvs' python (skipped when not built)."""

from __future__ import annotations

import os
import subprocess
from collections import Counter
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def pytest_configure(config) -> None:
    """Under pytest-xdist (`make test`: -n auto), each worker gets its share of the cores for torch's OpenMP threads,
    and so do the subprocesses it starts (they inherit the variable): two workers of 2 threads each on 2 cores
    are the oversubscription one_thread's docstring measured at 20-40x slower steps."""
    workers = os.environ.get("PYTEST_XDIST_WORKER_COUNT")
    if workers and "OMP_NUM_THREADS" not in os.environ:
        os.environ["OMP_NUM_THREADS"] = str(max(1, len(os.sched_getaffinity(0)) // int(workers)))


def pytest_collection_modifyitems(config, items) -> None:
    """`make test` runs pytest-xdist with --dist loadfile: each test file runs in one worker, so its module fixtures
    (a served model, a trained run) are built once. Each worker collects the files longest first, as far as the
    `slow` marks tell (the most slow tests first, the files without any last, each file's tests in their order),
    and --no-loadscope-reorder hands them out in that order, so the run does not end on one worker finishing a
    long file alone. (--dist loadgroup, which could split a file, groups nothing on pytest 9.2 with pytest-xdist
    3.8: pytest-dev/pytest-xdist#1386.) A run without xdist keeps pytest's order."""
    if not hasattr(config, "workerinput"):  # not an xdist worker
        return
    slow = Counter(item.path for item in items if item.get_closest_marker("slow"))
    first: dict[Path, int] = {}
    for index, item in enumerate(items):
        first.setdefault(item.path, index)
    items.sort(key=lambda item: (-slow[item.path], first[item.path]))


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


@pytest.fixture(scope="module", params=["newest", "oldest"])
def v1_python(request) -> Path:
    """The v1 venv's python, on the newest and on the oldest verifiers the env projects allow (tests/test_hosted_v1.py,
    tests/test_hosted_v1_episodes.py; tests/v1_venvs.py runs commands in it)."""
    done = subprocess.run(["bash", str(REPO / "scripts" / "build_v1_venv.sh"), "--verifiers", request.param,
                           "--check"], capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"the verifiers v1 venv is not built: {done.stderr.strip()}")
    if not (REPO / "sv_soar" / "soar_step.py").is_file():
        pytest.skip("the v1 envs need issue 13's verifiers-free core (sv_soar/soar_step.py, sv_soar/hard_set.py); "
                    "this tree's core still imports verifiers 0.1 through sv_soar_teacher")
    return Path(done.stdout.strip().splitlines()[-1]) / "bin" / "python"
