"""`sv-soar score`: score teacher datasets X_k by the grounded improvement R_k of students trained on them
(sv_soar.grounded.GroundedScorer, or a backend of sv_soar.backends.make_scorer).

The flags stand for keys of `sv-soar train`'s run config (sv_soar.config.RunConfig: [data], [student], [soar],
[compute], run.seed); `run_config(args)` builds that object, and the scorer is built from it as train's is."""

from __future__ import annotations

import argparse
import json
import logging
import random
import sys
import time
from pathlib import Path
from typing import Any

from sv_soar.backends import scorer_for
from sv_soar.baseline import Baseline
from sv_soar.config import RunConfig, parse_config
from sv_soar.jsonl import read_jsonl, write_text_atomic
from sv_soar.models import ModelError, resolve_model
from sv_soar.q_r_accuracy import GROUNDINGS
from sv_soar.reward_cache import problem_content
from sv_soar.scores import Scorer
from sv_soar.soar_defaults import DEFAULT_MODEL
from sv_soar.student.adapters import load_baseline
from sv_soar.student.config import PRESET_NAMES, StudentTrainConfig, student_config
from sv_soar.tasks import Task, scoring_task


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--dataset", action="append", required=True, metavar="FILE",
                        help="teacher dataset X_k as SV-Bench JSONL; repeat for several (scored in one call)")
    parser.add_argument("--hard-set", required=True, metavar="PATH",
                        help="the `sv-soar hardset --out` folder, or its d_train.jsonl: Q_R is drawn from D_train")
    parser.add_argument("--task", default="e1", help="task of the rows (default: %(default)s)")
    parser.add_argument("--model", default=DEFAULT_MODEL,
                        help="student model: embedded name, local folder or HF hub id (default: %(default)s)")
    parser.add_argument("--q-r", type=int, default=64, help="|Q_R|, questions drawn from D_train (SOAR: 64)")
    parser.add_argument("--students", type=int, default=4, help="r, students a dataset (SOAR: 4)")
    parser.add_argument("--preset", choices=PRESET_NAMES, default="paper",
                        help="student config: paper (SOAR's inner loop) or cpu (StudentTrainConfig.cpu_small)")
    parser.add_argument("--promoted", action="store_true",
                        help="the baseline was promoted before: train steps_after_promotion steps (SOAR: 15)")
    parser.add_argument("--grounding", choices=GROUNDINGS, default="correctness",
                        help="Acc = mean success (correctness) or mean full-rubric reward (full)")
    parser.add_argument("--seed", type=int, default=0, help="seed of Q_R's draw and of the students")
    parser.add_argument("--baseline", metavar="ADAPTER_DIR",
                        help="baseline student's adapter folder (default: the bare model)")
    parser.add_argument("--time-limit", type=float, metavar="S",
                        help="seconds a student run may take (checked between steps)")
    parser.add_argument("--cache", metavar="DIR", help="reward-cache folder (default: no cache)")
    parser.add_argument("--eval-batch-size", type=int, default=64, help="(question, student) rows a generate call")
    parser.add_argument("--out", metavar="FILE.json", help="write the scores as JSON here")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    parser.add_argument("--device", default="cpu", help="torch device of the students: cpu (default), cuda")
    parser.add_argument("--engine", choices=("transformers", "vllm"), default="transformers",
                        help="rollouts and evaluation: transformers (default) or vllm (GPU, the vllm extra)")
    parser.add_argument("--backend", choices=("local", "ray"), default="local",
                        help="student runs in this process (default) or spread over Ray actors")
    parser.add_argument("--ray-address", help="with --backend ray: the cluster (default: start a local one)")
    parser.add_argument("--ray-actors", type=int, help="with --backend ray: actors (default: one a GPU, else 1)")


def run(args: argparse.Namespace) -> int:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")

    try:  # bad input: one line naming the problem (a JSONL error names file:line), exit code 2
        inputs = _read_inputs(args)
        scorer = scorer_for(inputs.pop("run_config"), inputs["task"], cache_dir=args.cache,
                            progress=not args.no_progress, device=args.device, engine=args.engine)
    except (OSError, ValueError, ImportError, ModelError) as exc:
        print(f"sv-soar score: {exc}", file=sys.stderr)
        return 2
    try:
        return _score_and_report(args, scorer, **inputs)
    finally:
        if hasattr(scorer, "close"):  # the Ray backend's actors
            scorer.close()


def run_config(args: argparse.Namespace) -> RunConfig:
    """The run config the flags stand for. --preset is the student section's starting point (the presets of
    sv_soar.student.config); a mixed --task "e1+e2" is teacher.task e1 over data.task e2, as in train."""
    *problem_task, hard_set_task = args.task.split("+", 1)
    return parse_config({
        "run": {"seed": args.seed},
        "data": {"task": hard_set_task, "hard_set": args.hard_set},
        "teacher": {"task": problem_task[0]} if problem_task else {},
        "student": {**student_config(args.preset, None).model_dump(), "model": args.model},
        "soar": {"students": args.students, "q_r": args.q_r, "grounding": args.grounding,
                 "time_limit_s": args.time_limit, "eval_batch_size": args.eval_batch_size},
        "compute": {"backend": args.backend, "ray_address": args.ray_address, "ray_actors": args.ray_actors},
    }, origin="sv-soar score")


def _read_inputs(args: argparse.Namespace) -> dict[str, Any]:
    counts = (("--q-r", args.q_r), ("--students", args.students), ("--eval-batch-size", args.eval_batch_size))
    for flag, value in counts:
        if value < 1:
            raise ValueError(f"{flag} must be at least 1, got {value}")
    config = run_config(args)
    task = scoring_task(config)
    datasets = [read_jsonl(path, task.validate_row) for path in args.dataset]
    for path, rows in zip(args.dataset, datasets):
        if not rows:
            raise ValueError(f"{path}: no rows")
    hard_set = Path(args.hard_set)
    d_train_path = hard_set / "d_train.jsonl" if hard_set.is_dir() else hard_set
    d_train = read_jsonl(d_train_path, task.validate_row)
    if not d_train:
        raise ValueError(f"{d_train_path}: D_train is empty")
    q_r = random.Random(args.seed).sample(d_train, min(args.q_r, len(d_train)))  # a fresh draw, as each SOAR step
    baseline = load_baseline(args.baseline) if args.baseline else Baseline("base")
    resolve_model(args.model)  # an unknown name fails here, before anything heavy is loaded
    return {"task": task, "datasets": datasets, "d_train": d_train, "d_train_path": d_train_path, "q_r": q_r,
            "baseline": baseline, "config": config.student_train_config(), "run_config": config}


def _score_and_report(args: argparse.Namespace, scorer: Scorer, *, task: Task, datasets: list, d_train: list,
                      d_train_path: Path, q_r: list, baseline: Baseline, config: StudentTrainConfig) -> int:
    steps = config.steps_for(args.promoted)
    print(f"score: task {task.name}, model {args.model}, preset {args.preset} ({steps} steps × "
          f"{config.batch_prompts} prompts × {config.group_size}), r={args.students}, grounding {args.grounding}")
    print(f"  Q_R: {len(q_r)} of {len(d_train)} D_train questions ({d_train_path}, seed {args.seed}); "
          f"baseline {baseline.name} ({baseline.id})")
    started = time.perf_counter()
    scores = scorer.score(datasets, q_r, baseline, seed=args.seed, promoted=args.promoted)
    seconds_total = time.perf_counter() - started

    print(f"  Acc(baseline, Q_R) = {scores[0].baseline_accuracy:.3f}")
    for k, (path, rows, score) in enumerate(zip(args.dataset, datasets, scores), start=1):
        r_k = "None" if score.reward is None else f"{score.reward:+.4f}"
        print(f"X_{k} {path} ({len(rows)} rows): R_k = {r_k}" + (" [cached]" if score.cached else ""))
        for j, student in enumerate(score.students):
            if student.failure is not None:
                print(f"    student {j} (seed {student.seed}): FAILED after {student.seconds_train:.1f}s: "
                      f"{student.failure}")
            else:
                print(f"    student {j} (seed {student.seed}): Acc {score.baseline_accuracy:.3f} -> "
                      f"{student.accuracy:.3f}, R_kj {student.reward:+.4f}, train {student.seconds_train:.1f}s")
        s = score.seconds
        print(f"    time: train {s['train']:.1f}s, evaluate {s['evaluate']:.1f}s, "
              f"baseline {s['baseline_evaluate']:.1f}s, total {s['total']:.1f}s")
        if score.error:
            print(f"    error: {score.error}")
    print(f"total {seconds_total:.1f}s (scoring; model load {scorer.seconds_load:.1f}s before)")
    if args.out:
        result = {
            "task": task.name, "model": args.model, "preset": args.preset, "config": config.model_dump(),
            "students": args.students, "grounding": args.grounding, "seed": args.seed, "promoted": args.promoted,
            "baseline": {"name": baseline.name, "id": baseline.id, "path": args.baseline},
            "d_train": str(d_train_path), "q_r": [problem_content(row) for row in q_r],
            "seconds": {"load": scorer.seconds_load, "score": seconds_total},
            "datasets": [{"path": path, "rows": len(rows), **score.to_dict()}
                         for path, rows, score in zip(args.dataset, datasets, scores)],
        }
        write_text_atomic(args.out, json.dumps(result, indent=1, allow_nan=False))
        print(f"wrote {args.out}")
    return 0 if all(score.reward is not None for score in scores) else 1

