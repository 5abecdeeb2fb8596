"""`sv-soar package-env`: put a hard set (or a student training set) into a verifiers v1 env project as package
data (sv_soar.hosted.package_set), so that it travels in the env's wheel instead of as a cluster path."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from sv_soar.hosted import package_set


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("data", type=Path, help="a `sv-soar hardset --out` folder, or one JSONL file of rows")
    parser.add_argument("--env", type=Path, required=True, dest="env_dir",
                        help="the v1 env project (environments/sv_soar_teacher_v1 or environments/sv_soar_student_v1)")
    parser.add_argument("--name", required=True, help="the set's name, as the env's hard_set / rows argument")
    parser.add_argument("--task", default="e1",
                        help="the rows' task, which validates them: e1, e2 or a registered one (default e1)")


def run(args: argparse.Namespace) -> int:
    try:
        folder = package_set(args.data, args.env_dir, args.name, args.task)
    except (OSError, ValueError) as exc:
        print(f"sv-soar package-env: {exc}", file=sys.stderr)
        return 2
    manifest = json.loads((folder / "SOURCE.json").read_text(encoding="utf-8"))
    print(f"packaged {manifest['d_train_rows']} D_train rows ({manifest['guarded_rows']} guarded) as {args.name!r} "
          f"in {folder}")
    print(f"use it as: hard_set = \"{args.name}\" (teacher) or rows = \"{args.name}\" (student); then rebuild or "
          f"`prime env push` the env")
    return 0
