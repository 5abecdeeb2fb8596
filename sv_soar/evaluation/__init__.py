"""Evaluation: pass@k (Chen et al. 2021), fail@K hard-set mining, the final evaluation and the report.

`pass_at_k` holds the estimators and K samples a problem (pass@k and the hard set; greedy Acc for SOAR's
reward is the grounded scorer's, sv_soar.grounded). `hardset` mines the fail@K hard set D and splits it into
D_train / D_test, from sampling or from saved results (`saved_results`); `cold_start_report` renders the
cold-start numbers as markdown and a PNG; `final` and `report` are `sv-soar evaluate` and `sv-soar report`.
"""

from sv_soar.evaluation.pass_at_k import mean_pass_at_k, pass_at_k, sample_successes

__all__ = ["mean_pass_at_k", "pass_at_k", "sample_successes"]
