"""The run directory that keeps SOAR's promotion state between outer steps (the rule is sv_soar.promotion).

Run directory (every write atomic: temp + os.replace; state.json is written last and is the commit
point, so a crash mid-promotion leaves the previous state, never a state naming missing files):

    state.json                      PromotionState
    state.lock                      taken by `PromotionRun.locked()` (several processes may share a run)
    baseline/0002-step-000123/      the current baseline's adapter folder (save_baseline), from the
                                    2nd promotion, at step 123; absent: the bare model
    promoted/0002-step-000123.jsonl X_{k*} of that promotion (SV-Bench rows); PQ is every such file
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from sv_soar.baseline import Baseline
from sv_soar.jsonl import read_jsonl, write_jsonl, write_text_atomic
from sv_soar.promotion import BASELINE_DIR, PROMOTED_DIR, STATE_FORMAT, PromotionDecision, PromotionState
from sv_soar.soar_defaults import TAU, WINDOW
from sv_soar.student.adapters import load_baseline, save_baseline
from sv_soar.student.config import StudentTrainConfig
from sv_soar.tasks.task import Row

STATE_FILE = "state.json"
LOCK_FILE = "state.lock"


class PromotionStateError(ValueError):
    """A run directory's state cannot be used; the message starts with the file it is about."""


class PromotionRun:
    """A run directory holding the promotion state; reopen the same folder to resume a run.

        run = PromotionRun.open(run_dir, task="e1", model="smollm2-135m-instruct")
        scores = scorer.score(datasets, q_r, run.baseline(), seed=..., promoted=run.state.promoted,
                              keep_adapters=True)
        run.commit(promote(run.state, scores, datasets))
    """

    def __init__(self, run_dir: str | os.PathLike, state: PromotionState) -> None:
        self.run_dir = Path(run_dir)
        self.state = state
        self._baseline: Baseline | None = None

    @property
    def state_path(self) -> Path:
        return self.run_dir / STATE_FILE

    @classmethod
    def open(
        cls, run_dir: str | os.PathLike, *, task: str, model: str, window: int = WINDOW, tau: float = TAU
    ) -> PromotionRun:
        """Resume the run in `run_dir`, or start one there (state.json is written at once)."""
        run_dir = Path(run_dir)
        path = run_dir / STATE_FILE
        with _file_lock(run_dir):
            if not path.exists():
                run = cls(run_dir, PromotionState(task=task, model=model, window=window, tau=tau))
                write_text_atomic(path, run.state.model_dump_json(indent=2) + "\n")
                return run
            state = load_state(path)
        for name, wanted in (("task", task), ("model", model), ("window", window), ("tau", tau)):
            if getattr(state, name) != wanted:
                raise PromotionStateError(
                    f"{path}: this run has {name}={getattr(state, name)!r}, but {wanted!r} was asked for; "
                    "pass the run's value or use another run directory"
                )
        run = cls(run_dir, state)
        run._check_files()
        return run

    @contextlib.contextmanager
    def locked(self) -> Iterator[PromotionState]:
        """Hold the run directory's lock (state.lock; across processes, e.g. several env workers) and
        re-read state.json, so a promote + commit made under it starts from the newest state."""
        with _file_lock(self.run_dir):
            if self.state_path.exists():
                self.state = load_state(self.state_path)
                self._check_files()
            yield self.state

    def baseline(self) -> Baseline:
        """The current baseline student (loaded once; `Baseline("base")` for the bare model)."""
        ref = self.state.baseline
        if self._baseline is None or self._baseline.id != ref.id:
            if ref.folder is None:
                self._baseline = Baseline("base")
            else:
                baseline = load_baseline(self.run_dir / ref.folder)
                if baseline.id != ref.id:
                    raise PromotionStateError(
                        f"{self.state_path}: baseline folder {ref.folder!r} holds weights {baseline.id}, "
                        f"but the state names {ref.id}; the folder was changed outside this run"
                    )
                self._baseline = baseline
        return self._baseline

    def promoted_questions(self) -> list[Row]:
        """PQ: the rows of every promoted dataset, in promotion order."""
        rows: list[Row] = []
        for relative in self.state.promoted_datasets:
            rows.extend(read_jsonl(self.run_dir / relative))
        return rows

    def commit(self, decision: PromotionDecision, *, config: StudentTrainConfig | None = None) -> None:
        """Persist one step: promoted rows and baseline first, then state.json (the commit point).

        `config`: the students' StudentTrainConfig, whose LoRA config the baseline folder records
        (without it save_baseline reads rank and modules off the weights and assumes α = 2·rank).
        """
        new = decision.state
        if new.step != self.state.step + 1:
            raise ValueError(f"commit: a decision made at {new.step - 1} steps, but the run has {self.state.step}")
        if decision.promoted:
            assert decision.baseline is not None and new.baseline.folder is not None
            write_jsonl(self.run_dir / new.promoted_datasets[-1], decision.promoted_rows)
            save_baseline(decision.baseline, self.run_dir / new.baseline.folder, config=config)  # atomic: a rename
        write_text_atomic(self.state_path, new.model_dump_json(indent=2) + "\n")
        old_folder = self.state.baseline.folder
        self.state = new
        if decision.promoted:
            self._baseline = decision.baseline
            if old_folder and old_folder != new.baseline.folder:
                shutil.rmtree(self.run_dir / old_folder, ignore_errors=True)

    def remove_orphans(self) -> list[Path]:
        """Delete baseline folders and promoted files that state.json does not name: a previous baseline
        whose removal a kill cut short, or a promotion written by a step killed before its commit.
        Only while no other process shares the run directory (`sv-soar train` holds it exclusively)."""
        keep_baseline = self.state.baseline.folder
        keep_promoted = set(self.state.promoted_datasets)
        removed = []
        for path in sorted((self.run_dir / BASELINE_DIR).glob("[!.]*")):
            if path.is_dir() and f"{BASELINE_DIR}/{path.name}" != keep_baseline:
                shutil.rmtree(path)
                removed.append(path)
        for path in sorted((self.run_dir / PROMOTED_DIR).glob("[!.]*.jsonl")):
            if f"{PROMOTED_DIR}/{path.name}" not in keep_promoted:
                path.unlink()
                removed.append(path)
        return removed

    def _check_files(self) -> None:
        ref = self.state.baseline
        if ref.folder is not None and not (self.run_dir / ref.folder).is_dir():
            raise PromotionStateError(f"{self.state_path}: baseline folder {ref.folder!r} is missing")
        for relative in self.state.promoted_datasets:
            if not (self.run_dir / relative).is_file():
                raise PromotionStateError(f"{self.state_path}: promoted dataset {relative!r} is missing")


@contextlib.contextmanager
def _file_lock(run_dir: Path) -> Iterator[None]:
    run_dir.mkdir(parents=True, exist_ok=True)
    with open(run_dir / LOCK_FILE, "a+") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def load_state(path: str | os.PathLike) -> PromotionState:
    """Read a state.json; a corrupt or foreign file raises PromotionStateError naming it."""
    path = Path(path)
    try:
        data: Any = json.loads(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError:
        raise PromotionStateError(f"{path}: not UTF-8 text; not an sv-soar promotion state") from None
    except json.JSONDecodeError as exc:
        raise PromotionStateError(
            f"{path}: not valid JSON ({exc.msg} at line {exc.lineno}); the file is corrupt"
        ) from None
    except RecursionError:
        raise PromotionStateError(f"{path}: JSON nested too deeply; the file is corrupt") from None
    if not isinstance(data, dict) or data.get("format") != STATE_FORMAT:
        found = data.get("format") if isinstance(data, dict) else type(data).__name__
        raise PromotionStateError(
            f"{path}: not an sv-soar promotion state (format {found!r}, expected {STATE_FORMAT!r}); "
            "use an empty run directory"
        )
    try:
        return PromotionState.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(map(str, first["loc"])) or "(top level)"
        raise PromotionStateError(f"{path}: {where}: {first['msg']} ({exc.error_count()} error(s))") from None
