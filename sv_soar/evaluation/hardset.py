"""Fail@K hard-set mining: the problems the base student never solves (SOAR's D, docs/design.md §4).

The paper samples K = 128 completions a problem at temperature 1.0 and keeps the problems solved
0/K times; that hard set D is split 50/50 at random into D_train (the questions SOAR's teacher reward
is measured on) and D_test (final evaluation only). The same success matrix answers
the seed write-up's Phase 1 question (docs/design.md §1): what fraction of problems has zero pass rate at
K = 1, 8, ..., 128, overall and by difficulty group (task.breakdown).

This module holds the numbers and the mining (`mine_hard_set`). The success matrix comes from sampling a
model (`sv_soar.evaluation.pass_at_k.sample_successes`) or from saved evaluation results
(`sv_soar.evaluation.saved_results`); `sv-soar hardset` (sv_soar.commands.hardset) chooses which.
Saved results keep each problem's own sample count K (a problem is hard when 0/K of its samples
succeeded); the zero-pass table and pass@k are reported up to the smallest K.

`mine_hard_set(..., out_dir)` writes hard_set.jsonl, d_train.jsonl, d_test.jsonl (SV-Bench rows,
meta["fail_at_k"] added), successes.jsonl, cold_start_report.md and cold_start.png.
"""

from __future__ import annotations

import copy
import hashlib
import json
import math
import random
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from sv_soar.evaluation.cold_start_report import OVERALL, ColdStartReport, write_cold_start_report
from sv_soar.evaluation.pass_at_k import mean_pass_at_k
from sv_soar.jsonl import write_jsonl
from sv_soar.tasks import Row, Task

COLD_START_KS = (1, 8, 16, 32, 64, 128)  # the seed write-up (docs/design.md §1) Phase 1 (K = 8..128) plus K = 1
PASS_KS = (1, 4, 8, 16, 32)  # the paper's final pass@k (docs/design.md §4)
DEFAULT_SAMPLES = 128  # the paper's K for the hard set (docs/design.md §4)


# --------------------------------------------------------------------------------------- numbers


def row_hash(row: Row) -> str:
    """Content hash of a problem (question, answer, info; not meta): a stable id across files."""
    content = {key: row.get(key) for key in ("question", "answer", "info")}
    return hashlib.sha256(json.dumps(content, sort_keys=True, ensure_ascii=False).encode()).hexdigest()[:16]


def cold_start_ks(samples: int) -> list[int]:
    """The K values to report: those of COLD_START_KS up to S, and S itself (the hard set's K)."""
    return sorted({k for k in COLD_START_KS if k <= samples} | {samples})


def zero_pass_fraction(successes: np.ndarray, k: int) -> float:
    """Fraction of problems (rows) with no success among their first k samples (columns)."""
    successes = _as_matrix(successes)
    if not 1 <= k <= successes.shape[1]:
        raise ValueError(f"zero_pass_fraction: k={k} with {successes.shape[1]} samples a problem")
    if successes.shape[0] == 0:
        raise ValueError("zero_pass_fraction: no problems")
    return float((~successes[:, :k].any(axis=1)).mean())


def zero_pass_table(
    successes: np.ndarray, groups: Sequence[str], ks: Sequence[int]
) -> tuple[dict[str, dict[int, float]], dict[str, int]]:
    """Zero-pass fraction for each K, overall and per group; also the size of each group.

    Groups are listed overall first, then by size (largest first, ties by name).
    """
    successes = _as_matrix(successes)
    if len(groups) != successes.shape[0]:
        raise ValueError(f"zero_pass_table: {len(groups)} groups for {successes.shape[0]} problems")
    labels = np.asarray(groups, dtype=object)
    names = sorted(set(groups), key=lambda g: (-int((labels == g).sum()), g))
    table = {OVERALL: {k: zero_pass_fraction(successes, k) for k in ks}}
    sizes = {OVERALL: int(successes.shape[0])}
    for name in names:
        if name == OVERALL:
            raise ValueError(f"breakdown group name {OVERALL!r} is reserved")
        members = successes[labels == name]
        table[name] = {k: zero_pass_fraction(members, k) for k in ks}
        sizes[name] = int(members.shape[0])
    return table, sizes


def hard_set_indices(successes: np.ndarray) -> list[int]:
    """Indices of the problems solved in none of their samples (fail@S)."""
    successes = _as_matrix(successes)
    return [int(i) for i in np.flatnonzero(~successes.any(axis=1))]


def split_hard_set(rows: Sequence[Row], seed: int = 0) -> tuple[list[Row], list[Row]]:
    """Split the hard set 50/50 at random into (D_train, D_test); D_train gets the odd one.

    Rows are first put in content-hash order, so the split depends only on the set of rows and the
    seed, never on the order they came in.
    """
    ordered = sorted(rows, key=lambda row: (row_hash(row), json.dumps(row, sort_keys=True, ensure_ascii=False)))
    random.Random(seed).shuffle(ordered)
    n_train = math.ceil(len(ordered) / 2)
    return ordered[:n_train], ordered[n_train:]


def group_of(task: Task, row: Row) -> str:
    """The row's breakdown group; rows without the metadata (e.g. from saved results) -> 'unknown'."""
    try:
        return str(task.breakdown(row))
    except (KeyError, TypeError, AttributeError):
        return "unknown"


def _outcome_rows(successes: Any) -> list[np.ndarray]:
    """One flat bool array a problem, from a 2-D matrix or a ragged list."""
    if isinstance(successes, np.ndarray):
        return list(_as_matrix(successes))
    out = [np.asarray(o, dtype=bool) for o in successes]
    if any(o.ndim != 1 for o in out):
        raise ValueError("success matrix must be 2-D (problems x samples) or one flat outcome list a problem")
    return out


def _as_matrix(successes: Any) -> np.ndarray:
    matrix = np.asarray(successes, dtype=bool)
    if matrix.ndim != 2:
        raise ValueError(f"success matrix must be 2-D (problems x samples), got shape {matrix.shape}")
    return matrix


# ------------------------------------------------------------------------- mining and writing out


@dataclass
class FailAtK:
    """What mining produced: the report's numbers and the three problem sets."""

    report: ColdStartReport
    hard_set: list[Row]
    d_train: list[Row]
    d_test: list[Row]
    files: list[Path] = field(default_factory=list)


def mine_hard_set(
    task: Task,
    rows: Sequence[Row],
    successes: np.ndarray,
    out_dir: str | Path,
    *,
    model: str,
    source: str,
    temperature: float | None,
    seed: int = 0,
    command: str = "",
    seconds: float | None = None,
    notes: Sequence[str] = (),
    min_samples: str | None = None,
) -> FailAtK:
    """Mine fail@S from a (problems x S) success matrix and write every output file to out_dir.

    `successes` may also be ragged (one outcome list a problem, each with its own K, from saved
    results): a problem is hard when none of its K samples succeeded, and the zero-pass table and
    pass@k are computed up to the smallest K.
    """
    per = _outcome_rows(successes)
    if len(per) != len(rows):
        raise ValueError(f"{len(rows)} rows but {len(per)} rows in the success matrix")
    if not per or min(len(o) for o in per) == 0:
        raise ValueError(f"nothing to mine: {len(per)} problems, fewest samples {min((len(o) for o in per), default=0)}")
    samples = min(len(o) for o in per)
    successes = np.array([o[:samples] for o in per], dtype=bool)  # the first S of each: the table's columns
    out_dir = Path(out_dir)
    groups = [group_of(task, row) for row in rows]
    zero_pass, sizes = zero_pass_table(successes, groups, cold_start_ks(samples))
    pass_k = {k: mean_pass_at_k(per, k) for k in PASS_KS if k <= samples}

    def annotated(i: int) -> Row:
        row = copy.deepcopy(dict(rows[i]))
        meta = row.get("meta") if isinstance(row.get("meta"), dict) else {}
        row["meta"] = {
            **meta,
            "fail_at_k": {
                "model": model,
                "samples": len(per[i]),
                "successes": int(per[i].sum()),
                "temperature": temperature,
            },
        }
        return row

    hard = [annotated(i) for i, outcomes in enumerate(per) if not outcomes.any()]
    d_train, d_test = split_hard_set(hard, seed)
    for name, part in (("d_train", d_train), ("d_test", d_test)):
        for row in part:
            row["meta"]["fail_at_k"]["split"] = name
    # hard_set.jsonl lists D in input order; its rows are the same objects, so they carry the tag

    files = [
        write_jsonl(out_dir / "hard_set.jsonl", hard),
        write_jsonl(out_dir / "d_train.jsonl", d_train),
        write_jsonl(out_dir / "d_test.jsonl", d_test),
        write_jsonl(
            out_dir / "successes.jsonl",
            (
                {
                    "hash": row_hash(row),
                    "question": row.get("question"),
                    "answer": row.get("answer"),
                    "group": group,
                    "solved": int(outcomes.sum()),
                    "samples": len(outcomes),
                    "successes": [bool(s) for s in outcomes],
                }
                for row, group, outcomes in zip(rows, groups, per)
            ),
        ),
    ]
    report = ColdStartReport(
        task=task.name,
        model=model,
        source=source,
        samples=samples,
        temperature=temperature,
        seed=seed,
        command=command,
        problems=len(rows),
        zero_pass=zero_pass,
        group_sizes=sizes,
        pass_at_k=pass_k,
        hard_set=len(hard),
        d_train=len(d_train),
        d_test=len(d_test),
        seconds=seconds,
        notes=list(notes),
        k_per_problem=dict(sorted(Counter(len(o) for o in per).items())),
        min_samples=min_samples,
    )
    files += list(write_cold_start_report(report, out_dir))
    return FailAtK(report=report, hard_set=hard, d_train=d_train, d_test=d_test, files=files)
