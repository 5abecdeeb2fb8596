"""`sv-soar report RUN_DIR...`: a markdown report with plots for one run or a comparison of runs
(sv_soar.evaluation.report writes it)."""

from __future__ import annotations

import argparse
import shlex
from pathlib import Path

from sv_soar.evaluation.report import write_report
from sv_soar.run_dir import RunDirError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run_dirs", type=Path, nargs="+", metavar="RUN_DIR", help="run folders (`sv-soar train`)")
    parser.add_argument("--out", type=Path, help="output folder (default: RUN_DIR/report for one run; required for several)")
    parser.add_argument("--training-only", action="store_true",
                        help="the outer loops' side only: no run's evaluation files are read (blind to D_test's "
                             "results, for a report while a comparison is going)")


def run(args: argparse.Namespace) -> int:
    if args.out is None and len(args.run_dirs) > 1:
        print("sv-soar report: several runs need --out FOLDER for the comparison")
        return 2
    out = args.out or args.run_dirs[0] / "report"
    command = "sv-soar report " + " ".join(shlex.quote(str(p)) for p in args.run_dirs)
    if args.out is not None:
        command += f" --out {shlex.quote(str(args.out))}"
    if args.training_only:
        command += " --training-only"
    try:
        path = write_report(list(args.run_dirs), out, command, training_only=args.training_only)
    except RunDirError as exc:
        print(f"sv-soar report: {exc}")
        return 2
    print(f"wrote {path} and its plots")
    return 0
