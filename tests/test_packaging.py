"""The environment folders are installable projects whose wheels carry the whole code (docs/design.md §2)."""

from __future__ import annotations

import json
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
    # vf-install gives the same CLI and the same e2 extra as the root distribution
    assert project["project"]["scripts"] == root["project"]["scripts"] == {"sv-soar": "sv_soar.cli:main"}
    assert project["project"]["optional-dependencies"]["e2"] == root["project"]["optional-dependencies"]["e2"]
    assert project["tool"]["hatch"]["build"]["targets"]["wheel"]["packages"] == PACKAGES
    for package in PACKAGES:
        link = REPO / "environments" / env / package
        assert link.is_symlink() and link.resolve() == (REPO / package).resolve(), link


# --- fresh venvs ------------------------------------------------------------------------------------
#
# A fresh venv borrows this venv's third-party packages through a path entry (borrowed.pth), so nothing
# is downloaded (no torch): but not the editable sv-soar install, whose own .pth is not read from a
# borrowed folder, so what loads there is what the wheel or vf-install put in.


def _fresh_venv(folder: Path, *, with_metadata: bool = False) -> Path:
    """A new venv at `folder` that imports .venv's packages; returns its python.

    with_metadata also copies their *.dist-info folders (metadata only, ~15 MB), so that an installer
    resolving against the venv (uv, as vf-install runs it) finds every dependency already installed.
    """
    venv.EnvBuilder(with_pip=False).create(folder)
    python = folder / "bin" / "python"
    site = Path(subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        check=True, capture_output=True, text=True,
    ).stdout.strip())
    borrowed = Path(sysconfig.get_paths()["purelib"])
    (site / "borrowed.pth").write_text(f"{borrowed}\n")
    if with_metadata:
        for info in borrowed.glob("*.dist-info"):
            if not info.name.startswith("sv_soar"):  # the project itself must come from the install
                shutil.copytree(info, site / info.name)
    return python


def _clean_env(**extra: str) -> dict[str, str]:
    drop = {"PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME"}
    env = {k: v for k, v in os.environ.items() if k not in drop and not k.startswith("UV_")}
    env.update(extra)
    return env


def _e1_hard_set(folder: Path, n: int = 4) -> Path:
    """A hard-set folder as `sv-soar hardset --out` writes it, D_train only (what the teacher reads)."""
    from sv_soar.tasks.e1_flows import generate_e1_flows

    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / "d_train.jsonl", "w") as f:
        for row in generate_e1_flows(n, seed=0):
            f.write(json.dumps(row) + "\n")
    return folder


def _load_probe(env: str, tmp_path: Path) -> str:
    """Python source that imports `env`, loads it with small arguments and prints module path and size."""
    if env == "sv_soar_student":
        call = "sv_soar_student.load_environment(task='e1', source='builtin', n=4)"
    else:
        hard_set = _e1_hard_set(tmp_path / "hard")
        # Loading builds the rubric only: the student model is loaded on the first scoring.
        call = (f"sv_soar_teacher.load_environment(hard_set={str(hard_set)!r}, model='smollm2-135m-instruct', "
                f"preset='cpu', g=2, n=2, students=1, q_r=2, num_prompts=3, run_dir={str(tmp_path / 'run')!r})")
    return (f"import {env}, rubrics.e1, sv_soar; env = {call}; "
            f"print({env}.__file__); print(len(env.dataset)); print(type(env).__name__)")


def _run_probe(python: Path, env: str, tmp_path: Path) -> list[str]:
    return subprocess.run(
        [str(python), "-c", _load_probe(env, tmp_path)], check=True, capture_output=True, text=True,
        cwd=tmp_path, env=_clean_env(),
    ).stdout.split()


# --- a wheel built from one environment folder alone ------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("env", ENV_FOLDERS)
def test_wheel_from_environment_folder_alone_installs_and_loads(env, tmp_path):
    """Build from a copy of the folder with links resolved (what a hub gets), install, load."""
    build_dir = tmp_path / env
    # copytree with symlinks=False follows the links: the copy holds real files only.
    shutil.copytree(
        REPO / "environments" / env,
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
    (wheel,) = wheels.glob(f"{env}-*.whl")

    fresh = tmp_path / "venv"
    fresh_python = _fresh_venv(fresh)
    subprocess.run(
        [sys.executable, "-m", "pip", "--python", str(fresh_python), "install", "-q", "--no-deps", str(wheel)],
        check=True, capture_output=True,
    )
    out = _run_probe(fresh_python, env, tmp_path)
    assert out[0].startswith(str(fresh)), out[0]
    assert out[1] == ("4" if env == "sv_soar_student" else "3")
    assert out[2] == "SingleTurnEnv"


# --- vf-install <id> -p environments, in a fresh venv --------------------------------------------------


def _vf_install_script(fresh: Path) -> Path:
    """bin/vf-install in the fresh venv, written from verifiers' own console-script entry point (as pip
    would), so that `vf-install` there runs verifiers' installer under the fresh venv's python."""
    from importlib.metadata import entry_points

    (entry,) = [e for e in entry_points(group="console_scripts") if e.name == "vf-install"]
    script = fresh / "bin" / "vf-install"
    script.write_text(
        f"#!{fresh / 'bin' / 'python'}\nimport sys\nfrom {entry.module} import {entry.attr}\n"
        f"sys.exit({entry.attr}())\n"
    )
    script.chmod(0o755)
    return script


@pytest.mark.slow
@pytest.mark.parametrize("env_id", [env.replace("_", "-") for env in ENV_FOLDERS])
def test_vf_install_from_environments_folder_into_fresh_venv(env_id, tmp_path):
    """`vf-install <id> -p environments` from a copy of the repository, as a user runs it in an SV-Bench
    checkout: verifiers 0.1.x runs `uv pip install --python <venv python> -e environments/<id with _>`.

    Here uv runs offline and without build isolation (UV_OFFLINE, UV_NO_BUILD_ISOLATION): it must
    resolve every dependency against what the fresh venv already holds (.venv's, borrowed) and build
    with the hatchling and editables found there, instead of fetching them; online, a user's uv
    fetches hatchling and editables into an isolated build env and nothing else changes.
    """
    import importlib.util

    from uv import find_uv_bin

    if importlib.util.find_spec("editables") is None:  # hatchling's editable builds import it
        pytest.skip("the package 'editables' is not installed here (dev extra): uv cannot build an editable "
                    "install offline without it")
    env = env_id.replace("-", "_")
    copy = tmp_path / "repo"
    # symlinks=True keeps environments/<env>/<package> as links, now into the copy's own packages
    shutil.copytree(REPO, copy, symlinks=True, ignore=shutil.ignore_patterns(
        ".git", ".venv*", "runs", "outputs", "experiments", "dist", "build", "__pycache__", ".pytest_cache",
        "*.egg-info",
    ))
    fresh = tmp_path / "venv"
    fresh_python = _fresh_venv(fresh, with_metadata=True)
    site = fresh_python.parents[1] / "lib" / f"python{sys.version_info.major}.{sys.version_info.minor}" / "site-packages"
    before = {p.name for p in site.glob("*.dist-info")}
    _vf_install_script(fresh)
    (fresh / "bin" / "uv").symlink_to(find_uv_bin())  # vf-install runs `uv` from PATH

    done = subprocess.run(
        ["vf-install", env_id, "-p", "environments"], capture_output=True, text=True, cwd=copy,
        env=_clean_env(PATH=f"{fresh / 'bin'}{os.pathsep}{os.environ.get('PATH', '')}", UV_OFFLINE="1",
                       UV_NO_BUILD_ISOLATION="1", UV_CACHE_DIR=str(tmp_path / "uv-cache")),
    )
    assert done.returncode == 0, done.stdout + done.stderr
    # Exactly one new distribution: the environment, editable; every dependency was already there.
    added = {p.name for p in site.glob("*.dist-info")} - before
    assert added == {f"{env}-0.1.0.dist-info"}, added
    direct_url = json.loads((site / f"{env}-0.1.0.dist-info" / "direct_url.json").read_text())
    assert direct_url["dir_info"].get("editable") is True, direct_url

    out = _run_probe(fresh_python, env, tmp_path)
    # editable: the module loads from the copy's environment folder (through its links)
    assert out[0] == str(copy / "environments" / env / env / "__init__.py"), out[0]
    assert out[1] == ("4" if env == "sv_soar_student" else "3")
    assert out[2] == "SingleTurnEnv"

    # the README's next steps: the `sv-soar` command is there, and the e2 extra installs
    cli = subprocess.run([str(fresh / "bin" / "sv-soar"), "--help"], capture_output=True, text=True, cwd=tmp_path,
                         env=_clean_env())
    assert cli.returncode == 0 and "hardset" in cli.stdout and "serve-model" in cli.stdout, cli.stdout + cli.stderr
    extra = subprocess.run(
        ["uv", "pip", "install", "--python", str(fresh_python), "-e", f"environments/{env}[e2]"],
        capture_output=True, text=True, cwd=copy,
        env=_clean_env(PATH=f"{fresh / 'bin'}{os.pathsep}{os.environ.get('PATH', '')}", UV_OFFLINE="1",
                       UV_NO_BUILD_ISOLATION="1", UV_CACHE_DIR=str(tmp_path / "uv-cache")),
    )
    assert extra.returncode == 0, extra.stdout + extra.stderr
    assert subprocess.run([str(fresh_python), "-c", "import semgrep"], env=_clean_env(), cwd=tmp_path).returncode == 0


@pytest.mark.parametrize("env", ["sv_soar_teacher_v1", "sv_soar_student_v1"])
def test_v1_env_admits_prime_rls_pinned_verifiers_and_the_0_4_releases(env):
    """DESIGN.md §2: installing a v1 env beside prime-rl must not replace prime-rl's verifiers, a git build
    (`git describe` of its deps/verifiers submodule at prime-rl's main of Aug 2026: v0.3.0-62-ga60a606ec, so
    hatch-vcs versions it 0.3.1.dev62+ga60a606ec). tests/test_hosted_v1.py installs into venvs on both ends."""
    from packaging.requirements import Requirement

    with open(REPO / "environments" / env / "pyproject.toml", "rb") as f:
        deps = [Requirement(d) for d in tomllib.load(f)["project"]["dependencies"]]
    (verifiers,) = [d for d in deps if d.name == "verifiers"]
    for version in ("0.3.1.dev62+ga60a606ec", "0.3.1", "0.4.0", "0.4.9"):
        assert verifiers.specifier.contains(version, prereleases=True), version
    for version in ("0.3.0", "0.1.9.post3", "0.5.0"):  # v0 API, before v1's run semantics, or a future API
        assert not verifiers.specifier.contains(version, prereleases=True), version
