"""`sv-soar export-vf RUN_DIR`: a run's final-student training set, for a verifiers trainer on a GPU cluster.

The final evaluation trains fresh students on PQ ∪ D_train (the promoted questions and the hard set's
training half; a Hard-only run has no promoted questions, so D_train alone) with the project's own inner
loop. This command writes that same training set, plus a trainer config, so that the student can be
trained with verifiers' trainer instead:

    OUT/train.jsonl       the rows (SV-Bench JSONL), read by env sv-soar-student (source "jsonl")
    OUT/vf-train.toml     `vf-train @ OUT/vf-train.toml`: verifiers 0.1.9.post3's RLTrainer (vLLM server
                          `vf-vllm`, deepspeed, a GPU); [trainer.args] are its RLConfig fields
    OUT/prime-rl.toml     with --prime-rl instead: a prime-rl RL config in the hosted layout
                          (`prime rl run OUT/prime-rl.toml`), as configs/hosted/teacher-*.toml

and `sv-soar evaluate RUN_DIR --adapter DIR` scores the adapter that training produces on D_test.

Not the same objective as the project's inner loop: verifiers' trainer (and prime-rl) use mean-centred
group advantages, no KL term, and asynchronous off-policy updates with importance-ratio masking; the
project's loop is on-policy RLOO with a k3 KL to the base model (sv_soar.student.trainer). The settings
that do carry over (LoRA rank/alpha/dropout/targets, learning rate and schedule, group size, prompts a
step, completion budget, temperature, gradient clip, steps) are copied from the run's config.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from sv_soar.config import _toml_value

VF_TRAIN_FILE = "vf-train.toml"
PRIME_RL_FILE = "prime-rl.toml"
TRAIN_FILE = "train.jsonl"
STUDENT_ENV = "sv-soar-student"


def training_rows(run) -> list[dict]:
    """PQ ∪ D_train as the final evaluation trains on it (shuffled together there; order kept here)."""
    from sv_soar.evaluation.final import training_phases

    promoted = [] if run.config.run.method == "hard-only" else run.promoted_datasets()
    return [row for phase in training_phases(promoted, run.d_train(), curriculum=False) for row in phase]


def trained_model_name(name: str) -> str:
    """What a trainer elsewhere can load: a HF id stays as is; an embedded name becomes its converted folder."""
    from sv_soar.models import EMBEDDED_MODELS, resolve_model

    return resolve_model(name) if name in EMBEDDED_MODELS else name


def vf_train_config(run, train_path: Path, model: str) -> dict[str, Any]:
    """vf-train's TOML (verifiers 0.1.9.post3 scripts/train.py): model, [env] id and args, [trainer.args] RLConfig."""
    student = run.config.final_student_config()
    steps = run.config.evaluation.steps or student.steps
    task = run.config.scoring_task().name
    return {
        "model": model,
        "env": {"id": STUDENT_ENV, "args": {"task": task, "source": "jsonl", "path": str(train_path)}},
        "trainer": {"args": {
            "run_name": f"sv-soar-{run.folder.name}",
            "output_dir": str(run.folder / "vf-train"),
            "max_steps": steps,
            "use_lora": True,
            "lora_rank": student.lora_rank,
            "lora_alpha": student.lora_alpha,
            "lora_dropout": student.lora_dropout,
            "lora_target_modules": list(student.lora_target_modules),
            "learning_rate": student.learning_rate,
            "lr_scheduler_type": "cosine" if student.lr_schedule == "cosine" else "constant",
            "warmup_steps": student.warmup_steps,
            "weight_decay": student.weight_decay,
            "max_grad_norm": student.max_grad_norm,
            "rollouts_per_example": student.group_size,  # SOAR's RLOO group (32)
            "batch_size": student.batch_prompts * student.group_size,  # rollouts a step: 8 prompts × 32
            "micro_batch_size": _divisor_at_most(student.batch_prompts * student.group_size, student.micro_batch_size),
            "max_tokens": student.max_new_tokens,
            "temperature": student.temperature,
            "gradient_checkpointing": student.gradient_checkpointing,
            "seed": run.config.run.seed,
            "report_to": "none",
        }},
    }


def prime_rl_config(run, train_path: Path, model: str) -> dict[str, Any]:
    """A prime-rl RL config in the hosted layout of configs/hosted/teacher-*.toml, for the student env."""
    student = run.config.final_student_config()
    task = run.config.scoring_task().name
    return {
        "model": model,
        "max_steps": run.config.evaluation.steps or student.steps,
        "rollouts_per_example": student.group_size,
        "batch_size": student.batch_prompts * student.group_size,
        "learning_rate": student.learning_rate,
        "lora_alpha": student.lora_alpha,
        "sampling": {"max_tokens": student.max_new_tokens, "temperature": student.temperature},
        "env": [{"id": f"sv-soar/{STUDENT_ENV}", "args": {"task": task, "source": "jsonl", "path": str(train_path)}}],
        "buffer": {"seed": run.config.run.seed},
    }


def _divisor_at_most(total: int, limit: int) -> int:
    """The largest divisor of `total` not above `limit` (RLConfig asserts batch_size % micro_batch_size == 0)."""
    return max(d for d in range(1, min(total, limit) + 1) if total % d == 0)


def _toml(values: dict[str, Any]) -> str:
    """TOML of scalars, lists, one level of tables ([env]) and two ([trainer.args]); [[env]] for a list."""
    lines = [f"{key} = {_value(value)}" for key, value in values.items() if not isinstance(value, (dict, list))
             or (isinstance(value, list) and not (value and isinstance(value[0], dict)))]
    for key, value in values.items():
        if isinstance(value, dict):
            scalars = {k: v for k, v in value.items() if not isinstance(v, dict)}
            lines += ["", f"[{key}]"] + [f"{k} = {_value(v)}" for k, v in scalars.items()]
            for sub, table in value.items():
                if isinstance(table, dict):
                    lines += ["", f"[{key}.{sub}]"] + [f"{k} = {_value(v)}" for k, v in table.items()]
        elif isinstance(value, list) and value and isinstance(value[0], dict):
            for table in value:
                lines += ["", f"[[{key}]]"] + [f"{k} = {_value(v)}" for k, v in table.items()]
    return "\n".join(lines) + "\n"


def _value(value: Any) -> str:
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{k} = {_value(v)}" for k, v in value.items()) + " }"
    return _toml_value(value)


def export(run, out: Path, *, prime_rl: bool = False) -> dict[str, Path]:
    from sv_soar.jsonl import write_jsonl, write_text_atomic

    rows = training_rows(run)
    out.mkdir(parents=True, exist_ok=True)
    train_path = write_jsonl(out / TRAIN_FILE, rows).resolve()
    model = trained_model_name(run.config.student.model)
    method = run.config.run.method
    header = (f"# written by `sv-soar export-vf {run.folder}`: {len(rows)} rows "
              f"({'D_train alone' if method == 'hard-only' else 'PQ ∪ D_train'}, method {method}).\n"
              "# Not the project's objective: mean-centred advantages, no KL, asynchronous off-policy updates with\n"
              "# importance-ratio masking (sv_soar/export_vf.py). Score the adapter: sv-soar evaluate RUN_DIR --adapter DIR\n")
    if prime_rl:
        config_path = write_text_atomic(out / PRIME_RL_FILE, header + _toml(prime_rl_config(run, train_path, model)))
    else:
        config_path = write_text_atomic(out / VF_TRAIN_FILE, header + _toml(vf_train_config(run, train_path, model)))
    return {"train": train_path, "config": config_path}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run_dir", type=Path, help="a run folder written by `sv-soar train`")
    parser.add_argument("--out", type=Path, help="output folder (default: RUN_DIR/export-vf)")
    parser.add_argument("--prime-rl", action="store_true", help="write a prime-rl RL config instead of vf-train's")


def run(args: argparse.Namespace) -> int:
    from sv_soar.run_dir import RunDirError, open_run

    try:
        run_folder = open_run(args.run_dir)
        written = export(run_folder, args.out or args.run_dir / "export-vf", prime_rl=args.prime_rl)
    except (RunDirError, OSError, ValueError) as exc:
        print(f"sv-soar export-vf: {exc}", file=sys.stderr)
        return 2
    print(f"wrote {written['train']} and {written['config']}")
    command = f"prime rl run {written['config']}" if args.prime_rl else f"vf-train @ {written['config']}"
    print(f"train: {command}   (untested here: needs a GPU and the trainer's own dependencies)")
    return 0
