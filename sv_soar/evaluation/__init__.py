"""Evaluation: pass@k (Chen et al. 2021), greedy accuracy, and fail@K hard-set mining.

`pass_at_k` holds the estimators and the two ways the project scores a model on a problem set
(greedy accuracy for SOAR's reward, docs/design.md §4; K samples a problem for pass@k and the hard set).
`hardset` mines the fail@K hard set D and splits it into D_train / D_test (`sv-soar hardset`);
`cold_start_report` renders the cold-start numbers as markdown and a PNG.
"""

from sv_soar.evaluation.pass_at_k import (
    greedy_accuracy,
    greedy_successes,
    mean_pass_at_k,
    pass_at_k,
    sample_successes,
)

__all__ = ["greedy_accuracy", "greedy_successes", "mean_pass_at_k", "pass_at_k", "sample_successes"]
