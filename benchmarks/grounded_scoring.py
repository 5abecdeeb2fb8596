"""Scoring one teacher dataset with r students: GroundedScorer against four naive runs, in one process.

    .venv/bin/python benchmarks/grounded_scoring.py                    # r=4, cpu preset, |Q_R|=32, embedded model
    .venv/bin/python benchmarks/grounded_scoring.py --q-r 64 --json out.json

Both sides do the same training work (StudentTrainConfig.cpu_small(), the same r student seeds, the
same dataset X of built-in E1 flows, the same Q_R). They differ in what SOAR's R_k (docs/design.md §4) is
wrapped in:
- scorer: the model loaded once, the r students evaluated together in mixed-adapter batches, and
  Acc(baseline, Q_R) measured once;
- naive:  for each student j, the model reloaded (load_model), the student trained, then evaluated alone
  on Q_R, and the baseline evaluated again, as r independent scripts would.
The machine is shared: the load average is printed before and after.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

MODEL = "smollm2-135m-instruct"
DATASET_ROWS = 16  # |X|: built-in E1 flows (sv_soar.tasks.e1.flows), seed 0


def greedy_accuracy(engine, task, rows, max_new_tokens: int, adapter: str | None = None) -> float:
    """Acc(model, rows) the naive way: one greedy completion a row, 64 rows a call (the scorer's eval params)."""
    from sv_soar.generation import SamplingParams

    params = SamplingParams(max_new_tokens=max_new_tokens, temperature=0.0, n=1, stop_at_json_end=True)
    solved = 0
    for start in range(0, len(rows), 64):
        chunk = rows[start : start + 64]
        completions = engine.generate([task.prompt(row) for row in chunk], params, adapters=adapter)
        solved += sum(bool(task.is_success(samples[0].text, row))
                      for row, samples in zip(chunk, completions, strict=True))
    return solved / len(rows)


def naive(model_name, task, dataset, q_r, config, students: int, seed: int) -> dict:
    """r independent runs: reload, train, evaluate the student alone, evaluate the baseline again."""
    from sv_soar.engines.transformers_engine import TransformersEngine
    from sv_soar.grounded import student_seed
    from sv_soar.models import load_model
    from sv_soar.student.trainer import student_adapter, student_policy, train_student

    seconds = {"load": 0.0, "train": 0.0, "evaluate": 0.0, "baseline_evaluate": 0.0}
    rewards = []
    for j in range(students):
        t0 = time.perf_counter()
        model, tokenizer = load_model(model_name)
        policy = student_policy(model, config)
        engine = TransformersEngine(policy, tokenizer, model_name=model_name)
        t1 = time.perf_counter()
        with student_adapter(policy, "student"):
            train_student(policy, engine, task, dataset, config, adapter_name="student", seed=student_seed(seed, j),
                          log=lambda entry: None)
            t2 = time.perf_counter()
            accuracy = greedy_accuracy(engine, task, q_r, config.tokens_for(task), adapter="student")
        t3 = time.perf_counter()
        baseline = greedy_accuracy(engine, task, q_r, config.tokens_for(task))
        t4 = time.perf_counter()
        rewards.append(accuracy - baseline)
        spans = {"load": t1 - t0, "train": t2 - t1, "evaluate": t3 - t2, "baseline_evaluate": t4 - t3}
        for name, span in spans.items():
            seconds[name] += span
        print(f"  naive student {j}: load {t1 - t0:.1f}s train {t2 - t1:.1f}s eval {t3 - t2:.1f}s "
              f"baseline {t4 - t3:.1f}s | R_kj {accuracy - baseline:+.3f}", flush=True)
        del policy, engine, model
    seconds["total"] = sum(seconds.values())
    return {"seconds": seconds, "reward": sum(rewards) / len(rewards), "student_rewards": rewards}


def scored(model_name, task, dataset, q_r, config, students: int, seed: int) -> dict:
    from sv_soar.baseline import Baseline
    from sv_soar.grounded import GroundedScorer

    t0 = time.perf_counter()
    scorer = GroundedScorer(model_name, task, config, students=students, progress=False)
    t1 = time.perf_counter()
    [score] = scorer.score([dataset], q_r, Baseline("base"), seed=seed)
    t2 = time.perf_counter()
    seconds = {"load": t1 - t0, **{k: v for k, v in score.seconds.items() if k != "total"}}
    seconds["total"] = t2 - t0
    print(f"  scorer: load {seconds['load']:.1f}s train {seconds['train']:.1f}s eval {seconds['evaluate']:.1f}s "
          f"baseline {seconds['baseline_evaluate']:.1f}s | R_k {score.reward:+.3f}", flush=True)
    return {"seconds": seconds, "reward": score.reward, "student_rewards": score.student_rewards}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=MODEL)
    parser.add_argument("--students", type=int, default=4, help="r (SOAR: 4)")
    parser.add_argument("--q-r", type=int, default=32, help="|Q_R| (SOAR: 64)")
    parser.add_argument("--threads", type=int, help="torch intra-op threads (default: torch's)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path, help="write the numbers here")
    args = parser.parse_args(argv)

    import torch

    from sv_soar.models import resolve_model
    from sv_soar.tasks.e1 import E1_TASK
    from sv_soar.tasks.e1.flows import generate_e1_flows
    from sv_soar.student.trainer import StudentTrainConfig

    if args.threads:
        torch.set_num_threads(args.threads)
    resolve_model(args.model)  # convert the embedded model once, outside the timings
    config = StudentTrainConfig.cpu_small()
    rows = generate_e1_flows(DATASET_ROWS + args.q_r, seed=0)
    dataset, q_r = rows[:DATASET_ROWS], rows[DATASET_ROWS:]
    load_before = os.getloadavg()
    print(f"{args.model} | r={args.students}, |X|={len(dataset)}, |Q_R|={len(q_r)} | cpu_small: {config.steps} steps × "
          f"{config.batch_prompts} prompts × {config.group_size}, ≤{config.max_new_tokens} tokens | torch "
          f"{torch.__version__}, {torch.get_num_threads()} threads, {os.cpu_count()} CPUs | loadavg {load_before}",
          flush=True)

    results = {
        "scorer": scored(args.model, E1_TASK, dataset, q_r, config, args.students, args.seed),
        "naive": naive(args.model, E1_TASK, dataset, q_r, config, args.students, args.seed),
    }
    load_after = os.getloadavg()
    print(f"\n{'phase':<18}{'scorer s':>10}{'naive s':>10}{'naive/scorer':>14}")
    for phase in ("load", "train", "evaluate", "baseline_evaluate", "total"):
        a, b = results["scorer"]["seconds"][phase], results["naive"]["seconds"][phase]
        print(f"{phase:<18}{a:>10.1f}{b:>10.1f}{(b / a if a > 0 else float('inf')):>14.2f}")
    print(f"R_k: scorer {results['scorer']['reward']:+.4f}, naive {results['naive']['reward']:+.4f} "
          f"| loadavg before {load_before}, after {load_after}")
    if args.json:
        args.json.write_text(json.dumps({**results, "config": config.model_dump(), "q_r": len(q_r),
                                         "students": args.students, "loadavg": [load_before, load_after],
                                         "platform": platform.platform()}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
