"""The run folder of an experiment (`sv-soar train`), read back by `evaluate`, `report` and `--resume`.

    config.toml        the resolved config (every default filled in); resume refuses a different one
    hardset/           d_train.jsonl, d_test.jsonl copied from the config's hard set, so a run stands alone
    state.json         promotion state, baseline/ and promoted/ (sv_soar.promotion owns these)
    steps.jsonl        one line per completed outer step
    teacher/           teacher adapter checkpoints
    evaluation/        final.json and the final students, loop-student.json (sv_soar.evaluation.final); while a
                       final student trains, its seed-S.phase-P.checkpoint (sv_soar.student.checkpoint)
    train.lock         held by the one `sv-soar train` working in the folder (`exclusive_run`)

Every file is written atomically (sv_soar.jsonl.atomic_path).
"""

from __future__ import annotations

import contextlib
import fcntl
import shutil
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from sv_soar.config import ConfigError, RunConfig, config_diff, dump_toml, parse_config
from sv_soar.jsonl import atomic_path, read_jsonl, write_text_atomic
from sv_soar.tasks import Row, get_task
from sv_soar.tasks.sources import load_rows

CONFIG_FILE = "config.toml"
TRAIN_LOCK = "train.lock"
HARDSET_DIR = "hardset"
HARDSET_FILES = ("d_train.jsonl", "d_test.jsonl")


class RunDirError(ValueError):
    """A folder that is not a usable run; the message names the folder or file."""


@dataclass
class Run:
    folder: Path
    config: RunConfig

    def d_train(self) -> list[Row]:
        return self._hardset_rows("d_train.jsonl")

    def d_test(self) -> list[Row]:
        return self._hardset_rows("d_test.jsonl")

    def promoted_datasets(self) -> list[list[Row]]:
        """The promoted datasets X_{k*}, in promotion order (empty before the first promotion)."""
        from sv_soar.promotion_run import STATE_FILE, load_state  # delayed: sv_soar.promotion_run imports torch

        path = self.folder / STATE_FILE
        if not path.is_file():
            return []
        return [read_jsonl(self.folder / relative) for relative in load_state(path).promoted_datasets]

    def loop_student(self) -> Path | None:
        """The outer loop's own student: the folder of the last promoted baseline, the student every later R_k
        was measured against (None before the first promotion, when that student is the bare base model)."""
        from sv_soar.promotion_run import STATE_FILE, load_state  # delayed: sv_soar.promotion_run imports torch

        path = self.folder / STATE_FILE
        folder = load_state(path).baseline.folder if path.is_file() else None
        return None if folder is None else self.folder / folder

    def _hardset_rows(self, name: str) -> list[Row]:
        return load_rows(self.config.data.task, "jsonl", path=str(self.folder / HARDSET_DIR / name))


def open_run(folder: str | Path) -> Run:
    """Read an existing run folder; a folder that is not a run says so."""
    folder = Path(folder)
    if not folder.is_dir():
        raise RunDirError(f"{folder}: no such run folder")
    path = folder / CONFIG_FILE
    if not path.is_file():
        raise RunDirError(f"{folder}: not an sv-soar run folder (no {CONFIG_FILE}; `sv-soar train` writes one)")
    try:
        config = parse_config(tomllib.loads(path.read_text(encoding="utf-8")), origin=str(path))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise RunDirError(f"{path}: not valid TOML: {exc}") from None
    except RecursionError:
        raise RunDirError(f"{path}: not valid TOML: nested too deeply") from None
    except ConfigError as exc:
        raise RunDirError(str(exc)) from None
    for name in HARDSET_FILES:
        if not (folder / HARDSET_DIR / name).is_file():
            raise RunDirError(f"{folder}: {HARDSET_DIR}/{name} is missing; the run folder is incomplete")
    return Run(folder, config)


def create_run(folder: str | Path, config: RunConfig) -> Run:
    """Start a run in `folder` (new or empty), or return the run already there when its config matches."""
    folder = Path(folder)
    if (folder / CONFIG_FILE).is_file():
        run = open_run(folder)
        differing = config_diff(run.config.resolved(), config.resolved())
        if differing:
            raise RunDirError(
                f"{folder}: holds a run with another config; differing keys:\n  " + "\n  ".join(differing)
            )
        return run
    if folder.exists() and any(p.name != HARDSET_DIR for p in folder.iterdir()):  # hardset/: an earlier try
        raise RunDirError(f"{folder}: exists and is not empty, and is not a run folder; choose another")
    task = get_task(config.data.task)
    source = Path(config.data.hard_set)
    for name in HARDSET_FILES:
        rows = load_rows(task.name, "jsonl", path=str(_hardset_file(source, name)))  # validates, file:line
        if not rows:
            raise RunDirError(f"{source / name}: empty; a run needs a non-empty hard set split")
    for name in HARDSET_FILES:
        with atomic_path(folder / HARDSET_DIR / name) as tmp:
            shutil.copyfile(_hardset_file(source, name), tmp)
    write_text_atomic(folder / CONFIG_FILE, dump_toml(config.resolved()))  # last: the folder is now a run
    return Run(folder, config)


def _hardset_file(source: Path, name: str) -> Path:
    path = source / name
    if not path.is_file():
        raise RunDirError(
            f"data.hard_set = {str(source)!r}: no {name} there; run `sv-soar hardset --out {source}` first"
        )
    return path


@contextlib.contextmanager
def exclusive_run(folder: str | Path) -> Iterator[None]:
    """Hold the run folder for one `sv-soar train`: a second one is refused instead of interleaving its
    writes, and what a killed one left behind may be cleaned up. The lock (flock) dies with its process,
    so a SIGKILLed run never leaves it held."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / TRAIN_LOCK, "a+") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise RunDirError(f"{folder}: another `sv-soar train` is running in this folder") from None
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
