"""Saved evaluation results read as a success matrix for hard-set mining (sv_soar.evaluation.hardset).

Three formats, one JSON object a line: vf-eval's `results.jsonl` (verifiers 0.1.x, `vf-eval -s`), a
hosted run's `results.jsonl` (columns as JSON strings) and SV-Bench's own `scripts/eval_*.py` output.
`load_eval_results` groups the rollouts by problem; `rectangular` and `per_problem` turn the groups into
what `mine_hard_set` takes (S samples a problem, or each problem with its own K).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from sv_soar.evaluation.hardset import row_hash
from sv_soar.jsonl import read_jsonl
from sv_soar.scoring.completion_text import completion_text, message_text
from sv_soar.tasks import Row, Task


@dataclass
class EvalResults:
    """Saved rollouts grouped into problems: rows[i] was sampled len(outcomes[i]) times."""

    rows: list[Row]
    outcomes: list[list[bool]]
    models: list[str]  # from metadata.json beside each results file, where there is one
    temperatures: list[float]
    skipped_errors: int = 0  # rollouts that failed (API error), not counted as samples
    success_from: set[str] = field(default_factory=set)  # metric names used, or "task.is_success"


def load_eval_results(
    paths: Sequence[str | Path],
    task: Task,
    *,
    success_metric: str | None = None,
    success_threshold: float | None = None,
    rescore: bool = False,
    known_rows: Sequence[Row] = (),
) -> EvalResults:
    """Read saved evaluation results and group the rollouts by problem.

    Formats (one JSON object a line; bad lines raise file:line errors through read_jsonl):
    - vf-eval (verifiers 0.1.x `-s`): example_id (older: id), prompt and completion as chat
      messages, answer, info, reward, metrics {name: value} and/or the metric names as top-level keys.
    - a hosted run's results.jsonl: the same columns with prompt, completion, metrics and info as JSON
      strings, and a reasoning model's answer in `reasoning_content` where `content` is null.
    - SV-Bench scripts/eval_*.py: index, prompt (the question text), completion (text), answer,
      rewards {name: value}, completion_error on a failed call.
    A rollout is a success when its recorded metric (`success_metric`, default task.success_metrics)
    reaches its threshold (`success_threshold`; default the table's, else 1). A rollout without the
    metric is an error naming the metrics it has, unless `rescore` (then task.is_success scores it).
    Problems are grouped by content (question, answer); the question is the user message's text.
    `known_rows` (the SV-Bench data the eval ran on) restores each problem's full row, meta included.
    """
    table = dict(task.success_metrics)
    if success_metric:
        metrics = ((success_metric, success_threshold if success_threshold is not None else table.get(success_metric, 1.0)),)
    else:
        metrics = tuple((name, success_threshold if success_threshold is not None else t) for name, t in table.items())
    by_question: dict[str, list[Row]] = {}
    for row in known_rows:
        by_question.setdefault(row["question"], []).append(row)
    problems: dict[str, tuple[Row, list[bool]]] = {}
    result = EvalResults(rows=[], outcomes=[], models=[], temperatures=[])

    def parse(record: Any) -> tuple[Row, bool] | None:
        if not isinstance(record, dict):
            raise ValueError(f"expected a JSON object (one rollout), got {type(record).__name__}")
        record = _decoded(record)
        if record.get("error") or record.get("completion_error"):
            return None
        question = _question_of(record)
        row = _problem_row(record, question, task, by_question)
        value, name, threshold = _metric(record, metrics)
        if value is None:
            if not rescore:
                have = sorted(k for holder in (record.get("metrics"), record.get("rewards"))
                              if isinstance(holder, dict) for k in holder)
                wanted = ", ".join(repr(n) for n, _ in metrics) or "(none for this task: pass --success-metric)"
                raise ValueError(f"no success metric {wanted} in this rollout (it records: {', '.join(have) or 'none'}); "
                                 "pass --success-metric NAME, or --rescore to score the completions again")
            if "completion" not in record:
                raise ValueError("no 'completion' and no success metric to score the rollout by")
            success = bool(task.is_success(completion_text(record.get("completion"), turns="all"), row))
            result.success_from.add("task.is_success")
        else:
            success = value >= threshold - 1e-9
            result.success_from.add(name if threshold == 1.0 else f"{name} >= {threshold:g}")
        return row, success

    for path in paths:
        parsed = read_jsonl(path, validate=parse)
        for item in parsed:
            if item is None:
                result.skipped_errors += 1
                continue
            row, success = item
            key = row_hash(row)
            problems.setdefault(key, (row, []))[1].append(success)
        model, temperature = _run_metadata(Path(path).parent)
        if model is not None and model not in result.models:
            result.models.append(model)
        if temperature is not None and temperature not in result.temperatures:
            result.temperatures.append(temperature)
    for row, outcomes in problems.values():
        result.rows.append(row)
        result.outcomes.append(outcomes)
    return result


_JSON_COLUMNS = ("prompt", "completion", "metrics", "rewards", "info")


def _decoded(record: dict) -> dict:
    """A hosted run's record with its JSON-string columns (prompt, completion, metrics, info) decoded."""
    out = dict(record)
    for key in _JSON_COLUMNS:
        value = out.get(key)
        if not isinstance(value, str) or not value.lstrip().startswith(("[", "{")):
            continue
        try:
            decoded = json.loads(value)
        except (json.JSONDecodeError, RecursionError):
            continue
        if key in ("prompt", "completion"):  # only chat messages; a question text may start with "[" too
            if isinstance(decoded, list) and decoded and all(isinstance(m, dict) and "role" in m for m in decoded):
                out[key] = decoded
        elif isinstance(decoded, dict):
            out[key] = decoded
    return out


def _question_of(record: dict) -> str:
    if isinstance(record.get("question"), str):
        return record["question"]
    prompt = record.get("prompt")
    if isinstance(prompt, str):  # SV-Bench scripts save the question text as the prompt
        return prompt
    if isinstance(prompt, list):
        for message in reversed(prompt):
            if isinstance(message, dict) and message.get("role") == "user":
                return message_text(message.get("content"))
        raise ValueError("prompt has no user message to take the question from")
    raise ValueError("no 'prompt' (chat messages or text) and no 'question'")


def _problem_row(record: dict, question: str, task: Task, by_question: dict[str, list[Row]]) -> Row:
    answer = record.get("answer")
    candidates = by_question.get(question, [])
    if candidates:
        matching = [row for row in candidates if answer in (None, "") or row.get("answer") == answer]
        if not matching:
            raise ValueError(
                f"answer {answer!r} differs from the data file's {candidates[0].get('answer')!r} for this question"
            )
        return matching[0]
    row: dict[str, Any] = {"question": question}
    if answer not in (None, ""):
        row["answer"] = answer
    info = record.get("info")
    if isinstance(info, dict) and info:
        meta = info.get("meta")
        if isinstance(meta, dict):
            row["meta"] = meta
        rest = {k: v for k, v in info.items() if k != "meta"}
        if rest:
            row["info"] = rest
    row.setdefault("meta", {})
    return task.validate_row(row)


def _metric(record: dict, metrics: Sequence[tuple[str, float]]) -> tuple[float | None, str, float]:
    for name, threshold in metrics:
        for holder in (record.get("metrics"), record.get("rewards"), record):
            if isinstance(holder, dict) and name in holder and holder[name] is not None:
                value = holder[name]
                if isinstance(value, bool) or not isinstance(value, (int, float)):
                    raise ValueError(f"metric {name!r} is {value!r}, not a number")
                return float(value), name, threshold
    return None, "", 1.0


def _run_metadata(folder: Path, levels: int = 3) -> tuple[str | None, float | None]:
    """Model and temperature from the metadata.json nearest the results (vf-eval, hosted run, SV-Bench):
    the results' folder, else up to `levels` folders above it."""
    for candidate in [folder, *list(folder.parents)[:levels]]:
        try:
            meta = json.loads((candidate / "metadata.json").read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        if isinstance(meta, dict):
            break
    else:
        return None, None
    model = next((meta[k] for k in ("model", "model_name", "model_id") if isinstance(meta.get(k), str)), None)
    if model is None and isinstance(meta.get("model"), dict):  # {"model": {"name": ...}}
        model = next((v for k, v in meta["model"].items() if k in ("name", "id") and isinstance(v, str)), None)
    sampling = meta.get("sampling_args") if isinstance(meta.get("sampling_args"), dict) else {}
    temperature = sampling.get("temperature", meta.get("temperature"))
    return model, float(temperature) if isinstance(temperature, (int, float)) else None


def rectangular(results: EvalResults, samples: int | None) -> tuple[list[Row], np.ndarray, list[str]]:
    """Keep S samples a problem (S = `samples`, or the fewest any problem has); say what was cut."""
    if not results.rows:
        raise ValueError("the results hold no rollouts")
    counts = [len(o) for o in results.outcomes]
    s = samples if samples is not None else min(counts)
    notes = []
    keep = [i for i, c in enumerate(counts) if c >= s]
    if len(keep) < len(counts):
        notes.append(f"{len(counts) - len(keep)} problems have fewer than {s} samples and were left out")
    if any(counts[i] > s for i in keep):
        notes.append(f"problems with more than {s} samples (up to {max(counts)}) count only their first {s}")
    if not keep:
        raise ValueError(f"no problem has {s} samples (most: {max(counts)})")
    matrix = np.array([results.outcomes[i][:s] for i in keep], dtype=bool)
    return [results.rows[i] for i in keep], matrix, notes


def per_problem(results: EvalResults, min_samples: int = 1) -> tuple[list[Row], list[np.ndarray], list[str]]:
    """Every problem with its own K (its sample count), those under `min_samples` left out; notes say so."""
    if not results.rows:
        raise ValueError("the results hold no rollouts")
    counts = [len(o) for o in results.outcomes]
    keep = [i for i, c in enumerate(counts) if c >= min_samples]
    notes = []
    if len(keep) < len(counts):
        notes.append(f"{len(counts) - len(keep)} problems have fewer than --min-samples {min_samples} samples "
                     "and were left out")
    if not keep:
        raise ValueError(f"no problem has --min-samples {min_samples} samples (most: {max(counts)})")
    kept = [counts[i] for i in keep]
    spread = ", ".join(f"K={k}: {kept.count(k)} problems" for k in sorted(set(kept)))
    notes.append(f"K per problem (its sample count; hard = 0/K): {spread}")
    return [results.rows[i] for i in keep], [np.asarray(results.outcomes[i], dtype=bool) for i in keep], notes
