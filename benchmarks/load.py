"""32 teacher groups scored at once through the teacher rubric, bounded by a scorer pool; writes
benchmarks/results/load.json, or with --remote (students trained by one `sv-soar serve-students`)
benchmarks/results/load-remote.json (tests/concurrent_scoring.py says what is measured).

    python benchmarks/load.py --groups 32 --pool 2             # then: python scripts/reliability.py
    python benchmarks/load.py --groups 32 --pool 2 --remote
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

RESULTS = REPO / "benchmarks" / "results" / "load.json"
REMOTE_RESULTS = REPO / "benchmarks" / "results" / "load-remote.json"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--groups", type=int, default=32)
    parser.add_argument("--pool", type=int, default=2, help="max_concurrent_scorings")
    parser.add_argument("--remote", action="store_true",
                        help="students train on one student service (in this process, loopback, a token)")
    parser.add_argument("--out", type=Path, default=None, help=f"default: {RESULTS.name}, or {REMOTE_RESULTS.name}")
    args = parser.parse_args()
    logging.basicConfig(level=logging.ERROR)
    import torch

    from tests.concurrent_scoring import score_concurrently, summary
    from tests.tiny_llama import build_tiny_llama

    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as folder:
        model = build_tiny_llama(Path(folder) / "model")
        result = score_concurrently(Path(folder), model, groups=args.groups, pool=args.pool, remote=args.remote)
    out = summary(result)
    if args.remote:  # the service runs one job at a time, one job a group; the pool bounds requests in flight
        bounded = (out["max_concurrent_scorings"] == 1 and out["service_jobs"] == args.groups
                   and 1 <= out["max_requests_in_flight"] <= args.pool)
    else:
        bounded = 1 <= out["max_concurrent_scorings"] <= args.pool
    out["passed"] = (out["completed"] == args.groups and out["distinct_steps"] == args.groups
                     and out["scoring_errors"] == 0 and out["trainings"] == args.groups * 2 * 2
                     and out["trained_twice"] == 0 and bounded)
    out["command"] = "python " + " ".join(sys.argv)
    path = args.out or (REMOTE_RESULTS if args.remote else RESULTS)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(out, indent=1) + "\n")
    print(json.dumps(out, indent=1))
    return 0 if out["passed"] else 1


if __name__ == "__main__":
    sys.exit(main())
