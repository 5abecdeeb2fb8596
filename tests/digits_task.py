"""DIGITS, the toy task of the student-trainer tests (tests/test_student_trainer.py, and the lockstep and
full-fine-tuning tests that reuse it): a completion's reward is its fraction of digits. E1 rewards are all zero
for a random tiny model (it never writes a JSON label), which leaves the policy gradient at zero; a random tiny
model writes ~40 % digits, and a student can learn to write more. BROKEN is a verifier that returns NaN."""

from __future__ import annotations

import torch

from sv_soar.student.config import StudentTrainConfig
from sv_soar.tasks import Task

TIMING_FIELDS = {"tokens_per_s", "generation_tokens_per_s", "seconds_generation", "seconds_forward_backward",
                 "seconds_other"}


def digit_fraction(text: str, row: dict) -> dict[str, float]:
    return {"reward": sum(ch.isdigit() for ch in text) / len(text) if text else 0.0}


DIGITS = Task(
    name="digits",
    system_prompt="Answer with digits only.",
    score=digit_fraction,
    is_success=lambda text, row: digit_fraction(text, row)["reward"] >= 0.5,
    breakdown=lambda row: "all",
    validate_row=lambda row: row,
)
DIGIT_ROWS = [{"question": f"Count to {i}."} for i in range(8)]


def broken_score(text: str, row: dict) -> dict[str, float]:
    """A verifier bug as it happens: a mean over an empty list of findings (numpy-style 0/0 = NaN)."""
    findings: list[float] = []
    return {"reward": float(torch.tensor(findings).mean())}


BROKEN = Task("broken", "Answer.", broken_score, lambda t, r: False, lambda r: "all", lambda r: r)


def toy_config(**overrides) -> StudentTrainConfig:
    values = dict(steps=2, batch_prompts=2, group_size=4, max_new_tokens=6, learning_rate=1e-2, kl_coef=0.01,
                  lora_rank=4, lora_alpha=8, micro_batch_size=16)
    values.update(overrides)
    return StudentTrainConfig(**values)


def quiet(entry):  # keep pytest output short; the printed line is checked in one test
    pass
