"""SIGKILL `sv-soar train` many times at random moments, resume it each time, compare with an uninterrupted run.

    python benchmarks/kill_resume.py --kills 30 --outer-steps 8     # writes benchmarks/results/kill_resume.json
    python scripts/reliability.py                                   # RELIABILITY.md from the results

The run: the tiny real model as student, the format-warm-started tiny model as teacher, every step
promoting (tests/killed_runs.py). A third of the kills come in start-up, the others at a random moment
of the 1.5 steps after the attempt's first commit (tests/killed_runs.killed_run), so kills land in
start-up, in steps and in commits alike; kills stop once every step is committed.
Passes when the killed run ends with the uninterrupted run's step log, promotion state, promoted
questions, baseline and teacher weights and file list, and no temporary file in the run folder.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from dataclasses import asdict
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.killed_runs import build_models, killed_run, leftovers, run_state, timing, train, write_config  # noqa: E402

RESULTS = REPO / "benchmarks" / "results" / "kill_resume.json"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kills", type=int, default=30, help="SIGKILLs a killed run (default %(default)s)")
    parser.add_argument("--runs", type=int, default=1, help="killed runs, each with its own kill times")
    parser.add_argument("--outer-steps", type=int, default=8)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--work", type=Path, help="work folder (default: a temporary one, removed after)")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()

    work = args.work or Path(tempfile.mkdtemp(prefix="sv-soar-kill-resume-"))
    try:
        model, teacher = build_models(work)
        config = write_config(work, model, teacher, outer_steps=args.outer_steps)
        seconds = train(config, work / "uninterrupted")
        reference = run_state(work / "uninterrupted")
        startup_s, step_s = timing(work / "uninterrupted", seconds)
        print(f"uninterrupted: {args.outer_steps} steps in {seconds:.1f}s (start-up {startup_s:.1f}s, "
              f"{step_s:.1f}s a step), {reference['state']['promotions']} promotions", flush=True)
        runs = []
        for r in range(args.runs):
            out = work / f"killed-{r}"
            started = time.perf_counter()
            result = killed_run(config, out, kills=args.kills, step_s=step_s, total_steps=args.outer_steps,
                                seed=args.seed + r)
            state = run_state(out)
            checks = {
                "step_log": state["steps"] == reference["steps"],
                "promotion_state": state["state"] == reference["state"],
                "promoted_questions": state["promoted_questions"] == reference["promoted_questions"],
                "files_and_weights": state["files"] == reference["files"],
                "no_temporary_files": not leftovers(out),
            }
            landed = [k for k in result.kills if k.exit_code is not None]
            runs.append({"kills": [asdict(k) for k in result.kills], "kills_landed": len(landed),
                         "kills_mid_run": sum(k.committed_after > k.committed_before for k in landed),
                         "kills_losing_no_committed_step": sum(k.committed_after >= k.committed_before for k in landed),
                         "checks": checks, "leftovers": leftovers(out), "seconds": round(time.perf_counter() - started, 1)})
            print(f"killed run {r}: {len(landed)} kills landed, checks {checks}", flush=True)
        passed = all(all(run["checks"].values()) for run in runs)
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps({
            "command": "python " + " ".join(sys.argv), "outer_steps": args.outer_steps,
            "uninterrupted_seconds": round(seconds, 1), "startup_seconds": round(startup_s, 1),
            "step_seconds": round(step_s, 2), "promotions": reference["state"]["promotions"],
            "runs": runs, "passed": passed}, indent=1) + "\n")
        print(f"wrote {args.out}: {'PASS' if passed else 'FAIL'}")
        return 0 if passed else 1
    finally:
        if args.work is None:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
