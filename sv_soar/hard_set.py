"""The hard set a SOAR run starts from: D_train (Q_R is drawn from it) and the contamination guard over
every hard-set question (a `sv-soar hardset --out` folder, docs/design.md §4)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from sv_soar.jsonl import read_jsonl
from sv_soar.tasks import Row, get_task
from sv_soar.teacher.contamination import HardSetIndex


@dataclass(frozen=True)
class HardSet:
    """D_train (Q_R is drawn from it) and the contamination index over every hard-set question."""

    d_train: list[Row]
    index: HardSetIndex
    source: Path
    guarded: int  # questions the index holds


def load_hard_set(path: str | Path | None, task: str) -> HardSet:
    """A `sv-soar hardset --out` folder (D_train from d_train.jsonl; the guard covers hard_set.jsonl, or
    d_train + d_test), or a D_train JSONL file (the guard covers that file only)."""
    how = (
        f"run `sv-soar hardset --task {task} --model <student> --out DIR` (fail@K mining, docs/design.md §4) "
        "and pass hard_set=DIR"
    )
    if path is None:
        raise ValueError(f"sv-soar-teacher needs a hard set: {how}")
    path = Path(path).expanduser()
    validate = get_task(task).validate_row
    if path.is_dir():
        d_train_file = path / "d_train.jsonl"
        if not d_train_file.is_file():
            raise FileNotFoundError(f"{path}: no d_train.jsonl, not a hard-set folder; {how}")
        guard_files = [path / "hard_set.jsonl"] if (path / "hard_set.jsonl").is_file() else [
            f for f in (d_train_file, path / "d_test.jsonl") if f.is_file()
        ]
    elif path.is_file():
        d_train_file, guard_files = path, [path]
    else:
        raise FileNotFoundError(f"hard_set={str(path)!r}: no such file or folder; {how}")
    d_train = read_jsonl(d_train_file, validate)
    if not d_train:
        raise ValueError(f"{d_train_file}: D_train is empty; Q_R needs at least one question")
    guarded = [row for f in guard_files for row in (d_train if f == d_train_file else read_jsonl(f, validate))]
    return HardSet(d_train=d_train, index=HardSetIndex(guarded), source=d_train_file, guarded=len(guarded))
