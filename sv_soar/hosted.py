"""`sv-soar package-env DATA --env ENV_DIR --name NAME`: a hard set (or a student training set) travels with a
verifiers v1 env as package data.

A hosted run (Prime Intellect's Hosted Training, prime-rl) installs a pushed env as a wheel on a cluster where
no path of the user's machine exists, and forwards no file and no secret but HF_TOKEN and WANDB_API_KEY. So
the v1 envs (environments/sv_soar_teacher_v1, environments/sv_soar_student_v1) take a *name*, never a path:

    sv-soar package-env runs/hard-e1 --env environments/sv_soar_teacher_v1 --name e1 --task e1
        -> environments/sv_soar_teacher_v1/sv_soar_teacher_v1/data/e1/{d_train,d_test,hard_set}.jsonl
    [orchestrator.train.source.env.taskset]  hard_set = "e1"

DATA is a `sv-soar hardset --out` folder (d_train.jsonl, and d_test.jsonl / hard_set.jsonl when present: the
contamination guard covers them) or one JSONL file of rows (stored as d_train.jsonl: `sv-soar export-vf`'s
train.jsonl for a student run). Rows are validated by the task before anything is written, and SOURCE.json
records where they came from (row counts and sha256; the machine's path is not recorded, as it means nothing
on a cluster). A wheel built from ENV_DIR carries the folder (`prime env push` builds that wheel; its limit is
250 MB, and a hard set is a few hundred kB).

This module imports neither verifiers nor torch: both the v0 CLI venv and the v1 env venv load it.
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
from importlib import resources
from pathlib import Path

from sv_soar.hard_set import load_hard_set

DATA_FOLDER = "data"  # inside the env's module: <module>/data/<name>/
SET_FILES = ("d_train.jsonl", "d_test.jsonl", "hard_set.jsonl")
NAME_PATTERN = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,63}$")


class PackagedDataError(ValueError):
    """A packaged set that is not there, or a name that cannot be one (the message says which and how)."""


def env_module(env_dir: Path) -> str:
    """The import name of a v1 env project: the folder's own name (environments/sv_soar_teacher_v1 holds
    the module sv_soar_teacher_v1), which must be a package there."""
    module = env_dir.name
    if not (env_dir / module / "__init__.py").is_file():
        raise PackagedDataError(f"--env {env_dir}: no package {module}/__init__.py there; expected a v1 env "
                                "project such as environments/sv_soar_teacher_v1")
    return module


def package_set(data: Path, env_dir: Path, name: str, task: str) -> Path:
    """Validate DATA's rows as `task` rows and copy them into ENV_DIR/<module>/data/NAME/; returns that folder."""
    if not NAME_PATTERN.match(name):
        raise PackagedDataError(f"--name {name!r}: use lower-case letters, digits, '.', '_' or '-' (it becomes a "
                                "folder name and a config value)")
    module = env_module(env_dir)
    hard = load_hard_set(data, task)
    sources = {"d_train.jsonl": hard.source}
    if data.is_dir():
        sources |= {f: data / f for f in SET_FILES[1:] if (data / f).is_file()}
    target = env_dir / module / DATA_FOLDER / name
    staging = target.with_name(f".{name}.partial")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    manifest: dict = {"name": name, "task": task, "d_train_rows": len(hard.d_train), "guarded_rows": hard.guarded,
                      "files": {}}
    for file_name, source in sources.items():
        payload = source.read_bytes()
        (staging / file_name).write_bytes(payload)
        manifest["files"][file_name] = {"sha256": hashlib.sha256(payload).hexdigest(), "bytes": len(payload)}
    (staging / "SOURCE.json").write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    shutil.rmtree(target, ignore_errors=True)
    staging.rename(target)
    return target


def packaged_set(module: str, name: str, *, arg: str = "hard_set") -> Path:
    """The folder of packaged set `name` inside the installed module `module` (a wheel's package data)."""
    root = Path(str(resources.files(module))) / DATA_FOLDER
    available = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")) \
        if root.is_dir() else []
    how = (f"package one with `sv-soar package-env DIR --env environments/{module} --name NAME --task TASK` "
           f"before building or pushing the env")
    if not isinstance(name, str) or not name:
        raise PackagedDataError(f"{arg} is empty: name a set packaged in {module} (packaged: {available or 'none'}); "
                                f"{how}")
    if not NAME_PATTERN.match(name):
        shown = repr(name) if len(name) <= 80 else repr(name[:77]) + "..."  # an argument from a TOML: never echoed whole
        raise PackagedDataError(f"{arg}={shown} is not a packaged-set name: a hosted env cannot read a path of your "
                                f"machine; {how} (packaged: {available or 'none'})")
    folder = root / name
    if not (folder / "d_train.jsonl").is_file():
        raise PackagedDataError(f"{arg}={name!r} is not packaged in {module} (packaged: {available or 'none'}); {how}")
    return folder
