"""Fuzz every parser of untrusted text with thousands of inputs; write benchmarks/results/fuzz.json.

    python benchmarks/fuzz.py --examples 10000         # every target in tests/fuzz_targets/ this venv runs
    python benchmarks/fuzz.py --target teacher-e1      # one
    python scripts/reliability.py                       # RELIABILITY.md from the results

A target that needs another venv (`taskset-v1-args`: verifiers 0.4, which cannot share the project's .venv with
verifiers 0.1.x) is skipped here, saying so; run it with that venv's python and --merge, which replaces only its
entry in the results file (hypothesis is the one extra it needs there):

    PYTHONPATH=.:$HYPOTHESIS_DIR $(bash scripts/build_v1_venv.sh)/bin/python benchmarks/fuzz.py \
        --examples 10000 --target taskset-v1-args --merge

Each input must end in an accepted value or a rejection with a reason (tests/fuzz_targets/ says
what each target checks). A crash stops that target and is recorded with the smallest input
hypothesis found; the script then exits 1.
"""

from __future__ import annotations

import argparse
import json
import logging
import platform
import sys
import time
from collections import Counter
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from hypothesis import HealthCheck, example, given, settings  # noqa: E402

from tests.fuzz_targets import TARGETS, missing_requirement  # noqa: E402

RESULTS = REPO / "benchmarks" / "results" / "fuzz.json"


def fuzz(name: str, examples: int, seed: int) -> dict:
    target = TARGETS[name]
    outcomes: Counter[str] = Counter()
    slowest = [0.0]

    @settings(max_examples=examples, deadline=None, database=None, derandomize=False,
              suppress_health_check=list(HealthCheck), print_blob=False)
    @given(target.strategy())
    def run(value):
        started = time.perf_counter()
        outcomes[target.check(value)] += 1
        slowest[0] = max(slowest[0], time.perf_counter() - started)

    for value in target.examples:
        run = example(value)(run)
    started = time.perf_counter()
    crash = None
    try:
        from hypothesis import seed as hypothesis_seed

        hypothesis_seed(seed)(run)()
    except Exception as exc:  # noqa: BLE001 - a crash is the finding; record it
        crash = f"{type(exc).__name__}: {str(exc)[:2000]}"
    # hypothesis also runs shrinking/replay calls; every call is counted, so this is inputs tried
    return {"target": name, "parses": target.parses, "inputs": sum(outcomes.values()),
            "outcomes": dict(sorted(outcomes.items())), "crash": crash,
            "seconds": round(time.perf_counter() - started, 2), "slowest_input_ms": round(1000 * slowest[0], 2)}


def _version(distribution: str) -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(distribution)
    except PackageNotFoundError:
        return None


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--examples", type=int, default=5000, help="inputs a target (default %(default)s)")
    parser.add_argument("--target", action="append", choices=sorted(TARGETS), help="default: every target")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--merge", action="store_true",
                        help="keep the other targets' results already in --out, replacing only those run now")
    parser.add_argument("--note", default="", help="with --merge: why these targets ran apart (RELIABILITY.md says it)")
    args = parser.parse_args()
    logging.disable(logging.WARNING)  # the readers log every corrupt file they skip; thousands here
    argv = [a for i, a in enumerate(sys.argv) if not (a.startswith("--note") or sys.argv[i - 1] == "--note")]
    command = "python " + " ".join(argv)  # the note is recorded on its own
    results = []
    for name in args.target or sorted(TARGETS):
        if missing := missing_requirement(TARGETS[name]):
            print(f"{name:20} not run: {missing} (run it in that venv with --merge)", flush=True)
            continue
        result = fuzz(name, args.examples, args.seed)
        results.append(result)
        print(f"{name:20} {result['inputs']:6d} inputs  {result['seconds']:7.1f}s  slowest {result['slowest_input_ms']:.1f} ms  "
              f"{'CRASH ' + result['crash'][:200] if result['crash'] else 'ok'}  {result['outcomes']}", flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    written = {"command": command, "examples_per_target": args.examples, "seed": args.seed,
               "python": platform.python_version(), "targets": results}
    if args.merge and args.out.is_file():
        written = json.loads(args.out.read_text())
        ran = {r["target"] for r in results}
        written["targets"] = sorted([t for t in written["targets"] if t["target"] not in ran] + results,
                                    key=lambda t: t["target"])
        written["merged"] = [m for m in written.get("merged", []) if not set(m["targets"]) & ran] + [
            {"command": command, "targets": sorted(ran), "examples_per_target": args.examples, "seed": args.seed,
             "python": platform.python_version(), "verifiers": _version("verifiers"), "note": args.note}]
    args.out.write_text(json.dumps(written, indent=1) + "\n")
    print(f"wrote {args.out}")
    return 1 if any(r["crash"] for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
