"""What the reference cache saves: a mechanism-task student (one-token answers) trained with π_ref's distribution
read once a prompt (`reference_logprobs(cache=...)`, what the trainer does) against a forward of π_ref every step,
alternating the two so that a noisy machine slows both alike. The two runs must end on the same weights.

    .venv/bin/python benchmarks/reference_cache.py                 # 3 pairs of 12-step students on 8 problems
    .venv/bin/python benchmarks/reference_cache.py --steps 20 --pairs 2 --json benchmarks/results/reference_cache.json

Prints seconds a step with and without the cache and their ratio, measured in this run.
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

from sv_soar.engines.transformers_engine import TransformersEngine  # noqa: E402
from sv_soar.jsonl import read_jsonl  # noqa: E402
from sv_soar.models import load_model  # noqa: E402
from sv_soar import policy_gradient  # noqa: E402
from sv_soar.student.config import ALL_LINEAR, StudentTrainConfig  # noqa: E402
from sv_soar.student.trainer import remove_student_adapter, student_policy, train_student  # noqa: E402
from sv_soar.tasks import get_task  # noqa: E402

MODEL = "smollm2-135m-instruct+e1-format+mechanism-cue"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=12)
    parser.add_argument("--pairs", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--rows", type=int, default=8, help="problems the student trains on (a SOAR dataset's n: 8 in "
                        "the mechanism experiment; the cache pays from each problem's second visit)")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    task = get_task("mechanism")
    rows = read_jsonl(REPO / "experiments/mechanism/stepping-stones.jsonl", task.validate_row)[: args.rows]
    config = StudentTrainConfig(steps=args.steps, batch_prompts=8, group_size=8, learning_rate=1e-4,
                                lr_schedule="constant", batching="balanced", kl_coef=0.001, temperature=1.0,
                                reward="correctness", max_new_tokens=1, lora_rank=8, lora_alpha=16,
                                lora_target_modules=ALL_LINEAR, micro_batch_size=64)
    model, tokenizer = load_model(MODEL)
    policy = student_policy(model, config)
    engine = TransformersEngine(policy, tokenizer)
    uncached_reference = policy_gradient.reference_logprobs

    def without_cache(*call, cache=None, **kwargs):
        return uncached_reference(*call[:6], **kwargs)  # the cache argument dropped: a forward every step

    seconds: dict[str, list[float]] = {"cached": [], "uncached": []}
    states = {}
    for pair in range(args.pairs):
        for arm in ("uncached", "cached") if pair % 2 == 0 else ("cached", "uncached"):
            patch = mock.patch.object(policy_gradient, "reference_logprobs", without_cache) if arm == "uncached" \
                else mock.patch.object(policy_gradient, "reference_logprobs", uncached_reference)
            with patch:
                started = time.perf_counter()
                run = train_student(policy, engine, task, rows, config, adapter_name=f"{arm}-{pair}", seed=pair,
                                    log=lambda entry: None)
                seconds[arm].append((time.perf_counter() - started) / args.steps)
            remove_student_adapter(policy, f"{arm}-{pair}")
            states[arm, pair] = run.adapter_state
            print(f"pair {pair} {arm:>8}: {seconds[arm][-1]:.2f} s a step", flush=True)
    same = all(torch.equal(states["cached", p][k], states["uncached", p][k]) for p in range(args.pairs)
               for k in states["cached", p])
    result = {"steps": args.steps, "pairs": args.pairs, "threads": args.threads, "rows": len(rows),
              "seconds_per_step": {arm: statistics.mean(v) for arm, v in seconds.items()},
              "ratio_uncached_to_cached": statistics.mean(seconds["uncached"]) / statistics.mean(seconds["cached"]),
              "same_weights": same}
    print(json.dumps(result))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=1) + "\n")
    return 0 if same else 1


if __name__ == "__main__":
    raise SystemExit(main())
