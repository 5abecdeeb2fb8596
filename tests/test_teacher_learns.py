"""A teacher that learns (issue 14, B): k outer steps of SOAR with a reward for one recognisable kind of problem
raise the teacher's probability of writing that kind; Base-T samples the same way, never updates, and does not move.

Everything is real but the students: the tiny Llama, warm-started (sv_soar/format_warm_start.py) to write toy
"pets" problems — a pet's name, then a tag: "cat 417" — the real outer loop (`train`: rejection sampling, RLOO
over datasets, the LoRA update, the drift log) and a task registered the way docs/tasks.md says. The kind is
the problem's label, decided by the reply's first token, so the update has one decision to move; an E1 problem
spreads its label over a whole JSON reply, which the tiny model cannot keep valid under updates (measured: its
valid rate fell as the rewarded share rose). The students are stood in by LabelScorer (R_k = the share of X_k's
problems with the rewarded label − ½): a grounded reward needs students that learn, which the tiny model cannot
show in a test's time.

Measured while writing this test (quiet machine, ~8 s a 15-step run): the rewarded label's share in the 128-
rollout probe went 0.30 → 1.00 for run seeds 0, 1 and 2; with the teacher's learning rate at 1e-7 (an update
that changes nothing) it stayed 0.30, which fails the SOAR assertion below.
"""

from __future__ import annotations

import random

import pytest

from sv_soar.config import parse_config
from sv_soar.jsonl import read_jsonl, write_jsonl
from sv_soar.soar_loop import train
from sv_soar.teacher_policy import Teacher
from sv_soar.tasks import Task, register_task, unregister_task
from sv_soar.teacher.checks import RejectReason, Rejection, TeacherProblem
from sv_soar.teacher.contamination import HardSetIndex, question_hash

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("one_thread")]

PETS = ("cat", "dog")
STEPS = 15


def teacher_prompt(**options):
    return [{"role": "user", "content": "Name a pet and a tag."}]


def parse_problem(text, *, limits=None, hard_set_index=None, options=None):
    """"<pet> <tag...>" becomes the question about that tagged pet, labelled with the pet."""
    words = text.split() if isinstance(text, str) else []
    if len(words) < 2 or words[0] not in PETS:
        return Rejection(RejectReason.SCHEMA, "the reply does not start with a pet and a tag")
    question = f"Is the {words[0]} tagged {' '.join(words[1:])} a pet?"
    return TeacherProblem(question=question, answer=words[0], hash=question_hash(question), task="pets")


PETS_TASK = Task(
    name="pets",
    system_prompt="Answer cat or dog.",
    score=lambda text, row: {"reward": float(row["answer"] in text)},
    is_success=lambda text, row: row["answer"] in text,
    breakdown=lambda row: row["answer"],
    validate_row=lambda value: value,
    answer_tokens=4,
    teacher_prompt=teacher_prompt,
    parse_problem=parse_problem,
)


class LabelScorer:
    """Stands in for the students (the one thing not real here): R_k = the share of X_k's problems whose
    answer is `label` minus one half."""

    def __init__(self, label: str) -> None:
        self.label = label

    def score(self, datasets, q_r, baseline, *, seed, promoted, keep_adapters):
        from sv_soar.grounded import DatasetScore, StudentResult

        scores = []
        for dataset in datasets:
            share = sum(row["answer"] == self.label for row in dataset) / len(dataset)
            student = StudentResult(seed=seed, accuracy=share, reward=share - 0.5, failure=None, seconds_train=0.0,
                                    log=[])
            scores.append(DatasetScore(reward=share - 0.5, baseline_accuracy=0.5, students=[student], error=None,
                                       cached=False, key="", seconds={}))
        return scores


@pytest.fixture(scope="module")
def pets_teacher(tiny_model_dir, tmp_path_factory):
    """The pets task registered for this module, and the tiny model warm-started on 64 random replies."""
    from sv_soar.format_warm_start import Recipe, warm_start
    from sv_soar.models import load_model

    register_task(PETS_TASK)
    try:
        rng = random.Random(0)
        replies = [(teacher_prompt(), f"{rng.choice(PETS)} {rng.randrange(1000)}") for _ in range(64)]
        model, tokenizer = load_model(str(tiny_model_dir))
        _, merged = warm_start(model, tokenizer, replies, Recipe("e1", "teacher", steps=200, learning_rate=1e-2,
                                                                  examples=64, lora_rank=4))
        out = tmp_path_factory.mktemp("pets-teacher")
        merged.save_pretrained(str(out))
        tokenizer.save_pretrained(str(out))
        yield out
    finally:
        unregister_task(PETS_TASK.name)


def pets_config(teacher_dir, hard_set, method: str, **teacher):
    return parse_config({
        "run": {"outer_steps": STEPS, "seed": 0, "method": method},
        "data": {"task": "pets", "hard_set": str(hard_set)},
        "teacher": {"model": str(teacher_dir), "g": 4, "n": 4, "max_new_tokens": 16, "temperature": 1.0,
                    "max_sampling_rounds": 2, "lora_rank": 4, "lora_alpha": 8, "warmup_steps": 0,
                    "learning_rate": 1e-2, **teacher},
        "student": {"model": str(teacher_dir)},
        "soar": {"students": 1, "q_r": 2, "tau": 10.0, "window": 1},  # τ = 10: never promote
    })


def label_share(teacher: Teacher, label: str) -> float:
    """The teacher's probability of writing a valid problem of `label`, from 128 rollouts (a fixed seed)."""
    sample = teacher.sample("pets", HardSetIndex([]), 99)
    assert len(sample.rows) >= 8, "the probe needs enough valid problems to measure a share"
    return sum(row["answer"] == label for row in sample.rows) / len(sample.rows)


@pytest.mark.parametrize("method", ["soar", "base-t"])
def test_the_teacher_learns_to_write_the_rewarded_kind_of_problem(pets_teacher, tmp_path, monkeypatch, method):
    import sv_soar.backends

    hard_set = tmp_path / "hs"
    rows = [{"question": f"Is the cat tagged {i} a pet?", "answer": "cat", "meta": {}} for i in range(8)]
    write_jsonl(hard_set / "d_train.jsonl", rows[:4])
    write_jsonl(hard_set / "d_test.jsonl", rows[4:])
    config = pets_config(pets_teacher, hard_set, method)
    probe = pets_config(pets_teacher, hard_set, method, n=32, max_sampling_rounds=1)  # 128 rollouts
    before = {label: label_share(Teacher(probe), label) for label in PETS}
    rewarded = min(before, key=before.get)  # the kind the untrained teacher writes less often
    monkeypatch.setattr(sv_soar.backends, "make_scorer", lambda *a, **k: LabelScorer(rewarded))
    run = train(config, tmp_path / method, progress=False)

    after_teacher = Teacher(probe)
    after_teacher.load(run.folder / "teacher" / f"step-{STEPS:06d}")
    after = label_share(after_teacher, rewarded)
    entries = read_jsonl(run.folder / "steps.jsonl")
    if method == "soar":
        assert after >= before[rewarded] + 0.3, (before, after)
        assert any(e["teacher_update"]["changed_share"] > 0 for e in entries)  # drift logged, and non-zero
        assert all({"changed_share", "kl_after"} <= set(e["teacher_update"]) for e in entries)
    else:
        assert after == before[rewarded]
        assert all(e["teacher_update"] == {} for e in entries)
