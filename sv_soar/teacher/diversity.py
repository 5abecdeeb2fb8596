"""How varied a set of questions is: the diversity collapse SOAR's paper watches for in teachers
trained on intrinsic rewards (arXiv 2601.18778; the seed write-up (docs/design.md §1), "Grounded vs. Intrinsic").

Two standard measures, over word tokens (lower-cased; a number such as 3.107256 is one token,
punctuation and the → arrow are tokens of their own):
- distinct-n (Li et al. 2016, "A Diversity-Promoting Objective for Neural Conversation Models"):
  distinct n-grams / all n-grams, pooled over the whole set. 1.0 = no n-gram repeats; for E1,
  whose questions share a fixed template, values are low even for real data, so compare a teacher
  dataset with SV-Bench's rows, not with 1.0.
- mean pairwise Jaccard distance: 1 - |A∩B| / |A∪B| of the token-3-gram sets of two questions,
  averaged over all pairs, or over `max_pairs` pairs drawn uniformly (seeded) when the set has more
  pairs than that; 0.0 = all questions identical.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

_TOKEN = re.compile(r"\d+(?:\.\d+)?|\w+|[^\w\s]")
DEFAULT_MAX_PAIRS = 10_000  # ~1% standard error on the mean distance; ~0.1 s


def tokens(text: str) -> list[str]:
    return _TOKEN.findall(text.lower())


def ngrams(toks: Sequence[str], n: int) -> list[tuple[str, ...]]:
    return [tuple(toks[i : i + n]) for i in range(len(toks) - n + 1)]


def distinct_n(questions: Sequence[str], n: int) -> float:
    """Distinct token n-grams over all token n-grams of the set (0.0 when there are none)."""
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    total, distinct = 0, set()
    for q in questions:
        grams = ngrams(tokens(q), n)
        total += len(grams)
        distinct.update(grams)
    return len(distinct) / total if total else 0.0


def mean_pairwise_jaccard_distance(
    questions: Sequence[str], *, n: int = 3, max_pairs: int = DEFAULT_MAX_PAIRS, seed: int = 0
) -> tuple[float, int, bool]:
    """(mean distance, pairs used, exact): every pair when there are at most `max_pairs`, else a
    seeded uniform sample of `max_pairs` pairs of distinct items. Fewer than 2 questions: (0.0, 0, True)."""
    count = len(questions)
    if count < 2:
        return 0.0, 0, True
    sets = [frozenset(ngrams(tokens(q), n)) for q in questions]
    all_pairs = count * (count - 1) // 2
    if all_pairs <= max_pairs:
        left, right = np.triu_indices(count, k=1)
        exact = True
    else:
        rng = np.random.default_rng(seed)
        left = rng.integers(count, size=max_pairs)
        right = rng.integers(count - 1, size=max_pairs)
        right = right + (right >= left)  # uniform over the other items
        exact = False
    total = 0.0
    for i, j in zip(left.tolist(), right.tolist()):
        a, b = sets[i], sets[j]
        union = len(a | b)
        total += 1.0 - (len(a & b) / union if union else 1.0)
    return total / len(left), len(left), exact


@dataclass(frozen=True)
class QuestionDiversity:
    n_questions: int
    distinct_2: float
    distinct_3: float
    mean_pairwise_jaccard_distance: float
    pairs: int  # pairs behind the mean distance
    pairs_exact: bool  # True: all pairs; False: a sample

    def as_metrics(self, prefix: str = "diversity/") -> dict[str, float]:
        return {
            f"{prefix}distinct_2": self.distinct_2,
            f"{prefix}distinct_3": self.distinct_3,
            f"{prefix}pairwise_jaccard_distance": self.mean_pairwise_jaccard_distance,
        }


def question_diversity(
    questions: Sequence[str], *, max_pairs: int = DEFAULT_MAX_PAIRS, seed: int = 0
) -> QuestionDiversity:
    """distinct-2, distinct-3 and the mean pairwise token-3-gram Jaccard distance of `questions`."""
    distance, pairs, exact = mean_pairwise_jaccard_distance(questions, max_pairs=max_pairs, seed=seed)
    return QuestionDiversity(
        n_questions=len(questions),
        distinct_2=distinct_n(questions, 2),
        distinct_3=distinct_n(questions, 3),
        mean_pairwise_jaccard_distance=distance,
        pairs=pairs,
        pairs_exact=exact,
    )
