"""KIND, the toy task of the grounded-scorer tests (tests/test_grounded.py and the fault, Ray, service, lockstep and
vLLM tests that reuse it): a row's answer is "digits" or "letters" and a one-token completion succeeds when it is
made of that kind of characters. The tiny model's greedy first token is neither for most prompts (a stray byte),
while ~40 % of its samples at temperature 1 are digits: a student can learn to answer digits in a few RLOO steps,
and to answer letters instead."""

from __future__ import annotations

import torch

from sv_soar.grounded import DatasetScore, GroundedScorer
from sv_soar.student.config import StudentTrainConfig
from sv_soar.tasks import Task

TIMING_FIELDS = {"tokens_per_s", "generation_tokens_per_s", "seconds_generation", "seconds_forward_backward",
                 "seconds_other"}


def is_kind(text: str, row: dict) -> bool:
    if row["answer"] == "boom":  # a verifier that crashes on one row (a KeyError deep in a rubric)
        raise KeyError("oracle has no entry for this row")
    text = text.strip()
    return bool(text) and (text.isdigit() if row["answer"] == "digits" else text.isalpha())


def kind_score(text: str, row: dict) -> dict[str, float]:
    if row["answer"] == "nan":  # a verifier bug as it happens: a mean over no findings
        return {"reward": float(torch.tensor([]).mean())}
    return {"reward": float(is_kind(text, row))}


KIND = Task("kind", "Answer with one word.", kind_score,
            lambda text, row: row["answer"] not in ("nan",) and is_kind(text, row),
            lambda row: "all", lambda row: row)


def kind_config(**overrides) -> StudentTrainConfig:
    """One-token completions make each student a bandit over its first token (as in test_student_trainer),
    so 8 steps at a high constant lr move the greedy answer reliably."""
    values = dict(steps=8, steps_after_promotion=9, batch_prompts=4, group_size=8, max_new_tokens=1,
                  learning_rate=3e-2, lr_schedule="constant", kl_coef=0.0, lora_rank=8, lora_alpha=16)
    values.update(overrides)
    return StudentTrainConfig(**values)


def hard_items(scorer: GroundedScorer, n: int = 12) -> list[dict]:
    """Questions whose answer is "digits" and that the bare model's greedy answer fails (SOAR's hard set)."""
    rows = [{"question": f"Item {i}: write the count.", "answer": "digits"} for i in range(40)]
    outputs = scorer.engine.generate([KIND.prompt(r) for r in rows], scorer.eval_params)
    hard = [row for row, out in zip(rows, outputs) if not is_kind(out[0].text, row)]
    assert len(hard) >= n, f"only {len(hard)} hard items"
    return hard[:n]


def flipped(rows: list[dict]) -> list[dict]:
    return [{**row, "answer": "letters" if row["answer"] == "digits" else "digits"} for row in rows]


def comparable(score: DatasetScore) -> dict:
    """Everything but wall-clock times."""
    result = score.to_dict()
    del result["seconds"], result["cached"]
    for student in result["students"]:
        del student["seconds_train"]
        student["log"] = [{k: v for k, v in e.items() if k not in TIMING_FIELDS} for e in student["log"]]
    return result
