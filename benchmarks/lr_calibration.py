"""Calibrate the LoRA learning rates by measurement (writes benchmarks/results/lr_calibration.json).

SOAR's 1e-5 (arXiv 2601.18778) is a full-fine-tuning rate. A LoRA adapter starts with B = 0, and one
AdamW step moves every entry by about the learning rate whatever the batch size (Adam divides by the
gradient's running RMS), so at 1e-5 one update changes the policy's logits by ~1e-5 · rank-sized sums:
far too little to change one sampled token. Two measurements decide the rates:

- student: `--student-steps` RL steps (SOAR: 10) on a learnable set (built-in E1 flows) at each rate;
  the training reward of the last two steps against the first two, and the success rate on the set
  after training against the untrained student's, both sampled with the same seed (the same random
  numbers). The steps are smaller than SOAR's 8 prompts × 32 completions (a 2-core CPU); since Adam's
  step does not grow with the batch, the rate that moves the adapter in 10 small steps moves it in 10
  large ones too, with less noise.
- teacher: one outer step's update (g·n rollouts, RLOO advantages of the size R_k takes, ±0.05..0.15)
  at each rate; the share of the step's rollouts that come out different when redrawn with the same
  seed after the update, and KL(π‖π_init) per token on them (Teacher.drift).

    python benchmarks/lr_calibration.py                      # the embedded model, format-warm-started
    python benchmarks/lr_calibration.py --only teacher --teacher-rates 1e-5 1e-4 1e-3

Each rate's row prints as it finishes; the JSON holds every number.
"""

from __future__ import annotations

import argparse
import json
import random
import time
from pathlib import Path

import torch

MODEL = "smollm2-135m-instruct+e1-format"
RESULTS = Path(__file__).parent / "results" / "lr_calibration.json"


def student_rows(n: int):
    from sv_soar.tasks.e1.flows import generate_e1_flows

    return generate_e1_flows(n, seed=0)


def success_rate(engine, task, rows, samples: int, seed: int, adapter, max_new_tokens: int) -> float:
    from sv_soar.evaluation.pass_at_k import sample_completions

    texts = sample_completions(engine, task, rows, samples, seed=seed, max_new_tokens=max_new_tokens,
                               batch_size=64, adapter=adapter, progress=False)
    wins = [task.is_success(t, row) for row, drawn in zip(rows, texts) for t in drawn]
    return sum(wins) / len(wins)


def calibrate_student(model_name: str, rates: list[float], steps: int, batch_prompts: int, group_size: int,
                      rows_n: int, eval_samples: int) -> list[dict]:
    from sv_soar.engines.transformers_engine import TransformersEngine
    from sv_soar.models import load_model
    from sv_soar.tasks import get_task
    from sv_soar.student.trainer import StudentTrainConfig, student_adapter, student_policy, train_student

    task = get_task("e1")
    rows = student_rows(rows_n)
    model, tokenizer = load_model(model_name)
    base = StudentTrainConfig.cpu_small(steps=steps, batch_prompts=batch_prompts, group_size=group_size)
    policy = student_policy(model, base)
    engine = TransformersEngine(policy, tokenizer, model_name=model_name, max_batch_size=64)
    tokens = base.tokens_for(task)
    before = success_rate(engine, task, rows, eval_samples, 12345, None, tokens)
    print(f"student: untrained success on the set {before:.3f} ({rows_n} rows x {eval_samples} samples)", flush=True)
    results = []
    for lr in rates:
        config = base.model_copy(update={"learning_rate": lr})
        started = time.perf_counter()
        with student_adapter(policy, "calibration"):
            run = train_student(policy, engine, task, rows, config, adapter_name="calibration", seed=0,
                                log=lambda entry: None)
            after = success_rate(engine, task, rows, eval_samples, 12345, "calibration", tokens)
        rewards = [entry["mean_reward"] for entry in run.log]
        row = {"lr": lr, "steps": steps, "batch_prompts": batch_prompts, "group_size": group_size,
               "train_reward_first2": sum(rewards[:2]) / 2, "train_reward_last2": sum(rewards[-2:]) / 2,
               "success_before": before, "success_after": after, "final_kl": run.log[-1]["kl"],
               "seconds": time.perf_counter() - started}
        print(f"student lr {lr:.0e}: train reward {row['train_reward_first2']:+.3f} -> {row['train_reward_last2']:+.3f}, "
              f"success on the set {before:.3f} -> {after:.3f}, KL {row['final_kl']:.4f}, {row['seconds']:.0f}s",
              flush=True)
        results.append(row)
    return results


def calibrate_teacher(model_name: str, rates: list[float], g: int, n: int, seed: int) -> list[dict]:
    from sv_soar.config import parse_config
    from sv_soar.soar_step import rloo_teacher_advantages
    from sv_soar.teacher_policy import Teacher
    from sv_soar.teacher.contamination import HardSetIndex

    results = []
    for lr in rates:
        config = parse_config({"data": {"hard_set": "unused"}, "run": {"seed": seed, "outer_steps": 20},
                               "teacher": {"model": model_name, "g": g, "n": n, "learning_rate": lr,
                                           "max_new_tokens": 160, "lora_rank": 8, "lora_alpha": 16,
                                           "lora_target_modules": ["q_proj", "v_proj"]}})
        teacher = Teacher(config)
        started = time.perf_counter()
        sample = teacher.sample("e1", HardSetIndex([]), 777 + seed)
        rng = random.Random(seed)
        r_k = [rng.uniform(-0.15, 0.15) for _ in range(g)]
        advantages = rloo_teacher_advantages(r_k)
        per_rollout = [advantages[min(i // n, g - 1)] for i in range(len(sample.rows))]
        update = teacher.update(sample, per_rollout, step=0)
        drift = teacher.drift(sample)
        row = {"lr": lr, "g": g, "n": n, "rollouts": len(sample.first_round), "valid": len(sample.rows),
               "R_k": r_k, **{k: update[k] for k in ("kl", "grad_norm")}, **drift,
               "seconds": time.perf_counter() - started}
        print(f"teacher lr {lr:.0e}: changed share {drift['changed_share']:.3f} of {row['rollouts']} rollouts, "
              f"KL after {drift['kl_after']:.5f}, {row['seconds']:.0f}s", flush=True)
        results.append(row)
        del teacher
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=MODEL)
    parser.add_argument("--only", choices=["student", "teacher"])
    parser.add_argument("--student-rates", type=float, nargs="+", default=[1e-5, 1e-4, 1e-3])
    parser.add_argument("--teacher-rates", type=float, nargs="+", default=[1e-5, 1e-4, 1e-3])
    parser.add_argument("--student-steps", type=int, default=10)
    parser.add_argument("--batch-prompts", type=int, default=2)
    parser.add_argument("--group-size", type=int, default=8)
    parser.add_argument("--rows", type=int, default=8)
    parser.add_argument("--eval-samples", type=int, default=8)
    parser.add_argument("--g", type=int, default=2)
    parser.add_argument("--n", type=int, default=4)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    torch.manual_seed(0)
    report = {"model": args.model, "torch_threads": torch.get_num_threads()}
    if args.only in (None, "teacher"):
        report["teacher"] = calibrate_teacher(args.model, args.teacher_rates, args.g, args.n, seed=0)
    if args.only in (None, "student"):
        report["student"] = calibrate_student(args.model, args.student_rates, args.student_steps, args.batch_prompts,
                                              args.group_size, args.rows, args.eval_samples)
    previous = json.loads(args.out.read_text()) if args.out.is_file() else {}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(previous | report, indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
