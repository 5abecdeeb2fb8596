"""`sv-soar export-vf RUN_DIR`: a run's final-student training set, for a verifiers trainer on a GPU cluster.

The final evaluation trains fresh students on PQ ∪ D_train (the promoted questions and the hard set's
training half; a Hard-only run has no promoted questions, so D_train alone) with the project's own inner
loop. This command writes that same training set, plus a trainer config, so that the student can be
trained with verifiers' trainer instead:

    OUT/train.jsonl       the rows (SV-Bench JSONL), read by env sv-soar-student (source "jsonl")
    OUT/vf-train.toml     `vf-train @ OUT/vf-train.toml`: verifiers 0.1.9.post3's RLTrainer (vLLM server
                          `vf-vllm`, deepspeed, a GPU); [trainer.args] are its RLConfig fields
    OUT/prime-rl.toml     with --prime-rl instead: a prime-rl RL config for the verifiers v1 student taskset
                          (environments/sv_soar_student_v1), as configs/hosted/student-hard-only-e1.toml;
                          its rows are OUT/train.jsonl packaged into that env under a name (the command
                          prints how), since a hosted env server cannot read this machine's paths

and `sv-soar evaluate RUN_DIR --adapter DIR` scores the adapter that training produces on D_test.

Not the same objective as the project's inner loop: verifiers' trainer (and prime-rl) use mean-centred
group advantages, no KL term, and asynchronous off-policy updates with importance-ratio masking; the
project's loop is on-policy RLOO with a k2 KL to the student's starting point (sv_soar.policy_gradient). The settings
that do carry over (LoRA rank/alpha/dropout/targets, learning rate and schedule, group size, prompts a
step, completion budget, temperature, gradient clip, steps) are copied from the run's config.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from sv_soar.config import _toml_value
from sv_soar.evaluation.final import training_phases
from sv_soar.jsonl import write_jsonl, write_text_atomic
from sv_soar.models import EMBEDDED_MODELS, resolve_model
from sv_soar.tasks import get_task, scoring_task

VF_TRAIN_FILE = "vf-train.toml"
PRIME_RL_FILE = "prime-rl.toml"
TRAIN_FILE = "train.jsonl"
STUDENT_ENV = "sv-soar-student"
STUDENT_ENV_V1 = "sv-soar-student-v1"  # environments/sv_soar_student_v1


def training_rows(run) -> list[dict]:
    """PQ ∪ D_train as the final evaluation trains on it (shuffled together there; order kept here)."""
    promoted = [] if run.config.run.method == "hard-only" else run.promoted_datasets()
    return [row for phase in training_phases(promoted, run.d_train(), curriculum=False) for row in phase]


def trained_model_name(name: str) -> str:
    """What a trainer elsewhere can load: a HF id stays as is; an embedded name becomes its converted folder."""
    return resolve_model(name) if name in EMBEDDED_MODELS else name


def vf_train_config(run, train_path: Path, model: str) -> dict[str, Any]:
    """vf-train's TOML (verifiers 0.1.9.post3 scripts/train.py): model, [env] id and args, [trainer.args] RLConfig."""
    student = run.config.final_student_config()
    steps = run.config.evaluation.steps or student.steps
    task = scoring_task(run.config).name
    return {
        "model": model,
        "env": {"id": STUDENT_ENV, "args": {"task": task, "source": "jsonl", "path": str(train_path)}},
        "trainer": {"args": {
            "run_name": f"sv-soar-{run.folder.name}",
            "output_dir": str(run.folder / "vf-train"),
            "max_steps": steps,
            "use_lora": student.finetune == "lora",  # student.finetune = "full": every weight trained
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


def prime_rl_config(run, rows_name: str, model: str) -> dict[str, Any]:
    """A prime-rl RL config (the layout of configs/hosted/student-hard-only-e1.toml) for the v1 student taskset
    (environments/sv_soar_student_v1), whose rows are the set `rows_name` packaged into that env: a hosted env
    server cannot read a path of this machine."""
    student = run.config.final_student_config()
    task = scoring_task(run.config).name
    max_tokens = student.max_new_tokens or get_task(task).answer_tokens
    return {
        "max_steps": run.config.evaluation.steps or student.steps,
        "model": {"name": model},
        "orchestrator": {
            "batch_size": student.batch_prompts * student.group_size,  # rollouts a step: 8 prompts × 32
            "train": {
                "sampling": {"max_completion_tokens": max_tokens, "temperature": student.temperature},
                "source": [{
                    # SOAR's RLOO group (32); prime-rl: reward − group mean. On the source: the one place both
                    # live prime-rl layouts accept it (docs/hosted.md)
                    "group_size": student.group_size,
                    "name": f"sv-soar-student-{task}",
                    "env": {
                        "taskset": {"id": f"sv-soar/{STUDENT_ENV_V1}", "svbench_task": task, "rows": rows_name},
                        "agent": {"harness": {"id": "null"}, "runtime": {"type": "subprocess"},
                                  "retries": {"max_retries": 2}},  # a rollout that failed is run again
                    },
                }],
            },
        },
        "trainer": {
            # no [trainer.model.lora] with student.finetune = "full": prime-rl then trains every weight
            **({"model": {"lora": {"rank": student.lora_rank, "alpha": student.lora_alpha,
                                   "dropout": student.lora_dropout,
                                   "target_modules": list(student.lora_target_modules)}}}
               if student.finetune == "lora" else {}),
            "optim": {"lr": student.learning_rate, "weight_decay": student.weight_decay,
                      "max_norm": student.max_grad_norm},
        },
        "ckpt": {},
        "inference": {},
    }


def rows_name(run) -> str:
    """The packaged set's name for a run folder: its name, lower-cased to what `sv-soar package-env` accepts."""
    name = re.sub(r"[^a-z0-9_.-]+", "-", run.folder.name.lower()).strip("-._") or "run"
    return f"{name}-final"[:64]


def _divisor_at_most(total: int, limit: int) -> int:
    """The largest divisor of `total` not above `limit` (RLConfig asserts batch_size % micro_batch_size == 0)."""
    return max(d for d in range(1, min(total, limit) + 1) if total % d == 0)


def _toml(values: dict[str, Any], path: str = "") -> str:
    """TOML of nested tables: scalars and plain lists first, then each sub-table ([a.b]) and each list of tables
    ([[a.b]], whose own sub-tables follow it) in order. An empty table is written as its header ([ckpt])."""
    def is_tables(value: Any) -> bool:
        return isinstance(value, list) and bool(value) and all(isinstance(v, dict) for v in value)

    lines = [f"{key} = {_value(value)}" for key, value in values.items()
             if not isinstance(value, dict) and not is_tables(value)]
    for key, value in values.items():
        name = f"{path}.{key}" if path else key
        if isinstance(value, dict):
            lines += ["", f"[{name}]", _toml(value, name).rstrip("\n")]
        elif is_tables(value):
            for table in value:
                lines += ["", f"[[{name}]]", _toml(table, name).rstrip("\n")]
    return "\n".join(line for line in lines if line is not None).strip("\n").replace("\n\n\n", "\n\n") + "\n"


def _value(value: Any) -> str:
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{k} = {_value(v)}" for k, v in value.items()) + " }"
    return _toml_value(value)


def export(run, out: Path, *, prime_rl: bool = False) -> dict[str, Path]:
    rows = training_rows(run)
    out.mkdir(parents=True, exist_ok=True)
    train_path = write_jsonl(out / TRAIN_FILE, rows).resolve()
    model = trained_model_name(run.config.student.model)
    method = run.config.run.method
    header = (f"# written by `sv-soar export-vf {run.folder}`: {len(rows)} rows "
              f"({'D_train alone' if method == 'hard-only' else 'PQ ∪ D_train'}, method {method}).\n"
              "# Not the project's objective: mean-centred advantages, no KL, asynchronous off-policy updates with\n"
              "# importance-ratio masking (sv_soar/export_vf.py). Score the adapter: sv-soar evaluate RUN_DIR --adapter DIR\n")
    student = run.config.final_student_config()
    dropped = [f'student.{key} = "{value}"' for key, value, default in (
        ("optimizer", student.optimizer, "adamw"), ("batching", student.batching, "shuffled")) if value != default]
    if dropped:  # the trainers there have neither option: say so where the user reads the config
        header += f"# NOT carried over (no such option there): {', '.join(dropped)}\n"
    if prime_rl:
        config_path = write_text_atomic(out / PRIME_RL_FILE, header + _toml(prime_rl_config(run, rows_name(run), model)))
    else:
        config_path = write_text_atomic(out / VF_TRAIN_FILE, header + _toml(vf_train_config(run, train_path, model)))
    return {"train": train_path, "config": config_path}
