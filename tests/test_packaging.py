"""The environment folders are installable projects whose wheels carry the whole code (DESIGN §2)."""

from __future__ import annotations

import os
import subprocess
import shutil
import sys
import sysconfig
import tomllib
import venv
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
ENV_FOLDERS = ["sv_soar_student", "sv_soar_teacher"]
PACKAGES = ["sv_soar", "rubrics", "sv_soar_student", "sv_soar_teacher"]


def _pyproject(path: Path) -> dict:
    return tomllib.loads(path.read_text())


@pytest.mark.parametrize("env", ENV_FOLDERS)
def test_environment_project_matches_root(env):
    root = _pyproject(REPO / "pyproject.toml")
    project = _pyproject(REPO / "environments" / env / "pyproject.toml")
    assert project["project"]["name"] == env.replace("_", "-")
    # Same runtime dependencies as the root distribution, so a vf-installed env behaves the same.
    assert project["project"]["dependencies"] == root["project"]["dependencies"]
    assert project["tool"]["hatch"]["build"]["targets"]["wheel"]["packages"] == PACKAGES
    for package in PACKAGES:
        link = REPO / "environments" / env / package
        assert link.is_symlink() and link.resolve() == (REPO / package).resolve(), link


@pytest.mark.slow
def test_wheel_from_environment_folder_alone_installs_and_loads(tmp_path):
    """Build from a copy of the folder with links resolved (what a hub gets), install, load."""
    build_dir = tmp_path / "sv_soar_student"
    # copytree with symlinks=False follows the links: the copy holds real files only.
    shutil.copytree(
        REPO / "environments" / "sv_soar_student",
        build_dir,
        symlinks=False,
        ignore=shutil.ignore_patterns("__pycache__"),
    )
    wheels = tmp_path / "wheels"
    subprocess.run(
        [sys.executable, "-m", "build", "--wheel", "--no-isolation", "-o", str(wheels), str(build_dir)],
        check=True,
        capture_output=True,
    )
    (wheel,) = wheels.glob("sv_soar_student-*.whl")

    # A fresh venv that borrows this venv's third-party packages through a path entry (so no
    # download), but not the editable sv-soar install: the wheel's own copy must be what loads.
    fresh = tmp_path / "venv"
    venv.EnvBuilder(with_pip=False).create(fresh)
    fresh_python = fresh / "bin" / "python"
    fresh_site = subprocess.run(
        [str(fresh_python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        check=True, capture_output=True, text=True,
    ).stdout.strip()
    Path(fresh_site, "borrowed.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    subprocess.run(
        [sys.executable, "-m", "pip", "--python", str(fresh_python), "install", "-q", "--no-deps", str(wheel)],
        check=True, capture_output=True,
    )
    probe = (
        "import sv_soar_student, rubrics.e1, sv_soar;"
        "env = sv_soar_student.load_environment(task='e1', source='builtin', n=4);"
        "print(sv_soar_student.__file__); print(len(env.dataset))"
    )
    out = subprocess.run(
        [str(fresh_python), "-c", probe], check=True, capture_output=True, text=True, cwd=tmp_path,
        env={k: v for k, v in os.environ.items() if k != "PYTHONPATH"},
    ).stdout.split()
    assert out[0].startswith(str(fresh)), out[0]
    assert out[1] == "4"
