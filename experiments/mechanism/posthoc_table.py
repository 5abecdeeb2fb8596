"""Post hoc table of posthoc-final-seeds.sh (read after the comparison's D_test; no clause or outcome depends on it):
for each SOAR and Base-T run, J on the 32 validation pairs of the comparison's own final student (the run's seed), of two more
fresh final students (seeds 10, 11) and of its loop student, with each new fresh student's training reward over its
last 10 steps and pass@1 by label.

    python experiments/mechanism/posthoc_table.py /tmp/posthoc [--json OUT.json]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from sv_soar.evaluation.report_data import label_accuracies

RUNS = ("soar-s0", "soar-s1", "soar-s2", "base-t-s0", "base-t-s1", "base-t-s2")
LAST = 10  # training steps the reward is averaged over


def _row(student: str, scored: dict, train_reward: float | None = None) -> dict:
    """One student's line: J and pass@1 by label (`label_accuracies`; the validation set: tcp `duration ?` Malicious,
    udp known Benign) on the scored set, and its training reward where it was trained here."""
    by_label = {label.removeprefix("pass@1 "): value for label, value in label_accuracies(scored).items()}
    return {"student": student, "J": scored["pair_accuracy"], "train_reward": train_reward, **by_label}


def _scored(path: Path) -> dict:
    """The validation pairs' scores (D_test in the scratch copy) of a one-student evaluation file."""
    return json.loads(path.read_text())["seeds"][0]["sets"]["d_test"]


def students(run: Path) -> list[dict]:
    rows = [_row(f"the protocol's, {path.stem.removeprefix('adapter-').replace('-', ' ')}", _scored(path))
            for path in sorted((run / "evaluation").glob("adapter-seed-*.json"))]  # the comparison's own, rescored
    final = run / "evaluation" / "final.json"
    if final.exists():
        for seed in json.loads(final.read_text())["seeds"]:
            log = seed["train_log"][-LAST:]
            rows.append(_row(f"fresh, seed {seed['seed']}", seed["sets"]["d_test"],
                             sum(e["mean_reward"] for e in log) / len(log)))
    loop = run / "evaluation" / "loop-student.json"
    if loop.exists():
        rows.append(_row("loop (last promoted baseline)", _scored(loop)))
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("scratch", type=Path, help="SCRATCH of posthoc-final-seeds.sh")
    parser.add_argument("--json", type=Path, help="also write the rows here")
    args = parser.parse_args(argv)
    table = {run: students(args.scratch / run) for run in RUNS if (args.scratch / run).is_dir()}
    print("| run | student | J (validation pairs) | pass@1 Malicious | pass@1 Benign | training reward, last 10 |")
    print("|---|---|---:|---:|---:|---:|")
    for run, rows in table.items():
        for row in rows:
            reward = "" if row["train_reward"] is None else f"{row['train_reward']:.2f}"
            print(f"| {run} | {row['student']} | {row['J']:+.3f} | {row.get('Malicious', float('nan')):.3f} | "
                  f"{row.get('Benign', float('nan')):.3f} | {reward} |")
    fresh = {run: values for run, rows in table.items()
             if (values := [row["J"] for row in rows if not row["student"].startswith("loop")])}
    print("\nMean J of each run's fresh final students (the protocol's and seeds 10, 11):")
    for run, values in fresh.items():
        print(f"- {run}: {sum(values) / len(values):+.3f} over {len(values)}")
    for seed in range(3):
        soar, base_t = fresh.get(f"soar-s{seed}"), fresh.get(f"base-t-s{seed}")
        if soar and base_t:
            print(f"- seed {seed}: SOAR - Base-T {sum(soar) / len(soar) - sum(base_t) / len(base_t):+.3f}")
    if args.json:
        args.json.write_text(json.dumps(table, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
