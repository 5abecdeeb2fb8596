"""The verifiers v1 venvs of tests/test_hosted_v1.py and tests/test_hosted_v1_episodes.py: running a command in
one with the working tree's packages first, the env projects copied and packaged, the prime CLI's checks. The
`v1_python` fixture (the venv's python, on the newest and the oldest verifiers) is in tests/conftest.py."""

from __future__ import annotations

import functools
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

# the tests that run only on the newest verifiers (tests/test_hosted_v1.py's docstring: why these do not differ on
# the oldest)
NEWEST_ONLY = pytest.mark.parametrize("v1_python", ["newest"], indirect=True)


@functools.cache
def verifiers_version(python: Path) -> str:
    return subprocess.run([str(python), "-c", "import verifiers; print(verifiers.__version__)"],
                          capture_output=True, text=True, check=True).stdout.strip()


@functools.cache
def harness_env(python: Path) -> dict[str, str]:
    """Variables for the null harness's chat program. verifiers 0.3.1's program (as prime-rl's pinned git build's)
    leaves openai unpinned, and openai 3.0 (PyPI, 2026-08-12) moved to httpx2, which that program cannot drive
    (TypeError: Invalid timeout ... got httpx.Timeout); so on 0.3.x its uv environment resolves as of 2026-08-11,
    in a uv cache of its own (uv keeps a script's environment by the script's path, whatever the settings).
    verifiers 0.4.0's program pins what it needs: nothing to add."""
    if not verifiers_version(python).startswith("0.3."):
        return {}
    cache = Path(os.environ.get("SV_SOAR_CACHE_HOME", Path.home() / ".cache" / "sv-soar")) / "uv-verifiers-0.3"
    return {"UV_EXCLUDE_NEWER": "2026-08-11T00:00:00Z", "UV_CACHE_DIR": str(cache)}


def harness_toml(python: Path) -> str:
    return "env = { " + ", ".join(f'{k} = "{v}"' for k, v in harness_env(python).items()) + " }\n"


def run_v1(python: Path, args: list[str], *, pythonpath: list[Path], cwd: Path, timeout: float = 600,
           env: dict | None = None) -> subprocess.CompletedProcess:
    """A command of the v1 venv with the working tree's packages first on the path (never .venv's)."""
    environ = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    environ |= {"PYTHONPATH": os.pathsep.join(map(str, pythonpath)), "PATH": f"{python.parent}:{environ['PATH']}",
                **(env or {})}
    return subprocess.run([str(python), *args], cwd=cwd, env=environ, capture_output=True, text=True,
                          timeout=timeout)


def env_copy(name: str, dest: Path) -> Path:
    """The env project copied (its `sv_soar` link left out: the working tree's core is on PYTHONPATH), so a
    test packages data into the copy, never into the repository."""
    project = dest / name
    shutil.copytree(REPO / "environments" / name, project, symlinks=True,
                    ignore=shutil.ignore_patterns("sv_soar", "data", "__pycache__"))
    return project


def package(data: Path, project: Path, name: str, task: str = "e1") -> None:
    done = subprocess.run([sys.executable, "-m", "sv_soar.cli", "package-env", str(data), "--env", str(project),
                           "--name", name, "--task", task], capture_output=True, text=True, timeout=120,
                          env={**os.environ, "PYTHONPATH": str(REPO)})
    assert done.returncode == 0, done.stderr


def check_configs(python: Path, paths: list[Path], tmp_path: Path) -> dict[str, dict]:
    done = run_v1(python, [str(REPO / "tests" / "hosted_v1" / "check_config.py"), *map(str, paths)],
                  pythonpath=[REPO / "environments" / "sv_soar_teacher_v1",
                              REPO / "environments" / "sv_soar_student_v1", REPO], cwd=tmp_path, timeout=300)
    results = [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]
    assert len(results) == len(paths), f"{done.stdout[-2000:]}\n{done.stderr[-3000:]}"
    return {Path(r["config"]).name: r for r in results}
