"""Question-diversity metrics of a (teacher-generated or real) dataset."""

from __future__ import annotations

import pytest

from sv_soar.jsonl import read_jsonl
from sv_soar.teacher.diversity import (
    distinct_n,
    mean_pairwise_jaccard_distance,
    question_diversity,
    tokens,
)


def test_tokens_keep_numbers_and_arrow():
    assert tokens("TCP 43750→23, duration 3.107256") == [
        "tcp", "43750", "→", "23", ",", "duration", "3.107256"
    ]


def test_distinct_n_by_hand():
    assert distinct_n(["a b c d"], 2) == 1.0  # ab bc cd, all distinct
    assert distinct_n(["a b c", "a b c"], 2) == 0.5  # 4 bigrams, 2 distinct
    assert distinct_n(["a b c", "a b d"], 3) == 1.0
    assert distinct_n(["a", ""], 2) == 0.0  # no bigrams at all
    assert distinct_n([], 3) == 0.0
    with pytest.raises(ValueError):
        distinct_n(["a"], 0)


def test_pairwise_distance_by_hand():
    assert mean_pairwise_jaccard_distance(["a b c d"] * 5) == (0.0, 10, True)
    dist, pairs, exact = mean_pairwise_jaccard_distance(["a b c", "x y z", "p q r"])
    assert (dist, pairs, exact) == (1.0, 3, True)
    # "a b c d" vs "a b c e": trigrams {abc, bcd} vs {abc, bce}: Jaccard 1/3, distance 2/3
    assert mean_pairwise_jaccard_distance(["a b c d", "a b c e"])[0] == pytest.approx(2 / 3)
    assert mean_pairwise_jaccard_distance(["only one"]) == (0.0, 0, True)
    assert mean_pairwise_jaccard_distance([]) == (0.0, 0, True)


def test_sampled_distance_is_close_to_exact_and_seeded():
    questions = [f"tcp {i}→{i % 7} flags {'S' * (i % 3)} bytes {i % 11}" for i in range(300)]
    exact, pairs, is_exact = mean_pairwise_jaccard_distance(questions, max_pairs=10**6)
    assert is_exact and pairs == 300 * 299 // 2
    sampled, used, is_exact = mean_pairwise_jaccard_distance(questions, max_pairs=5000, seed=1)
    assert not is_exact and used == 5000
    assert sampled == pytest.approx(exact, abs=0.02)
    assert mean_pairwise_jaccard_distance(questions, max_pairs=5000, seed=1)[0] == sampled


def test_real_data_is_more_diverse_than_a_collapsed_teacher(svbench_mini):
    real = [r["question"] for r in read_jsonl(svbench_mini / "e1.jsonl")]
    collapsed = [real[0].replace("→", f"{i}→", 1) for i in range(len(real))]  # one flow, new ports
    d_real, d_collapsed = question_diversity(real), question_diversity(collapsed)
    assert d_real.n_questions == 100 and d_real.pairs_exact
    for name in ("distinct_2", "distinct_3", "mean_pairwise_jaccard_distance"):
        assert getattr(d_real, name) > getattr(d_collapsed, name), name
    metrics = d_real.as_metrics()
    assert set(metrics) == {"diversity/distinct_2", "diversity/distinct_3",
                            "diversity/pairwise_jaccard_distance"}
    assert all(0.0 <= v <= 1.0 for v in metrics.values())
