"""pass@k against hand-computed values and brute force; sampling bookkeeping. (Greedy Acc, SOAR's R_kj, is the
grounded scorer's: tests/test_grounded.py.)"""

from __future__ import annotations

import itertools
import math
from fractions import Fraction

import numpy as np
import pytest

from sv_soar.evaluation import mean_pass_at_k, pass_at_k, sample_successes
from sv_soar.generation import Completion, SamplingParams
from sv_soar.tasks import Task


def brute_force_pass_at_k(n: int, c: int, k: int) -> float:
    """Fraction of the k-subsets of n samples (the first c correct) that hold a correct one."""
    subsets = list(itertools.combinations(range(n), k))
    return sum(any(i < c for i in subset) for subset in subsets) / len(subsets)


# --- pass_at_k ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "n, c, k, expected",
    [
        (1, 1, 1, 1.0),
        (1, 0, 1, 0.0),
        (2, 1, 1, 0.5),
        (10, 3, 1, 0.3),  # pass@1 is the success rate c/n
        (4, 1, 2, 0.5),  # 1 - C(3,2)/C(4,2) = 1 - 3/6
        (5, 2, 2, 0.7),  # 1 - C(3,2)/C(5,2) = 1 - 3/10
        (8, 2, 4, 1 - 15 / 70),  # 1 - C(6,4)/C(8,4)
        (32, 0, 32, 0.0),  # c = 0: never
        (32, 32, 1, 1.0),  # c = n: always
        (5, 4, 2, 1.0),  # k > n - c: every pair holds a correct sample
        (5, 3, 3, 1.0),  # k > n - c
        (5, 3, 2, 0.9),  # k = n - c: 1 - C(2,2)/C(5,2) = 1 - 1/10
    ],
)
def test_pass_at_k_by_hand(n, c, k, expected):
    assert pass_at_k(n, c, k) == pytest.approx(expected, abs=1e-12)


def test_pass_at_k_matches_brute_force():
    for n in range(1, 9):
        for c in range(n + 1):
            for k in range(1, n + 1):
                assert pass_at_k(n, c, k) == pytest.approx(brute_force_pass_at_k(n, c, k), abs=1e-12), (n, c, k)


def test_pass_at_k_matches_exact_binomials_at_paper_sizes():
    # n = 32 (final evaluation) and n = 128 (hard set), exact rational arithmetic as the reference
    for n in (32, 128):
        for c in (0, 1, 2, 5, n // 2, n - 1, n):
            for k in (1, 4, 8, 16, 32):
                exact = 1 - Fraction(math.comb(n - c, k), math.comb(n, k))
                assert pass_at_k(n, c, k) == pytest.approx(float(exact), abs=1e-12), (n, c, k)


def test_pass_at_k_is_stable_where_factorials_overflow():
    # C(10000, 5000) has ~3000 digits; the product form stays in floating point
    assert pass_at_k(10_000, 1, 5_000) == pytest.approx(0.5, abs=1e-12)
    assert pass_at_k(10_000, 0, 5_000) == 0.0
    assert 0.0 < pass_at_k(10_000, 1, 1) < 1e-3


@pytest.mark.parametrize("n, c, k", [(0, 0, 1), (4, 5, 1), (4, -1, 1), (4, 1, 0), (4, 1, 5)])
def test_pass_at_k_rejects_impossible_counts(n, c, k):
    with pytest.raises(ValueError):
        pass_at_k(n, c, k)


def test_mean_pass_at_k():
    matrix = [
        [True, False, False, False],  # c = 1
        [False, False, False, False],  # c = 0
        [True, True, True, True],  # c = 4
    ]
    assert mean_pass_at_k(matrix, 1) == pytest.approx((0.25 + 0 + 1) / 3)
    assert mean_pass_at_k(np.array(matrix), 2) == pytest.approx((0.5 + 0 + 1) / 3)
    assert mean_pass_at_k(matrix, 4) == pytest.approx(2 / 3)
    # rows may differ in length; n is taken per row
    assert mean_pass_at_k([[True, False], [False, False, False, True]], 2) == pytest.approx((1.0 + 0.5) / 2)
    with pytest.raises(ValueError, match="fewer than k"):
        mean_pass_at_k(matrix, 5)
    with pytest.raises(ValueError, match="no problems"):
        mean_pass_at_k([], 1)


# --- sampling bookkeeping -----------------------------------------------------------
#
# The tiny test model is random, so it cannot produce known successes; to check that outcomes land
# in the right cell of the matrix, chunking and seeding, these tests use a scripted engine that
# answers "ok" for sample j of a row exactly when the row's script says so. The real engine with the
# tiny model runs in test_sample_successes_with_the_tiny_model below.

TOY_TASK = Task(
    name="toy",
    system_prompt="Answer ok.",
    score=lambda text, row: {"reward": float(text == "ok")},
    is_success=lambda text, row: text == "ok",
    breakdown=lambda row: row["meta"]["group"],
    validate_row=lambda row: row,
)


class ScriptedEngine:
    """Returns, for each prompt, the row's scripted outcome for each sample index; records calls."""

    model_name = "scripted"

    def __init__(self, scripts: dict[str, list[bool]]):
        self.scripts = scripts  # question -> outcome of sample 0, 1, ...
        self.next_sample: dict[str, int] = {}
        self.calls: list[tuple[int, SamplingParams, object]] = []

    def generate(self, prompts, params, adapters=None):
        self.calls.append((len(prompts), params, adapters))
        out = []
        for prompt in prompts:
            question = prompt[-1]["content"]
            start = self.next_sample.get(question, 0)
            script = self.scripts[question]
            n = params.n
            texts = ["ok" if script[(start + j) % len(script)] else "no" for j in range(n)]
            self.next_sample[question] = start + n
            out.append([Completion(text=t, token_ids=[], prompt_token_ids=[], finish_reason="stop") for t in texts])
        return out


def toy_rows(scripts):
    return [{"question": q, "answer": "ok", "meta": {"group": "g"}} for q in scripts]


@pytest.mark.parametrize("batch_size", [1, 3, 5, 8, 64])
def test_sample_successes_places_outcomes_for_any_batch_size(batch_size):
    scripts = {
        "q0": [True, False, False, True, False],
        "q1": [False] * 5,
        "q2": [True] * 5,
        "q3": [False, False, False, False, True],
    }
    engine = ScriptedEngine(scripts)
    matrix = sample_successes(engine, TOY_TASK, toy_rows(scripts), 5, batch_size=batch_size, progress=False)
    assert matrix.dtype == bool and matrix.shape == (4, 5)
    np.testing.assert_array_equal(matrix, np.array(list(scripts.values())))
    for n_prompts, params, _ in engine.calls:
        assert n_prompts * params.n <= max(batch_size, params.n)
        assert params.temperature == 1.0 and params.stop_at_json_end
    assert sum(n * p.n for n, p, _ in engine.calls) == 4 * 5


def test_sample_successes_seeds_each_call_reproducibly():
    scripts = {f"q{i}": [False] * 4 for i in range(3)}
    seeds = []
    for _ in range(2):
        engine = ScriptedEngine(scripts)
        sample_successes(engine, TOY_TASK, toy_rows(scripts), 4, seed=7, batch_size=2, progress=False)
        seeds.append([p.seed for _, p, _ in engine.calls])
    assert seeds[0] == seeds[1]
    assert len(set(seeds[0])) == len(seeds[0])  # each call draws differently
    engine = ScriptedEngine(scripts)
    sample_successes(engine, TOY_TASK, toy_rows(scripts), 4, seed=None, batch_size=2, progress=False)
    assert all(p.seed is None for _, p, _ in engine.calls)


def test_sample_successes_with_the_tiny_model(tiny_model_dir):
    from sv_soar.engines.transformers_engine import TransformersEngine
    from sv_soar.tasks.e1 import E1_TASK

    rows = [
        {"question": f"Device unknown-device observed tcp {1000 + i}→23, duration ?, bytes ?, flags [S]. "
         "Decide: Malicious or Benign (you may Abstain if unsure).", "answer": "Malicious", "meta": {}}
        for i in range(3)
    ]
    engine = TransformersEngine(str(tiny_model_dir))
    first = sample_successes(engine, E1_TASK, rows, 4, seed=3, max_new_tokens=16, batch_size=8, progress=False)
    again = sample_successes(engine, E1_TASK, rows, 4, seed=3, max_new_tokens=16, batch_size=8, progress=False)
    assert first.shape == (3, 4) and first.dtype == bool
    np.testing.assert_array_equal(first, again)
