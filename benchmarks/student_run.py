"""One student run on the embedded model, timed: where does an inner-loop step spend its time?

    .venv/bin/python benchmarks/student_run.py                      # cpu_small preset, built-in E1 rows
    .venv/bin/python benchmarks/student_run.py --steps 5 --json out.json

The work is fixed by WORK alone (steps, prompts, group size, completion budget, LoRA modules and
rank, learning rate): a comparison against another trainer (TRL's GRPOTrainer) must read its
settings from `work_config()` so that both do the same work.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

# The one place the work is defined. Defaults: StudentTrainConfig.cpu_small() (steps 3, 2 prompts ×
# 4 completions, 48 new tokens, LoRA rank 8 on q_proj/v_proj); entries here override the preset.
MODEL = "smollm2-135m-instruct"
ROWS = 16  # built-in E1 flows (sv_soar.tasks.e1.flows), seed 0
WORK: dict = {}


def work_config(**overrides):
    from sv_soar.student.trainer import StudentTrainConfig

    return StudentTrainConfig.cpu_small(**{**WORK, **overrides})


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=MODEL)
    parser.add_argument("--steps", type=int, help="override WORK's steps")
    parser.add_argument("--group-size", type=int, help="override WORK's group_size")
    parser.add_argument("--batch-prompts", type=int, help="override WORK's batch_prompts")
    parser.add_argument("--max-new-tokens", type=int, help="override WORK's max_new_tokens")
    parser.add_argument("--threads", type=int, help="torch intra-op threads (default: torch's)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path, help="write config, per-step log and totals here")
    args = parser.parse_args(argv)

    import torch

    from sv_soar.engines.transformers_engine import TransformersEngine
    from sv_soar.models import load_model
    from sv_soar.tasks.e1 import E1_TASK
    from sv_soar.tasks.e1.flows import generate_e1_flows
    from sv_soar.student.trainer import student_adapter, student_policy, train_student

    if args.threads:
        torch.set_num_threads(args.threads)
    overrides = {k: v for k, v in {"steps": args.steps, "group_size": args.group_size,
                                    "batch_prompts": args.batch_prompts,
                                    "max_new_tokens": args.max_new_tokens}.items() if v is not None}
    config = work_config(**overrides)

    started = time.perf_counter()
    model, tokenizer = load_model(args.model)
    policy = student_policy(model, config)
    engine = TransformersEngine(policy, tokenizer, model_name=args.model)
    seconds_load = time.perf_counter() - started
    rows = generate_e1_flows(ROWS, seed=0)
    print(f"{args.model}: loaded in {seconds_load:.1f}s | torch {torch.__version__}, {torch.get_num_threads()} threads "
          f"| steps {config.steps} × {config.batch_prompts} prompts × {config.group_size} completions, "
          f"≤{config.max_new_tokens} tokens, LoRA r{config.lora_rank} on {config.lora_target_modules}", flush=True)

    with student_adapter(policy, "bench"):
        run = train_student(policy, engine, E1_TASK, rows, config, adapter_name="bench", seed=args.seed)

    log = run.log
    total = {key: sum(entry[key] for entry in log)
             for key in ("seconds_generation", "seconds_forward_backward", "seconds_other", "gen_tokens")}
    wall = total["seconds_generation"] + total["seconds_forward_backward"] + total["seconds_other"]
    print(f"total {wall:.1f}s over {len(log)} steps ({wall / len(log):.1f}s/step): "
          f"generation {total['seconds_generation']:.1f}s ({100 * total['seconds_generation'] / wall:.0f}%), "
          f"forward/backward {total['seconds_forward_backward']:.1f}s "
          f"({100 * total['seconds_forward_backward'] / wall:.0f}%), other {total['seconds_other']:.1f}s | "
          f"{total['gen_tokens']:.0f} tokens, {total['gen_tokens'] / wall:.1f} tok/s end to end, "
          f"{total['gen_tokens'] / total['seconds_generation']:.1f} tok/s generating")
    if args.json:
        args.json.write_text(json.dumps({
            "model": args.model, "machine": platform.processor() or platform.machine(),
            "threads": torch.get_num_threads(), "seconds_load": seconds_load,
            "config": config.model_dump(), "log": log, "total": {**total, "seconds": wall},
        }, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
