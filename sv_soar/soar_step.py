"""One SOAR outer step, in the paper's words (arXiv 2601.18778 §3; docs/design.md §4).

The teacher wrote g·n valid problems; they are cut into g datasets X_1..X_g of n (`partition`). For each
X_k, r students start from the current baseline student and train on X_k; Q_R is q_r hard-set questions
drawn afresh each step (`draw_q_r`). With Acc the accuracy on Q_R:

    R_kj  = Acc(student_kj, Q_R) − Acc(baseline, Q_R)     student j's grounded improvement
    R_k   = mean_j R_kj                                    the teacher's reward for X_k
    R̂_t   = mean_k R_k                                     the step's reward; promote when its moving
                                                           average over `window` steps exceeds τ
    A_k   = R_k − mean_{k'≠k} R_k'                         the teacher's RLOO advantage (rloo_teacher_advantages)

Promotion (sv_soar.promotion.promote): the median student of argmax_k R_k becomes the baseline and X_k
joins the promoted questions. The scorer that trains students and measures R_kj is
sv_soar.grounded.GroundedScorer (or a backend of sv_soar.backends.make_scorer).

Two drivers call `soar_step`: `sv-soar train` (sv_soar.soar_loop: rejection sampling of the teacher
before, the teacher's RLOO update after) and the verifiers teacher env's group reward
(sv_soar_teacher.grounded_rubric: the floor for invalid rollouts and the metrics after).
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Sequence

from sv_soar.tasks import Row


def partition(valid: Sequence[int], g: int, n: int) -> list[list[int]]:
    """The first min(V, g·n) valid rollout indices, cut into min(g, V) contiguous datasets whose sizes
    differ by at most one (the module docstring says why)."""
    used = list(valid[: g * n])
    count = min(g, len(used))
    if count == 0:
        return []
    size, extra = divmod(len(used), count)
    parts, start = [], 0
    for k in range(count):
        end = start + size + (1 if k < extra else 0)
        parts.append(used[start:end])
        start = end
    return parts


def step_seed(seed: int, step: int) -> int:
    """Seed of outer step `step` (Q_R's draw and the students), from (seed, step) only."""
    digest = hashlib.sha256(f"sv-soar-teacher-step:{seed}:{step}".encode()).digest()
    return int.from_bytes(digest[:4], "little") & 0x7FFFFFFF


def draw_q_r(d_train: Sequence[Row], q_r: int, seed: int) -> list[Row]:
    """Q_R: q_r questions of D_train without replacement (all of it when smaller), drawn afresh each step,
    stratified by label when the rows' answers are labels (E1): the labels share Q_R as evenly as D_train
    allows. A fail@K hard set of a binary task is mostly one class; drawn plainly, Q_R is too, and
    R_k = ΔAcc then rewards datasets that flip the student's label prior, not ones that teach it."""
    rows = list(d_train)
    rng = random.Random(seed)
    size = min(q_r, len(rows))
    by_label: dict[str, list[Row]] = {}
    for row in rows:
        answer = row.get("answer") if isinstance(row, dict) else None
        if not isinstance(answer, str):
            return rng.sample(rows, size)  # not a labelled task (E2's answers are findings): a plain draw
        by_label.setdefault(answer, []).append(row)
    for members in by_label.values():
        rng.shuffle(members)
    labels = sorted(by_label)
    taken = {label: 0 for label in labels}
    while sum(taken.values()) < size:  # round robin over the labels that have rows left
        for label in labels:
            if taken[label] < len(by_label[label]) and sum(taken.values()) < size:
                taken[label] += 1
    chosen = [row for label in labels for row in by_label[label][:taken[label]]]
    rng.shuffle(chosen)
    return chosen


def class_balance(rows: Sequence[Row]) -> dict[str, int]:
    """Rows a label (E1); empty for tasks whose answers are not labels."""
    counts: dict[str, int] = {}
    for row in rows:
        answer = row.get("answer") if isinstance(row, dict) else None
        if not isinstance(answer, str):
            return {}
        counts[answer] = counts.get(answer, 0) + 1
    return dict(sorted(counts.items()))


def rloo_teacher_advantages(rewards: Sequence[float | None]) -> list[float]:
    """A_k = R_k − mean_{j≠k} R_j over the g datasets of one step (SOAR's teacher RLOO, docs/design.md §4).

    A dataset whose students all failed (R_k None: an error, out of memory, a time limit) says nothing
    about the teacher's problems, so it is left out: advantage 0, and it is no one's baseline. A floor
    of −1 in its place would be the strongest signal of the step (typical R_k are ±0.05) and teach the
    teacher to avoid whatever it wrote when a machine failed."""
    finished = [r for r in rewards if r is not None]
    g = len(finished)
    if g < 2:
        return [0.0] * len(rewards)
    total = sum(finished)
    return [0.0 if r is None else r - (total - r) / (g - 1) for r in rewards]


def learnability(successes: Sequence[Sequence[bool]]) -> float:
    """The Intrinsic-T reward of a dataset: mean over problems of (0 if s̄ = 0 else 1 − s̄)."""
    values = []
    for outcomes in successes:
        s_bar = sum(outcomes) / len(outcomes)
        values.append(0.0 if s_bar == 0 else 1.0 - s_bar)
    return sum(values) / len(values) if values else 0.0
