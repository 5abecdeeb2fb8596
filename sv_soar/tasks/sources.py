"""Where problem rows come from: an SV-Bench JSONL file, the gated Hugging Face set, or the built-in
generator. Every row leaves here validated by its task (`Task.validate_row`).

    jsonl    SV-Bench JSONL (`question`, `answer`, `meta` a line). `path` may be the file, the
             SV-Bench public-mini folder (e1.jsonl), or an SV-Bench checkout (its
             environments/sv-env-network-logs/data/iot23-train-dev-test-v1.jsonl).
    hub      intertwine-ai/security-verifiers-e1 through `datasets.load_dataset`; the dataset is
             gated, so a token (HF_TOKEN or HUGGING_FACE_HUB_TOKEN) is required and checked
             before anything touches the network. E1_HF_REPO overrides the repository, as in
             SV-Bench's sv_shared/dataset_loader.py; its splits there are "train" (IoT-23,
             N=1800), "cic_ood" and "unsw_ood" (600 each).
    builtin  the task's generator (`Task.generate_rows`; E1: `sv_soar.tasks.e1.flows.generate_e1_flows`),
             n rows, balanced, seeded.

`n` caps the rows: a seeded shuffle, then the first n (the built-in generator makes exactly n).
"""

from __future__ import annotations

import logging
import os
import random
from pathlib import Path
from typing import Any

from sv_soar.jsonl import JsonlError, JsonlReport, read_jsonl
from sv_soar.tasks import Row, Task, get_task

log = logging.getLogger(__name__)

SOURCES = ("jsonl", "hub", "builtin")
DEFAULT_BUILTIN_N = 256


class HubAccessError(RuntimeError):
    """The gated SV-Bench dataset cannot be read: no token, or access not granted."""


def load_rows(
    task: str,
    source: str,
    *,
    path: str | os.PathLike | None = None,
    n: int | None = None,
    seed: int = 0,
    skip_bad: bool = False,
    hub_dataset: str | None = None,
    split: str = "train",
    report: JsonlReport | None = None,
) -> list[Row]:
    """Validated rows of `task` from `source` ("jsonl", "hub" or "builtin"), at most `n` of them.

    A malformed row raises JsonlError naming file:line (hub: dataset[split] row i) and the reason;
    with skip_bad=True it is skipped, logged, and recorded in `report` when one is given.
    """
    spec = get_task(task)
    if n is not None and n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    if source == "builtin":
        if spec.generate_rows is None:
            raise ValueError(f"source 'builtin' has no generator for task {task!r} (its Task sets no generate_rows)")
        rows = spec.generate_rows(DEFAULT_BUILTIN_N if n is None else n, seed)
        return [spec.validate_row(row) for row in rows]

    report = report if report is not None else JsonlReport()
    already = len(report)
    if source == "jsonl":
        if path is None:
            raise ValueError("source 'jsonl' needs path= (an SV-Bench JSONL file or checkout)")
        file = resolve_jsonl_path(spec, path)
        rows = read_jsonl(file, spec.validate_row, skip_bad=skip_bad, report=report)
        origin = str(file)
    elif source == "hub":
        override = os.environ.get(spec.hub_dataset_env, "") if spec.hub_dataset_env else ""
        repo = hub_dataset or override or spec.hub_dataset
        if not repo:
            raise ValueError(f"no Hugging Face dataset known for task {task!r}; pass hub_dataset=")
        rows = _hub_rows(spec, repo, split, skip_bad=skip_bad, report=report)
        origin = f"{repo}[{split}]"
    else:
        raise ValueError(f"unknown source {source!r}: expected one of {', '.join(SOURCES)}")

    skipped = report.skipped[already:]
    if skipped:
        log.warning("skipped %d bad row(s) of %s (skip_bad=True); first: %s", len(skipped), origin, skipped[0])
    if n is not None and n < len(rows):
        rows = list(rows)
        random.Random(seed).shuffle(rows)
        rows = rows[:n]
    return rows


def resolve_jsonl_path(task: Task, path: str | os.PathLike) -> Path:
    """`path` itself when it is a file, else the task's file inside an SV-Bench folder (Task.svbench_paths)."""
    path = Path(path)
    if path.is_file():
        return path
    if path.is_dir():
        for relative in task.svbench_paths:
            if (path / relative).is_file():
                return path / relative
        tried = ", ".join(task.svbench_paths) or "nothing known"
        raise FileNotFoundError(f"{path}: a folder without {task.name} data (looked for {tried})")
    raise FileNotFoundError(f"{path}: no such file or folder")


def hub_token() -> str | None:
    """The Hugging Face token from HF_TOKEN or HUGGING_FACE_HUB_TOKEN, if either is set."""
    return os.environ.get("HF_TOKEN") or os.environ.get("HUGGING_FACE_HUB_TOKEN") or None


def _gated_message(repo: str) -> str:
    return (
        f"{repo} is a gated Hugging Face dataset (SV-Bench keeps it gated against training "
        f"contamination). Request access at https://huggingface.co/datasets/{repo}, create a read "
        "token at https://huggingface.co/settings/tokens, then `export HF_TOKEN=hf_...` (or "
        "HUGGING_FACE_HUB_TOKEN). Without access, use source='jsonl' with a local SV-Bench file "
        "(e.g. the public mini set) or source='builtin'."
    )


def _hub_rows(spec, repo: str, split: str, *, skip_bad: bool, report: JsonlReport) -> list[Row]:
    token = hub_token()
    if token is None:  # checked before importing or calling anything that could reach the network
        raise HubAccessError(f"no Hugging Face token set. {_gated_message(repo)}")
    import datasets  # heavy: datasets, loaded only for a Hugging Face source

    try:
        records = datasets.load_dataset(repo, split=split, token=token)
    except Exception as exc:
        name = type(exc).__name__
        if name in {"GatedRepoError", "RepositoryNotFoundError"} or "gated" in str(exc).lower():
            refused = f"{repo}: {name}: access not granted to this token."
            raise HubAccessError(f"{refused} {_gated_message(repo)}") from exc
        raise
    rows: list[Row] = []
    for index, record in enumerate(records):
        try:
            rows.append(spec.validate_row(_from_hub_record(dict(record))))
        except (ValueError, TypeError, KeyError) as exc:
            where = f"{repo}[{split}] row {index}: {exc.args[0] if exc.args else type(exc).__name__}"
            if not skip_bad:
                raise JsonlError(where) from None
            report.skipped.append(where)
    return rows


def _from_hub_record(record: dict[str, Any]) -> dict[str, Any]:
    """Undo the Hub's encoding: `answer` is a ClassLabel there (0 Benign, 1 Malicious, per
    SV-Bench's _coerce_e1_answer_to_string)."""
    answer = record.get("answer")
    if isinstance(answer, int) and not isinstance(answer, bool) and answer in (0, 1):
        record["answer"] = "Malicious" if answer == 1 else "Benign"
    return record
