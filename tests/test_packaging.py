"""The environment folders are installable projects whose wheels carry the whole code (docs/design.md §2)."""

from __future__ import annotations

import json
import os
import subprocess
import shutil
import sys
import zipfile
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
    from sv_soar.tasks.e1.flows import generate_e1_flows

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
    # the demos' recipe adapters (55 MB of an env wheel without its exclude) stay out of what a hub gets
    assert not [name for name in zipfile.ZipFile(wheel).namelist() if "recipe_adapters" in name]

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


# --- the README's SV-Bench install steps, in a venv made as SV-Bench makes it ------------------------------

SVBENCH_VERIFIERS = "0.1.9.post3"  # what SV-Bench's lock holds (docs/design.md §2); the install must keep it
# the README's lines this test runs, as written there ("/path/to/sv-soar" standing for the repository)
README_STEPS = [
    "vf-install sv-soar-student -p /path/to/sv-soar/environments",
    "sv-soar --help",
    """vf-eval sv-soar-student -a '{"source": "jsonl", "path": "datasets/public_mini/e1.jsonl"}'""",
    "uv pip install torch --index-url https://download.pytorch.org/whl/cpu",
]


def _uv() -> str:
    """uv as SV-Bench's setup has it: on PATH, else this venv's (the dev extra), else `pip install uv` here."""
    found = shutil.which("uv")
    if found:
        return found
    try:
        from uv import find_uv_bin
    except ImportError:
        subprocess.run([sys.executable, "-m", "pip", "install", "-q", "uv"], check=True)
        from uv import find_uv_bin
    return find_uv_bin()


def _pypi_reachable() -> bool:
    import socket

    try:
        socket.create_connection(("pypi.org", 443), timeout=5).close()
        return True
    except OSError:
        return False


def _local_cpu_torch() -> list[str]:
    """uv's arguments for this machine's local CPU torch wheel (pip's find-links, as `make setup` gets it), or the
    CPU index a user passes (README) where there is none."""
    config = subprocess.run([sys.executable, "-m", "pip", "config", "get", "global.find-links"],
                            capture_output=True, text=True)
    for folder in [*os.environ.get("PIP_FIND_LINKS", "").split(), *config.stdout.split()]:
        if list(Path(folder).glob("torch-2.13.0+cpu-*.whl")):
            return ["--find-links", folder]
    return ["--index-url", "https://download.pytorch.org/whl/cpu", "--extra-index-url", "https://pypi.org/simple"]


@pytest.mark.slow
def test_readme_svbench_install_steps_in_a_uv_venv(svbench_mini, tmp_path):
    """README, "Install into an SV-Bench checkout", run as written in a checkout with SV-Bench's venv: made by
    `uv venv` (no pip), SV-Bench's verifiers in it, uv on PATH. Downloads from PyPI (uv's cache keeps them)."""
    readme = (REPO / "README.md").read_text()
    for line in README_STEPS:  # the test runs what the README says
        assert line in readme, line
    if not _pypi_reachable():
        pytest.skip("PyPI is not reachable: the steps install the envs' dependencies from it")
    uv = _uv()
    repo = tmp_path / "sv-soar"  # a copy: the editable install builds there, not in the working tree
    shutil.copytree(REPO, repo, symlinks=True, ignore=shutil.ignore_patterns(
        ".git", ".venv*", "runs", "outputs", "experiments", "dist", "build", "__pycache__", ".pytest_cache", "*.egg-info"))
    checkout = tmp_path / "security-verifiers"  # what a fresh checkout has: SV-Bench's public mini sets
    (checkout / "datasets" / "public_mini").mkdir(parents=True)
    shutil.copy(svbench_mini / "e1.jsonl", checkout / "datasets" / "public_mini" / "e1.jsonl")
    uv_bin = tmp_path / "uv-bin"  # uv on PATH, on its own (SV-Bench's machines have it as a system tool)
    uv_bin.mkdir()
    (uv_bin / "uv").symlink_to(uv)
    venv_dir = checkout / ".venv"
    subprocess.run([uv, "venv", "-q", "--python", sys.executable, str(venv_dir)], check=True, cwd=checkout,
                   env=_clean_env())
    python = venv_dir / "bin" / "python"
    assert not (venv_dir / "bin" / "pip").exists()  # SV-Bench's venv has no pip: every step below is uv
    # `source .venv/bin/activate`: the venv first on PATH, VIRTUAL_ENV set, uv on PATH
    active = _clean_env(VIRTUAL_ENV=str(venv_dir), UV_CACHE_DIR=os.environ.get("UV_CACHE_DIR", str(Path.home() / ".cache" / "uv")),
                        PATH=os.pathsep.join([str(venv_dir / "bin"), str(uv_bin), os.environ.get("PATH", "")]))

    def step(*argv: str) -> subprocess.CompletedProcess:
        done = subprocess.run(list(argv), capture_output=True, text=True, cwd=checkout, env=active, timeout=900)
        assert done.returncode == 0, f"{argv}: {done.stdout[-3000:]}{done.stderr[-3000:]}"
        return done

    step("uv", "pip", "install", "-q", f"verifiers=={SVBENCH_VERIFIERS}")  # SV-Bench's setup put it there
    step("uv", "pip", "install", "-q", "torch==2.13.0", *_local_cpu_torch())  # README: the CPU index
    step("vf-install", "sv-soar-student", "-p", str(repo / "environments"))
    cli = step("sv-soar", "--help")
    assert "hardset" in cli.stdout
    # what vf-eval does first: load the env on the data file the README names, which a fresh checkout has
    probe = ("import json, sv_soar_student, torch, verifiers; from importlib.metadata import distributions; "
             "env = sv_soar_student.load_environment(source='jsonl', path='datasets/public_mini/e1.jsonl'); "
             "print(json.dumps({'file': sv_soar_student.__file__, 'rows': len(env.dataset), 'env': type(env).__name__, "
             "'verifiers': verifiers.__version__, 'cuda': torch.version.cuda, 'torch': torch.__version__, "
             "'nvidia': sorted(d.metadata['Name'] for d in distributions() if d.metadata['Name'].startswith('nvidia'))}))")
    out = json.loads(step(str(python), "-c", probe).stdout.strip().splitlines()[-1])
    assert out["file"] == str(repo / "environments" / "sv_soar_student" / "sv_soar_student" / "__init__.py"), out
    assert out["rows"] == 100 and out["env"] == "SingleTurnEnv", out
    assert out["verifiers"] == SVBENCH_VERIFIERS, out  # SV-Bench's verifiers was not moved
    assert out["torch"].startswith("2.13.0") and out["cuda"] is None and out["nvidia"] == [], out  # CPU only
