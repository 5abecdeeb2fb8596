"""Try 2's probe (experiments/mechanism/README.md): one student a seed trained by the inner loop's own trainer
(`train_student`, one optimizer for the whole run) on a problem set, and every `--every` steps its J measured
exactly at T 1 on the 32 validation hard pairs and on 32 held-out icmp pairs (does it learn the rule where the cue
is silent, and does that carry over to where the cue speaks?), with p(Malicious) over the validation items (a
constant answer is ≈ 0 or ≈ 1).

    .venv/bin/python experiments/mechanism/probe2.py --rows stones --batching balanced --lr 1e-4 --steps 40

--rows: stones (the 64 oracle stepping stones), hard (D_train's 32 hard items: Hard-only), stones+hard.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from gates import pair_values  # noqa: E402  (experiments/mechanism/gates.py, this script's folder)

from sv_soar.engines.transformers_engine import TransformersEngine  # noqa: E402
from sv_soar.jsonl import read_jsonl  # noqa: E402
from sv_soar.models import load_model  # noqa: E402
from sv_soar.student.config import ALL_LINEAR, StudentTrainConfig  # noqa: E402
from sv_soar.student.trainer import remove_student_adapter, student_policy, train_student  # noqa: E402
from sv_soar.tasks import get_task  # noqa: E402
from sv_soar.tasks.mechanism import stepping_stone_rows, twin_of  # noqa: E402

HERE = Path(__file__).resolve().parent
TASK = get_task("mechanism")
MODEL = "smollm2-135m-instruct+e1-format+mechanism-cue"


def pair_j(model, tokenizer, rows) -> tuple[float, float]:
    """(J at T 1, p(Malicious)) over rows and their twins: the gates' `pair_values`, averaged."""
    values = pair_values(model, tokenizer, rows, 1.0)
    return float(values["J"].mean()), float(values["p_malicious"].mean())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", choices=("stones", "hard", "stones+hard"), default="stones")
    parser.add_argument("--limit", type=int, default=None, help="train on the set's first LIMIT problems (the "
                        "stepping stones alternate labels, so an even limit is balanced): a dataset of SOAR's size n")
    parser.add_argument("--batching", choices=("shuffled", "balanced"), default="shuffled")
    parser.add_argument("--lr", type=float, default=1e-4)
    parser.add_argument("--optimizer", choices=("adamw", "sgd"), default="adamw")
    parser.add_argument("--kl", type=float, default=0.001)
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--every", type=int, default=10)
    parser.add_argument("--batch-prompts", type=int, default=8)
    parser.add_argument("--group-size", type=int, default=8)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--out", type=Path, default=None, help="append one JSON line of results here")
    args = parser.parse_args()
    torch.set_num_threads(1)

    stones = read_jsonl(HERE / "stepping-stones.jsonl", TASK.validate_row)
    hard = read_jsonl(ROOT / "configs/hardsets/mechanism/d_train.jsonl", TASK.validate_row)
    rows = {"stones": stones, "hard": hard, "stones+hard": stones + hard}[args.rows][: args.limit]
    validation = read_jsonl(HERE / "validation.jsonl", TASK.validate_row)
    trained = {row["question"] for row in stones}
    icmp = [row for row in stepping_stone_rows(96, seed=99) if row["question"] not in trained
            and twin_of(row)["question"] not in trained][:32]
    config = StudentTrainConfig(steps=args.steps, batch_prompts=args.batch_prompts, group_size=args.group_size,
                                learning_rate=args.lr, lr_schedule="constant", optimizer=args.optimizer,
                                batching=args.batching, kl_coef=args.kl, temperature=1.0, reward="correctness",
                                max_new_tokens=1, lora_rank=8, lora_alpha=16, lora_target_modules=ALL_LINEAR,
                                micro_batch_size=64)
    model, tokenizer = load_model(MODEL)
    policy = student_policy(model, config)
    engine = TransformersEngine(policy, tokenizer)
    j0, pm0 = pair_j(policy, tokenizer, validation)
    i0, _ = pair_j(policy, tokenizer, icmp)
    print(f"{vars(args)}\nbase: J val {j0:+.3f} J icmp {i0:+.3f} p(M) {pm0:.2f}", flush=True)
    result = {"args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
              "base": {"J_validation": j0, "J_icmp": i0, "p_malicious": pm0}, "seeds": {}}
    for seed in args.seeds:
        curve, log, started = [], [], time.perf_counter()

        def on_step(entry: dict) -> None:
            log.append(entry)
            if entry["step"] % args.every == 0:
                j, pm = pair_j(policy, tokenizer, validation)
                ji, _ = pair_j(policy, tokenizer, icmp)
                recent = log[-args.every:]
                point = {"step": entry["step"], "J_validation": j, "J_icmp": ji, "p_malicious": pm,
                         "reward": statistics.mean(e["mean_reward"] for e in recent),
                         "mixed_groups": statistics.mean(e["mixed_groups"] for e in recent),
                         "seconds": time.perf_counter() - started}
                curve.append(point)
                print(f"  seed {seed} step {point['step']:>3}: J val {j:+.3f} J icmp {ji:+.3f} p(M) {pm:.2f} "
                      f"reward {point['reward']:.2f} mixed {point['mixed_groups']:.2f} ({point['seconds']:.0f} s)",
                      flush=True)

        train_student(policy, engine, TASK, rows, config, adapter_name=f"probe-{seed}", seed=seed, log=on_step)
        remove_student_adapter(policy, f"probe-{seed}")
        result["seeds"][seed] = curve
    if args.out:
        with args.out.open("a") as handle:
            handle.write(json.dumps(result) + "\n")


if __name__ == "__main__":
    main()
