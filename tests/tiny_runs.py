"""Tiny runs of the whole pipeline on the tiny model: a hard set split 6/6, an outer-loop config of two quick steps
that all promote (tests/test_soar_loop.py, tests/test_tracking.py), and a run folder ready for `sv-soar evaluate`
and `export-vf` (tests/test_final_evaluation.py, tests/test_export_vf.py, tests/test_hosted_v1.py)."""

from __future__ import annotations

from pathlib import Path

from sv_soar.config import parse_config
from sv_soar.jsonl import write_jsonl
from sv_soar.promotion import PromotionState
from sv_soar.run_dir import create_run
from sv_soar.tasks.e1.flows import generate_e1_flows


def split_hard_set(folder: Path) -> Path:
    """Twelve built-in E1 flows, the first six as D_train, the rest as D_test."""
    rows = generate_e1_flows(12, seed=5)
    write_jsonl(folder / "d_train.jsonl", rows[:6])
    write_jsonl(folder / "d_test.jsonl", rows[6:])
    return folder


def tiny_config(tiny_model_dir, tiny_teacher_dir, hard_set, **run):
    return parse_config({
        "run": {"outer_steps": 2, "seed": 0, **run},
        "data": {"hard_set": str(hard_set)},
        "teacher": {"model": str(tiny_teacher_dir), "g": 2, "n": 2, "max_new_tokens": 96, "temperature": 0.5,
                    "max_sampling_rounds": 3, "lora_rank": 4, "lora_alpha": 8, "warmup_steps": 0,
                    "learning_rate": 1e-3},
        "student": {"model": str(tiny_model_dir), "steps": 1, "steps_after_promotion": 1, "batch_prompts": 2,
                    "group_size": 2, "max_new_tokens": 8, "lora_rank": 2, "lora_alpha": 4,
                    "lora_target_modules": ["q_proj"]},
        "soar": {"students": 2, "q_r": 4, "tau": -1.0, "window": 1},
        "evaluation": {"steps": 1},
    })


def make_run(tmp_path, tiny_model_dir, promoted=None, evaluation=None, method=None, folder="run", **student):
    """A run folder under tmp_path/folder whose hard set is 4 + 4 E1 flows: SOAR with `promoted` as its one promoted
    dataset, else Hard-only (or `method`, promoting nothing)."""
    hard = tmp_path / "hardset"
    rows = generate_e1_flows(8, seed=3)
    write_jsonl(hard / "d_train.jsonl", rows[:4])
    write_jsonl(hard / "d_test.jsonl", rows[4:])
    config = parse_config({
        "run": {"method": method or ("soar" if promoted else "hard-only"), "seed": 0},
        "data": {"hard_set": str(hard)},
        "student": {"model": str(tiny_model_dir), "steps": 1, "batch_prompts": 2, "group_size": 2,
                    "max_new_tokens": 6, "lora_rank": 2, "lora_alpha": 4, "lora_target_modules": ["q_proj"],
                    **student},
        "soar": {"eval_batch_size": 16},
        "evaluation": {"seeds": [0, 1], "samples": 4, **(evaluation or {})},
    })
    run = create_run(tmp_path / folder, config)
    if promoted:
        write_jsonl(run.folder / "promoted" / "step-000001.jsonl", promoted)
        state = PromotionState(task="e1", model=str(tiny_model_dir), promoted_datasets=["promoted/step-000001.jsonl"],
                               promotions=1)
        (run.folder / "state.json").write_text(state.model_dump_json())
    return run
