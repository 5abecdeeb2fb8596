"""`sv-soar evaluate RUN_DIR`: train fresh students on a run's promoted questions and score them on D_test,
or score one adapter (`--adapter DIR`) or the outer loop's own student (`--loop-student`);
sv_soar.evaluation.final does the work."""

from __future__ import annotations

import argparse
from pathlib import Path

from sv_soar.evaluation.final import adapter_evaluation, final_evaluation, loop_student_evaluation, render_summary
from sv_soar.run_dir import RunDirError, open_run
from sv_soar.tasks.sources import load_rows


def positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run_dir", type=Path, help="a run folder written by `sv-soar train`")
    parser.add_argument("--seeds", type=int, nargs="+", help="fresh students, one a seed (default: the config's)")
    parser.add_argument("--samples", type=int, help="samples a D_test problem (default: the config's, SOAR: 32)")
    parser.add_argument("--steps", type=positive_int, help="student RL steps (default: evaluation.compute_matched_to's "
                        "count, else the config's evaluation.steps, else from evaluation.epochs; refused with "
                        "compute_matched_to)")
    parser.add_argument("--curriculum", action="store_true", default=None,
                        help="train on promoted datasets in promotion order, then D_train")
    parser.add_argument("--extra-eval", type=Path, nargs="+", default=[], metavar="JSONL",
                        help="more problem sets to report on (e.g. SV-Bench's out-of-distribution E1 sets)")
    parser.add_argument("--no-base", action="store_true", help="skip scoring the untrained base student")
    which = parser.add_mutually_exclusive_group()  # the student to score instead of training fresh ones
    which.add_argument("--adapter", type=Path, metavar="DIR",
                   help="score this LoRA adapter folder (e.g. trained by vf-train on `sv-soar export-vf`'s "
                   "set), or a fully fine-tuned student's (model.safetensors), on D_test instead of training "
                   "fresh students; writes evaluation/adapter-<name>.json")
    which.add_argument("--loop-student", action="store_true",
                   help="score the outer loop's own student (the last promoted baseline, trained on the "
                   "teacher's problems only) instead of training fresh students; writes "
                   "evaluation/loop-student.json, a row of its own in `sv-soar report`")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    parser.add_argument("--checkpoint-every", type=float, default=300.0, metavar="SECONDS",
                        help="how often a final student keeps its state for a resume after a stop (default 300; "
                        "also after its last step)")


def run(args: argparse.Namespace) -> int:
    try:
        run = open_run(args.run_dir)
    except RunDirError as exc:
        print(f"sv-soar evaluate: {exc}")
        return 2
    evaluation = run.config.evaluation
    seeds = args.seeds or evaluation.seeds
    samples = args.samples or evaluation.samples
    curriculum = evaluation.curriculum if args.curriculum is None else args.curriculum
    extra_paths = list(evaluation.extra_eval) + list(args.extra_eval)
    try:
        extra = {path.stem: load_rows(run.config.data.task, "jsonl", path=str(path)) for path in extra_paths}
    except (OSError, ValueError) as exc:
        print(f"sv-soar evaluate: {exc}")
        return 2
    if args.adapter is not None or args.loop_student:
        flag = "--loop-student" if args.loop_student else f"--adapter {args.adapter}"
        scoring = dict(samples=samples, extra_sets=extra, score_base=not args.no_base, progress=not args.no_progress)
        try:
            report = (loop_student_evaluation(run, **scoring) if args.loop_student
                      else adapter_evaluation(run, args.adapter, **scoring))
        except (OSError, ValueError) as exc:  # RunDirError is a ValueError
            print(f"sv-soar evaluate: {flag}: {exc}")
            return 2
        print(render_summary(report))
        print(f"wrote {report['path']}")
        return 0
    try:
        report = final_evaluation(run, seeds=seeds, samples=samples, steps=args.steps,
                                  curriculum=curriculum, extra_sets=extra, score_base=not args.no_base,
                                  progress=not args.no_progress, checkpoint_every_s=args.checkpoint_every)
    except RunDirError as exc:
        print(f"sv-soar evaluate: {exc}")
        return 2
    print(render_summary(report))
    print(f"wrote {run.folder / 'evaluation' / 'final.json'}")
    return 0
