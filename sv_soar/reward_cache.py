"""The reward cache: a teacher dataset scored once is never trained on again (docs/design.md §4, §5).

SOAR's grounded reward R_k costs r student runs and an evaluation on Q_R. The same dataset comes back
whenever a teacher step is resumed, a rubric is re-run by a hosted trainer, or the teacher writes the
same problems twice; so each R_k is stored under a key that names everything it depends on:

    sha256(canonical JSON of: task, model, the dataset's rows (question, answer, info), baseline id,
           Q_R's rows, the student config, grounding, r, seed, promoted[, how Acc samples Q_R])

Rows are hashed with the fields that decide a problem (question, answer; info holds E2's oracle, as in
`sv_soar.evaluation.hardset.row_hash`), not meta. Row order stays in the key: it fixes which prompts a
student's batches draw. The dataset's position among the g datasets is NOT in the key (student seeds
derive from (seed, j) only), so a dataset scored at another position is a hit.

On disk: one JSON file a key, `<dir>/<key[:2]>/<key>.json`, plus `<key>.s<j>.safetensors` with the
students' LoRA weights when the caller asked to keep them. Writes are atomic (temp file + rename);
an unreadable entry is logged and treated as missing, so it is recomputed and overwritten.

A step's entries are written once all its students are measured on Q_R together, which on a CPU is many
minutes after the first of them finished training. So each finished student is also kept on its own until then,
`<key>.trained-<student seed>.safetensors` and `.json` (its weights and its training log): a run stopped in between
trains only the students it had not finished (`sv_soar.student_runs`), and the entry's writer drops them.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file

from sv_soar.jsonl import write_text_atomic
from sv_soar.student.full_finetune import write_safetensors
from sv_soar.tasks import Row

log = logging.getLogger(__name__)

# Bump when what an entry means changes (scoring, the key's contents), so old entries stop matching.
CACHE_VERSION = 1
PROBLEM_FIELDS = ("question", "answer", "info")


def problem_content(row: Row) -> dict[str, Any]:
    """The fields that decide a problem; meta (provenance, fail@K counts) does not change the reward."""
    return {name: row.get(name) for name in PROBLEM_FIELDS}


def reward_cache_key(
    *,
    task: str,
    model: str,
    dataset: Sequence[Row],
    baseline_id: str,
    q_r: Sequence[Row],
    config: dict[str, Any],
    grounding: str,
    students: int,
    seed: int,
    promoted: bool,
    q_r_sampling: dict[str, Any] | None = None,
) -> str:
    """sha256 hex of everything R_k depends on (see the module docstring). `q_r_sampling` (samples and
    temperature of a sampled Acc) enters the key only when given, so greedy entries keep their keys."""
    content = {
        "version": CACHE_VERSION,
        "task": task,
        "model": model,
        "dataset": [problem_content(row) for row in dataset],
        "baseline": baseline_id,
        "q_r": [problem_content(row) for row in q_r],
        "config": config,
        "grounding": grounding,
        "students": students,
        "seed": seed,
        "promoted": promoted,
        **({"q_r_sampling": q_r_sampling} if q_r_sampling is not None else {}),
    }
    canonical = json.dumps(content, sort_keys=True, ensure_ascii=False, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()


class RewardCache:
    """JSON entries (and optional student adapters) under one folder, keyed by `reward_cache_key`."""

    def __init__(self, folder: str | Path) -> None:
        self.folder = Path(folder)

    def _path(self, key: str, suffix: str = ".json") -> Path:
        return self.folder / key[:2] / f"{key}{suffix}"

    def adapter_path(self, key: str, student: int) -> Path:
        return self._path(key, f".s{student}.safetensors")

    def get(self, key: str) -> dict[str, Any] | None:
        """The stored entry, or None when there is none or it cannot be read (logged)."""
        path = self._path(key)
        if not path.is_file():
            return None
        try:
            entry = _read_record(path, {"key": key, "version": CACHE_VERSION}, "an entry for this key and cache version")
        except (OSError, ValueError, RecursionError) as exc:  # JSONDecodeError, UnicodeDecodeError: ValueErrors
            log.warning("reward cache: ignoring unreadable entry %s (%s); it will be recomputed", path, exc)
            return None
        return entry

    def put(self, key: str, entry: dict[str, Any]) -> Path:
        return write_text_atomic(self._path(key), json.dumps({**entry, "key": key, "version": CACHE_VERSION}))

    def get_adapter(self, key: str, student: int) -> dict[str, torch.Tensor] | None:
        path = self.adapter_path(key, student)
        if not path.is_file():
            return None
        try:
            return load_file(str(path))
        except Exception as exc:  # safetensors raises its own error types for a damaged header
            log.warning("reward cache: ignoring unreadable adapter %s (%s)", path, exc)
            return None

    def put_adapter(self, key: str, student: int, state: dict[str, torch.Tensor]) -> Path:
        path = self.adapter_path(key, student)
        write_safetensors(path, state, atomic=True)
        return path

    # --- students trained before a stop, kept until their dataset's entry is written ----------------------------

    def _trained_path(self, key: str, seed: int, suffix: str) -> Path:
        return self._path(key, f".trained-{seed}{suffix}")

    def put_trained(self, key: str, seed: int, state: dict[str, torch.Tensor], record: dict[str, Any]) -> None:
        """Keep a finished student (LoRA weights and a JSON record of its run); the record is written last, so a
        record on disk means its weights are whole."""
        write_safetensors(self._trained_path(key, seed, ".safetensors"), state, atomic=True)
        write_text_atomic(self._trained_path(key, seed, ".json"), json.dumps({**record, "key": key, "seed": seed}))

    def get_trained(self, key: str, seed: int) -> tuple[dict[str, torch.Tensor], dict[str, Any]] | None:
        """A kept student's weights and record, or None when there is none or it cannot be read (logged)."""
        record_path = self._trained_path(key, seed, ".json")
        if not record_path.is_file():
            return None
        try:
            record = _read_record(record_path, {"key": key, "seed": seed}, "the record of this dataset's student")
            if not isinstance(record.get("log"), list) or not isinstance(record.get("seconds_train"), (int, float)):
                raise ValueError("no training log or seconds_train")
            return load_file(str(self._trained_path(key, seed, ".safetensors"))), record
        except Exception as exc:  # noqa: BLE001 - JSON, a missing file or safetensors' own header errors
            log.warning("reward cache: ignoring the unreadable kept student %s (%s); it will be trained again",
                        record_path, exc)
            return None

    def drop_trained(self, key: str, seed: int | None = None) -> None:
        """Remove a dataset's kept students (its entry is written, or its scoring is over), or one of them."""
        for path in self._path(key).parent.glob(f"{key}.trained-{'*' if seed is None else f'{seed}.*'}"):
            path.unlink(missing_ok=True)


def _read_record(path: Path, expected: dict[str, Any], what: str) -> dict[str, Any]:
    """The JSON object in `path`, holding the `expected` values; a ValueError (or OSError) when it is not `what`."""
    record = json.loads(path.read_text(encoding="utf-8"))
    if not isinstance(record, dict) or any(record.get(name) != value for name, value in expected.items()):
        raise ValueError(f"not {what}")
    return record

