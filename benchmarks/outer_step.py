"""Time of one SOAR outer step, split by phase, and how it grows with n (problems a dataset) and r
(students a dataset). Issue 4's measurement.

    .venv/bin/python benchmarks/outer_step.py                       # configs/cpu-demo.toml, n in 4 8, r in 1 2
    .venv/bin/python benchmarks/outer_step.py --n 2 4 8 --r 1 2 4 --json runs/outer_step.json

Each variant is one fresh run of configs/cpu-demo.toml (`sv_soar.soar_loop.train`, one outer step,
its own folder, no reward cache shared) with teacher.n or soar.students replaced; everything else is
the demo's. The hard set is the demo's (`make demo` mines it; --hard-set to give another). Models
load once per variant and are not counted. Phases are the step log's `seconds`:
teacher_sampling, student_training, evaluation (students and baseline on Q_R), teacher_update.
The load average is printed before and after: on a shared machine the absolute times move, the
growth with n and r less so.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

PHASES = ("teacher_sampling", "student_training", "evaluation", "teacher_update", "total")


def one_step(config, folder: Path) -> dict:
    from sv_soar.jsonl import read_jsonl
    from sv_soar.soar_loop import train

    train(config, folder, progress=False, max_steps=1)
    entry = read_jsonl(folder / "steps.jsonl")[0]
    return {"valid": entry["valid"], "drawn": entry["drawn"], **{p: entry["seconds"].get(p, 0.0) for p in PHASES}}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", type=Path, default=REPO / "configs" / "cpu-demo.toml")
    parser.add_argument("--hard-set", type=Path, default=REPO / "runs" / "demo" / "hardset")
    parser.add_argument("--n", type=int, nargs="+", default=[4, 8], help="teacher.n values (r fixed at the config's)")
    parser.add_argument("--r", type=int, nargs="+", default=[1, 2], help="soar.students values (n fixed at the config's)")
    parser.add_argument("--json", type=Path, help="write every variant's timings here")
    args = parser.parse_args(argv)

    from sv_soar.config import load_config

    if not (args.hard_set / "d_train.jsonl").is_file():
        print(f"no hard set at {args.hard_set}: run `make demo` first, or give --hard-set")
        return 2
    base = load_config(args.config, {"data.hard_set": str(args.hard_set)})
    # (n, r) pairs: n varied at the config's r, r varied at the config's n; the config's own pair once
    variants = list(dict.fromkeys([(n, base.soar.students) for n in args.n] + [(base.teacher.n, r) for r in args.r]))
    print(f"{args.config.name}: g={base.teacher.g} n={base.teacher.n} r={base.soar.students} |Q_R|={base.soar.q_r} "
          f"student steps={base.student.steps} | load average {os.getloadavg()}", flush=True)
    results = []
    with tempfile.TemporaryDirectory(prefix="outer-step-") as tmp:
        for n, r in variants:
            config = base.model_copy(deep=True)
            config.teacher.n, config.soar.students = n, r
            row = {"n": n, "r": r, **one_step(config, Path(tmp) / f"n{n}-r{r}")}
            results.append(row)
            print(f"n={n:>2} r={r} | " + " ".join(f"{p} {row[p]:6.1f}s" for p in PHASES)
                  + f" | valid {row['valid']}/{row['drawn']}", flush=True)
    print(f"load average after: {os.getloadavg()}")
    by_pair = {(row["n"], row["r"]): row for row in results}
    for key, fixed, values in (("n", base.soar.students, args.n), ("r", base.teacher.n, args.r)):
        rows = [by_pair[(v, fixed) if key == "n" else (fixed, v)] for v in values]
        if len(rows) > 1:
            first = rows[0]
            growth = ", ".join(f"{key}={row[key]}: {row['total'] / first['total']:.2f}x total, "
                               f"{row['student_training'] / max(first['student_training'], 1e-9):.2f}x training"
                               for row in rows[1:])
            print(f"growth with {key} (vs {key}={first[key]}): {growth}")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
