"""`sv-soar export-vf RUN_DIR`: write a run's final-student training set and a vf-train (or prime-rl) config
(sv_soar.export_vf says what they hold and how they differ from the project's inner loop)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from sv_soar.export_vf import export, rows_name
from sv_soar.run_dir import RunDirError, open_run
from sv_soar.tasks import scoring_task


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run_dir", type=Path, help="a run folder written by `sv-soar train`")
    parser.add_argument("--out", type=Path, help="output folder (default: RUN_DIR/export-vf)")
    parser.add_argument("--prime-rl", action="store_true", help="write a prime-rl RL config instead of vf-train's")


def run(args: argparse.Namespace) -> int:
    try:
        run_folder = open_run(args.run_dir)
        written = export(run_folder, args.out or args.run_dir / "export-vf", prime_rl=args.prime_rl)
    except (RunDirError, OSError, ValueError) as exc:
        print(f"sv-soar export-vf: {exc}", file=sys.stderr)
        return 2
    print(f"wrote {written['train']} and {written['config']}")
    if args.prime_rl:
        name = rows_name(open_run(args.run_dir))
        print(f"package the rows into the v1 student env: sv-soar package-env {written['train']} "
              f"--env environments/sv_soar_student_v1 --name {name} --task {scoring_task(open_run(args.run_dir).config).name}")
        print(f"then push that env (prime env push) and train: prime train {written['config']}   "
              "(untested here: needs Prime's Hosted Training or a prime-rl cluster)")
        return 0
    print(f"train: vf-train @ {written['config']}   (untested here: needs a GPU and the trainer's own dependencies)")
    return 0
