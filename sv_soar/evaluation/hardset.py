"""Fail@K hard-set mining: the problems the base student never solves (SOAR's D, docs/design.md §4).

The paper samples K = 128 completions a problem at temperature 1.0 and keeps the problems solved
0/K times; that hard set D is split 50/50 at random into D_train (the questions SOAR's teacher reward
is measured on) and D_test (final evaluation only). The same success matrix answers
SOAR-INVESTIGATION.md's Phase 1 question: what fraction of problems has zero pass rate at
K = 1, 8, ..., 128, overall and by difficulty group (task.breakdown).

The success matrix comes from sampling a model here (`sample_successes`) or from saved evaluation
results: vf-eval's `results.jsonl` (verifiers 0.1.x, `vf-eval -s`), a hosted run's `results.jsonl`
(columns as JSON strings) or SV-Bench's own `scripts/eval_*.py` output, read by `load_eval_results`.
Saved results keep each problem's own sample count K (a problem is hard when 0/K of its samples
succeeded); the zero-pass table and pass@k are reported up to the smallest K.

`sv-soar hardset ... --out DIR` writes DIR/hard_set.jsonl, d_train.jsonl, d_test.jsonl (SV-Bench
rows, meta["fail_at_k"] added), successes.jsonl, cold_start_report.md and cold_start.png.
"""

from __future__ import annotations

import argparse
import copy
import glob
import hashlib
import json
import math
import random
import shlex
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from sv_soar.evaluation.cold_start_report import OVERALL, ColdStartReport, write_cold_start_report
from sv_soar.evaluation.pass_at_k import mean_pass_at_k
from sv_soar.jsonl import read_jsonl, write_jsonl
from sv_soar.tasks import Row, Task, get_task, task_names

COLD_START_KS = (1, 8, 16, 32, 64, 128)  # SOAR-INVESTIGATION.md Phase 1 (K = 8..128) plus K = 1
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
    )
    files += list(write_cold_start_report(report, out_dir))
    return FailAtK(report=report, hard_set=hard, d_train=d_train, d_test=d_test, files=files)


# ------------------------------------------------------------------------ saved evaluation results


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
            success = bool(task.is_success(_completion_text(record.get("completion")), row))
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
                return _message_text(message.get("content"))
        raise ValueError("prompt has no user message to take the question from")
    raise ValueError("no 'prompt' (chat messages or text) and no 'question'")


def _completion_text(completion: Any) -> str:
    if completion is None:
        return ""
    if isinstance(completion, str):
        return completion
    if isinstance(completion, list):  # a reasoning model's answer is in reasoning_content when content is null
        return "".join(
            _message_text(m.get("content") if m.get("content") is not None else m.get("reasoning_content"))
            for m in completion if isinstance(m, dict) and m.get("role") == "assistant"
        )
    raise ValueError(f"'completion' is neither text nor chat messages ({type(completion).__name__})")


def _message_text(content: Any) -> str:
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):  # content parts: [{"type": "text", "text": ...}, ...]
        return "".join(part.get("text", "") for part in content if isinstance(part, dict))
    raise ValueError(f"message content is neither text nor parts ({type(content).__name__})")


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


def _expand(patterns: Sequence[str]) -> list[Path]:
    """Files named or matched; a folder stands for every results.jsonl under it, at any depth."""
    paths: list[Path] = []
    for pattern in patterns:
        matches = sorted(glob.glob(pattern, recursive=True)) if glob.has_magic(pattern) else [pattern]
        if not matches:
            raise FileNotFoundError(f"--from-results {pattern!r}: no file matches")
        for match in matches:
            path = Path(match)
            found = sorted(path.rglob("results.jsonl")) if path.is_dir() else [path]
            if not found:
                raise FileNotFoundError(f"--from-results {match!r}: no results.jsonl in this folder or below")
            paths += [p for p in found if p not in paths]
    return paths


# ------------------------------------------------------------------------------------------ CLI


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--task", default="e1", choices=task_names(),
                        help="task whose problems are mined (default: e1)")
    parser.add_argument(
        "--model",
        help="model to sample (HF id, local folder, or an embedded name such as smollm2-135m-instruct); "
        "with --from-results only a label for the report",
    )
    parser.add_argument(
        "--samples",
        type=int,
        default=None,
        help=f"S, samples a problem; the hard set is fail@S (default {DEFAULT_SAMPLES}, the paper's K; "
        "with --from-results: the fewest any problem has)",
    )
    parser.add_argument(
        "--source",
        choices=("builtin", "jsonl", "hub"),
        default=None,
        help="where the problems come from (default: jsonl with --path, else builtin); "
        "with --from-results, the data the eval ran on, to restore each row's meta",
    )
    parser.add_argument("--path", help="SV-Bench JSONL file of problems (--source jsonl)")
    parser.add_argument("--n", type=int, default=None, help="use n problems (sampled with --seed); default all")
    parser.add_argument("--seed", type=int, default=0, help="seed of the problem subset, sampling and the split")
    parser.add_argument("--temperature", type=float, default=1.0, help="sampling temperature (paper: 1.0)")
    parser.add_argument("--max-new-tokens", type=int, default=None,
                        help="tokens a completion at most (default: the task's answer length, e1 96, e2 384)")
    parser.add_argument("--batch-size", type=int, default=64, help="sequences an engine call generates at most")
    parser.add_argument("--skip-bad", action="store_true", help="skip bad data rows (listed) instead of stopping")
    parser.add_argument(
        "--from-results",
        nargs="+",
        metavar="RESULTS",
        help="saved vf-eval / SV-Bench results.jsonl files, folders or globs to mine instead of sampling",
    )
    parser.add_argument(
        "--success-metric",
        help="recorded metric that says a rollout succeeded (default e1: reward_accuracy = 1; e2: detection_f1 "
        ">= 0.5, else SV-Bench's reward_config_auditing >= 0.55)",
    )
    parser.add_argument("--success-threshold", type=float, default=None,
                        help="value of --success-metric that counts as success (default: 1, or the e2 values above)")
    parser.add_argument("--rescore", action="store_true",
                        help="with --from-results: score rollouts that lack the metric again with the task's rubric")
    parser.add_argument("--min-samples", type=int, default=1,
                        help="with --from-results: leave out problems with fewer samples than this (default 1)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.add_argument("--out", required=True, help="output folder")


def run(args: argparse.Namespace) -> int:
    task = get_task(args.task)
    if args.max_new_tokens is None:
        args.max_new_tokens = task.answer_tokens
    for name in ("samples", "n", "batch_size", "max_new_tokens", "min_samples"):
        value = getattr(args, name)
        if value is not None and value < 1:
            raise SystemExit(f"sv-soar hardset: --{name.replace('_', '-')} must be at least 1, got {value}")
    if not args.from_results and not args.model:
        raise SystemExit("sv-soar hardset: --model is required unless --from-results is given")
    source = args.source or ("jsonl" if args.path else "builtin")
    try:
        if args.from_results:
            problems = _problems_from_results(task, source, args)
        else:
            problems = _problems_by_sampling(task, source, args)
    except (FileNotFoundError, ValueError) as exc:  # bad input (JsonlError is a ValueError): no traceback
        raise SystemExit(f"sv-soar hardset: {exc}") from None
    mined = mine_hard_set(task, problems.rows, problems.successes, args.out, seed=args.seed,
                          command=_command_line(args), **problems.report_fields)  # fmt: skip
    _print_summary(mined, problems.report_fields.get("seconds"))
    return 0


@dataclass
class _Problems:
    rows: list[Row]
    successes: np.ndarray
    report_fields: dict[str, Any]  # model, source, temperature, seconds, notes


def _problems_from_results(task: Task, source: str, args: argparse.Namespace) -> _Problems:
    paths = _expand(args.from_results)
    known = _load_rows(task, source, args) if (args.source or args.path) else []
    results = load_eval_results(paths, task, success_metric=args.success_metric,
                                success_threshold=args.success_threshold, rescore=args.rescore, known_rows=known)
    if args.samples is not None:  # S samples a problem, as when sampling here
        rows, successes, notes = rectangular(results, args.samples)
    else:
        rows, successes, notes = per_problem(results, args.min_samples)
    if results.skipped_errors:
        notes.append(f"{results.skipped_errors} rollouts with an error were not counted as samples")
    if len(results.models) > 1:
        notes.append(f"the results mix models: {', '.join(results.models)}")
    if len(results.temperatures) > 1:
        notes.append(f"the results mix temperatures: {', '.join(map(str, results.temperatures))}")
    notes.append(f"success from: {', '.join(sorted(results.success_from))}")
    return _Problems(
        rows,
        successes,
        {
            "model": args.model or (", ".join(results.models) if results.models else "unknown model"),
            "source": "saved results: " + ", ".join(str(p) for p in paths),
            "temperature": results.temperatures[0] if len(results.temperatures) == 1 else None,
            "notes": notes,
        },
    )


def _problems_by_sampling(task: Task, source: str, args: argparse.Namespace) -> _Problems:
    from sv_soar.evaluation.pass_at_k import sample_successes

    rows = _load_rows(task, source, args)
    if not rows:
        raise ValueError("no problems to sample")
    engine = _load_engine(args.model)
    notes = []
    rows, unreadable = _fitting_rows(engine, task, rows, args.max_new_tokens)
    if unreadable:
        notes.append(f"{len(unreadable)} problem{'s' if len(unreadable) > 1 else ''} longer than the model's context window ({engine.context_window} "
                     f"tokens, less {args.max_new_tokens} for the answer) were not sampled and are not in the hard "
                     f"set: {', '.join(unreadable)}")
        print(f"sv-soar hardset: {notes[-1]}", file=sys.stderr)
    if not rows:
        raise ValueError("no problem fits the model's context window")
    start = time.perf_counter()
    successes = sample_successes(
        engine,
        task,
        rows,
        args.samples or DEFAULT_SAMPLES,
        temperature=args.temperature,
        seed=args.seed,
        max_new_tokens=args.max_new_tokens,
        batch_size=args.batch_size,
        progress=not args.no_progress,
    )
    seconds = time.perf_counter() - start
    stats = getattr(engine, "stats", None)
    if stats is not None and getattr(stats, "generated_tokens", 0):
        notes.append(
            f"generation: {stats.generated_tokens} tokens in {stats.seconds:.1f} s "
            f"({stats.tokens_per_second:.0f} tokens/s, max {args.max_new_tokens} new tokens a completion)"
        )
    return _Problems(
        rows,
        successes,
        {
            "model": args.model,
            "source": source + (f" {args.path}" if args.path else "") + f", {len(rows)} rows",
            "temperature": args.temperature,
            "seconds": seconds,
            "notes": notes,
        },
    )


def _fitting_rows(engine: Any, task: Task, rows: list[Row], max_new_tokens: int) -> tuple[list[Row], list[str]]:
    """The rows whose prompt and answer fit the model's context window, and the others' ids (a 64 KB config
    in the E2 mini set is ~20k tokens against SmolLM2's 8k: sv_soar.generation.tokens_over_context)."""
    from sv_soar.generation import tokens_over_context

    fitting, unreadable = [], []
    for row in rows:
        tokens = tokens_over_context(engine, task.prompt(row), max_new_tokens)
        if tokens is None:
            fitting.append(row)
        else:
            unreadable.append(f"{row_hash(row)} ({tokens} tokens)")
    return fitting, unreadable


def _load_rows(task: Task, source: str, args: argparse.Namespace) -> list[Row]:
    from sv_soar.jsonl import JsonlReport
    from sv_soar.tasks.sources import load_rows

    if source == "jsonl" and not args.path:
        raise SystemExit("sv-soar hardset: --source jsonl needs --path FILE")
    report = JsonlReport()
    rows = load_rows(task.name, source, path=args.path, n=args.n, seed=args.seed, skip_bad=args.skip_bad, report=report)
    if report.skipped:
        print(f"skipped {len(report)} bad rows:", *report.skipped, sep="\n  ", file=sys.stderr)
    return list(rows)


def _load_engine(model: str):
    from sv_soar.engines.transformers_engine import TransformersEngine

    return TransformersEngine(model)


def _command_line(args: argparse.Namespace) -> str:
    """The command as it would be typed, rebuilt from the parsed arguments (however it was invoked)."""
    parts = ["sv-soar", "hardset", "--task", args.task]
    if args.from_results:
        parts += ["--from-results", *args.from_results]
    for flag, value in (
        ("--model", args.model),
        ("--source", args.source),
        ("--path", args.path),
        ("--n", args.n),
        ("--samples", args.samples),
        ("--success-metric", args.success_metric),
        ("--success-threshold", args.success_threshold),
        ("--min-samples", args.min_samples if args.min_samples != 1 else None),
    ):
        if value is not None:
            parts += [flag, str(value)]
    parts += ["--seed", str(args.seed)]
    if not args.from_results:
        parts += ["--temperature", str(args.temperature), "--max-new-tokens", str(args.max_new_tokens)]
        parts += ["--batch-size", str(args.batch_size)]
    if args.skip_bad:
        parts.append("--skip-bad")
    if args.rescore:
        parts.append("--rescore")
    parts += ["--out", str(args.out)]
    return shlex.join(parts)


def _print_summary(mined: FailAtK, seconds: float | None) -> None:
    r = mined.report
    took = f" in {seconds:.1f} s" if seconds is not None else ""
    print(f"hardset: {r.task}, {r.model}: {r.problems} problems x {r.samples} samples (T={r.temperature}){took}")
    print("  zero-pass: " + "  ".join(f"K={k} {100 * v:.1f}%" for k, v in r.zero_pass[OVERALL].items()))
    if r.pass_at_k:
        print("  pass@k:    " + "  ".join(f"@{k} {100 * v:.1f}%" for k, v in r.pass_at_k.items()))
    print(f"  hard set D (0/{r.samples}): {r.hard_set} -> D_train {r.d_train}, D_test {r.d_test}")
    for note in r.notes:
        print(f"  note: {note}")
    print(f"  wrote {len(mined.files)} files to {mined.files[0].parent}")
