"""What fused rollouts save: a mechanism-task student (one-token answers) whose rollouts and update share one forward
(`TransformersEngine.first_tokens`, the prompts' common prefix run once: what the trainer does) against rollouts from
`generate` and an update that runs the prompts again, alternating the two so that a noisy machine slows both alike.
The two runs draw the same rollouts (their rewards must match step for step) and end on nearly the same weights.

    .venv/bin/python benchmarks/fused_rollouts.py                 # 2 pairs of 8-step students on 8 problems
    .venv/bin/python benchmarks/fused_rollouts.py --json benchmarks/results/fused_rollouts.json

Prints seconds a step with and without fusing and their ratio, measured in this run.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path
from unittest import mock

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from sv_soar.config import load_config  # noqa: E402
from sv_soar.engines.transformers_engine import TransformersEngine  # noqa: E402
from sv_soar.jsonl import read_jsonl  # noqa: E402
from sv_soar.models import load_model  # noqa: E402
from sv_soar.student import trainer  # noqa: E402
from sv_soar.tasks import get_task  # noqa: E402

CONFIG = REPO / "experiments/mechanism/config-try10.toml"
MODEL = "smollm2-135m-instruct+e1-format+mechanism-cue"  # its [student] model


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--pairs", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--model", default=MODEL, help="any model name (the step's cost does not depend on weights; "
                        "the base smollm2-135m-instruct needs no build)")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    task = get_task("mechanism")
    rows = read_jsonl(REPO / "experiments/mechanism/stepping-stones.jsonl", task.validate_row)[:8]
    # the mechanism experiment's student, as its comparison trains it
    config = load_config(CONFIG).student_train_config().model_copy(update={"steps": args.steps})
    model, tokenizer = load_model(args.model)
    policy = trainer.student_policy(model, config)
    engine = TransformersEngine(policy, tokenizer)
    fused_rollouts = trainer.fused_rollouts
    assert fused_rollouts(engine, task, config), "the benchmark's student must be one the trainer fuses"

    seconds: dict[str, list[float]] = {"fused": [], "unfused": []}
    runs = {}
    for pair in range(args.pairs):
        for arm in ("unfused", "fused") if pair % 2 == 0 else ("fused", "unfused"):
            choice = fused_rollouts if arm == "fused" else (lambda *call: False)
            with mock.patch.object(trainer, "fused_rollouts", choice):
                started = time.perf_counter()
                runs[arm, pair] = trainer.train_student(policy, engine, task, rows, config, adapter_name=f"{arm}-{pair}",
                                                        seed=pair, log=lambda entry: None)
                seconds[arm].append((time.perf_counter() - started) / args.steps)
            trainer.remove_student_adapter(policy, f"{arm}-{pair}")
            print(f"pair {pair} {arm:>7}: {seconds[arm][-1]:.2f} s a step", flush=True)
    same_rollouts = all([e["mean_reward"] for e in runs["fused", p].log] == [e["mean_reward"] for e in runs["unfused", p].log]
                        for p in range(args.pairs))
    weight_gap = max((runs["fused", p].adapter_state[k] - runs["unfused", p].adapter_state[k]).abs().max().item()
                     for p in range(args.pairs) for k in runs["fused", p].adapter_state)
    result = {"model": args.model, "steps": args.steps, "pairs": args.pairs, "threads": args.threads, "rows": len(rows),
              "seconds_per_step": {arm: statistics.mean(v) for arm, v in seconds.items()},
              "ratio_unfused_to_fused": statistics.mean(seconds["unfused"]) / statistics.mean(seconds["fused"]),
              "same_rewards_every_step": same_rollouts, "max_weight_difference": weight_gap,
              "learning_rate": config.learning_rate}
    print(json.dumps(result))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=1) + "\n")
    return 0 if same_rollouts else 1


if __name__ == "__main__":
    raise SystemExit(main())
