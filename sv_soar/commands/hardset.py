"""`sv-soar hardset`: mine the fail@K hard set of a model, sampled here or read from saved evaluation results,
and write its cold-start report (sv_soar.evaluation.hardset does the mining, sv_soar.evaluation.saved_results
reads the results)."""

from __future__ import annotations

import argparse
import glob
import shlex
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from sv_soar.evaluation.cold_start_report import OVERALL, k_spread
from sv_soar.evaluation.hardset import DEFAULT_SAMPLES, FailAtK, mine_hard_set, row_hash
from sv_soar.evaluation.pass_at_k import sample_successes
from sv_soar.evaluation.saved_results import load_eval_results, per_problem, rectangular
from sv_soar.generation import tokens_over_context
from sv_soar.jsonl import JsonlReport
from sv_soar.tasks import Row, Task, get_task, task_names
from sv_soar.tasks.sources import load_rows


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
    parser.add_argument("--min-samples", type=int, default=None,
                        help="with --from-results: leave out problems with fewer samples than this (default: the "
                        "K of the problem's run, metadata.json's rollouts_per_example or else the sample count most "
                        "of its problems have, so a problem cut short never counts as fail@K; 1 keeps every problem)")
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
    if not results.rows:
        raise ValueError(f"no rollout of task {task.name} in {len(paths)} results files: "
                         + ("; ".join(results.run_notes(task)) or "they hold no rollouts"))
    if args.samples is not None:  # S samples a problem, as when sampling here
        rows, successes, notes = rectangular(results, args.samples)
        rule = None
    else:
        rows, successes, notes, rule = per_problem(results, args.min_samples)
    notes += results.run_notes(task)
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
            "min_samples": rule,
        },
    )


def _problems_by_sampling(task: Task, source: str, args: argparse.Namespace) -> _Problems:
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
    fitting, unreadable = [], []
    for row in rows:
        tokens = tokens_over_context(engine, task.prompt(row), max_new_tokens)
        if tokens is None:
            fitting.append(row)
        else:
            unreadable.append(f"{row_hash(row)} ({tokens} tokens)")
    return fitting, unreadable


def _load_rows(task: Task, source: str, args: argparse.Namespace) -> list[Row]:
    if source == "jsonl" and not args.path:
        raise SystemExit("sv-soar hardset: --source jsonl needs --path FILE")
    report = JsonlReport()
    rows = load_rows(task.name, source, path=args.path, n=args.n, seed=args.seed, skip_bad=args.skip_bad, report=report)
    if report.skipped:
        print(f"skipped {len(report)} bad rows:", *report.skipped, sep="\n  ", file=sys.stderr)
    return list(rows)


def _load_engine(model: str):
    from sv_soar.engines.transformers_engine import (  # delayed: sv_soar.engines.transformers_engine imports torch
        TransformersEngine)

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
        ("--min-samples", args.min_samples),
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
    ks = sorted(r.k_per_problem)
    samples = f"K {ks[0]}..{ks[-1]} samples a problem" if len(ks) > 1 else f"{r.samples} samples"
    print(f"hardset: {r.task}, {r.model}: {r.problems} problems x {samples} (T={r.temperature}){took}")
    if len(ks) > 1:
        counts = [k for k, n in r.k_per_problem.items() for _ in range(n)]
        print(f"  K per problem: {k_spread(counts)}; min samples: {r.min_samples}")
    print("  zero-pass: " + "  ".join(f"K={k} {100 * v:.1f}%" for k, v in r.zero_pass[OVERALL].items()))
    if r.pass_at_k:
        print("  pass@k:    " + "  ".join(f"@{k} {100 * v:.1f}%" for k, v in r.pass_at_k.items()))
    print(f"  hard set D (0/{'K' if len(ks) > 1 else r.samples}): {r.hard_set} -> D_train {r.d_train}, D_test {r.d_test}")
    for note in r.notes:
        print(f"  note: {note}")
    print(f"  wrote {len(mined.files)} files to {mined.files[0].parent}")


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
