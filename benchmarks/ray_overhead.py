"""Ray overhead per student run: the same scoring call on the local backend and on ONE Ray actor.

    .venv/bin/python benchmarks/ray_overhead.py                                  # embedded 135M model
    .venv/bin/python benchmarks/ray_overhead.py --model tiny --steps 3           # the tests' tiny Llama

Both sides do identical work, serially, one torch thread each: r students of StudentTrainConfig.cpu_small()
on one dataset of built-in E1 flows, then their evaluation on Q_R (sv_soar.grounded). With one actor Ray
adds no parallelism, so the difference is what Ray costs: starting the cluster and the actor (loading the
model there), shipping the dataset, Q_R and the baseline to the actor, and the results back. Each side
scores `--repeats` times with different seeds (no reward cache; the baseline's Acc is measured once, on
the first call, on both sides). The machine is shared: its load average is printed before and after, and
both sides alternate (local, ray, local, ray, ...) so that a load swing hits both.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m-instruct",
                        help="embedded name, folder, or 'tiny' (the tests' tiny Llama, built locally)")
    parser.add_argument("--students", type=int, default=2, help="r")
    parser.add_argument("--steps", type=int, default=2, help="RL steps a student")
    parser.add_argument("--rows", type=int, default=8, help="rows of the dataset and of Q_R")
    parser.add_argument("--repeats", type=int, default=2, help="scoring calls a side")
    parser.add_argument("--json", type=Path, help="also write the numbers here")
    args = parser.parse_args()

    import torch

    from sv_soar.backends.ray_backend import RayGroundedScorer
    from sv_soar.baseline import Baseline
    from sv_soar.grounded import GroundedScorer
    from sv_soar.tasks import get_task
    from sv_soar.tasks.e1.flows import generate_e1_flows
    from sv_soar.student.trainer import StudentTrainConfig

    torch.set_num_threads(1)  # the actor gets num_cpus=1, hence 1 thread: the same on both sides
    model = args.model
    if model == "tiny":
        from tests.tiny_llama import build_tiny_llama

        model = str(build_tiny_llama(Path(tempfile.mkdtemp(prefix="ray-overhead-tiny-"))))
    task = get_task("e1")
    rows = [task.validate_row(row) for row in generate_e1_flows(2 * args.rows, seed=0)]
    dataset, q_r = rows[: args.rows], rows[args.rows :]
    config = StudentTrainConfig.cpu_small(steps=args.steps)
    load_before = os.getloadavg()
    print(f"ray overhead: model {args.model}, r={args.students}, {args.steps} steps x {config.batch_prompts} prompts x "
          f"{config.group_size}, |X|=|Q_R|={args.rows}, {args.repeats} calls a side; {platform.processor() or platform.machine()}, "
          f"{os.cpu_count()} CPUs, load average {load_before[0]:.2f} {load_before[1]:.2f} {load_before[2]:.2f}", flush=True)

    started = time.perf_counter()
    local = GroundedScorer(model, task, config, students=args.students, progress=False)
    load_local = time.perf_counter() - started
    started = time.perf_counter()
    remote = RayGroundedScorer(model, task, config, students=args.students, actors=1, progress=False)
    load_ray = time.perf_counter() - started

    seconds: dict[str, list[float]] = {"local": [], "ray": []}
    rewards: dict[str, list] = {"local": [], "ray": []}
    try:
        for repeat in range(args.repeats):
            for name, scorer in (("local", local), ("ray", remote)):
                t0 = time.perf_counter()
                [score] = scorer.score([dataset], q_r, Baseline("base"), seed=repeat)
                seconds[name].append(time.perf_counter() - t0)
                rewards[name].append(score.student_rewards)
                print(f"  {name} call {repeat}: {seconds[name][-1]:.2f}s ({seconds[name][-1] / args.students:.2f}s a "
                      f"student run), R_kj {score.student_rewards}", flush=True)
    finally:
        remote.close()
    load_after = os.getloadavg()

    per_run = {name: sum(values) / len(values) / args.students for name, values in seconds.items()}
    result = {
        "model": args.model, "students": args.students, "steps": args.steps, "rows": args.rows,
        "repeats": args.repeats, "seconds_startup": {"local": load_local, "ray": load_ray},
        "seconds_per_call": seconds, "seconds_per_student_run": per_run,
        "ratio_ray_to_local_per_run": per_run["ray"] / per_run["local"],
        "overhead_per_student_run_s": per_run["ray"] - per_run["local"],
        "same_rewards": rewards["local"] == rewards["ray"],
        "load_average_before": load_before, "load_average_after": load_after,
    }
    print(f"startup: local {load_local:.2f}s (model load), ray {load_ray:.2f}s (cluster + actor + model load)")
    print(f"per student run: local {per_run['local']:.3f}s, ray {per_run['ray']:.3f}s, "
          f"ratio ray/local {result['ratio_ray_to_local_per_run']:.3f}, overhead {result['overhead_per_student_run_s']:+.3f}s; "
          f"same R_kj on both: {result['same_rewards']}")
    print(f"load average after: {load_after[0]:.2f} {load_after[1]:.2f} {load_after[2]:.2f}")
    if args.json:
        args.json.write_text(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
