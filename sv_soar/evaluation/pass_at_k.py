"""pass@k, and K samples a problem to estimate it from. (Greedy Acc(student, Q_R), SOAR's grounded reward,
is the grounded scorer's: sv_soar.grounded.)

- `pass_at_k(n, c, k)`: the unbiased estimator of Chen et al. 2021 ("Evaluating Large Language
  Models Trained on Code", eq. 1 and its numerically stable form in Fig. 3):
  pass@k = 1 - C(n-c, k) / C(n, k) = 1 - prod_{i=n-c+1}^{n} (1 - k/i).
  SOAR reports pass@k, k in {1, 4, 8, 16, 32}, from 32 samples a problem (docs/design.md §4).
- `sample_successes`: K samples a problem at temperature 1.0 -> a (problems x K) success matrix, the
  input of both pass@k and fail@K hard-set mining (the paper: K = 128).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Any

import numpy as np

from sv_soar.generation import GenerationEngine, SamplingParams
from sv_soar.progress import progress_bar
from sv_soar.tasks import Row, Task


def pass_at_k(n: int, c: int, k: int) -> float:
    """Probability that at least one of k samples drawn without replacement from n is correct.

    n samples were drawn, c of them correct. Unbiased for the model's true pass@k (Chen et al. 2021).
    """
    if not (isinstance(n, (int, np.integer)) and isinstance(c, (int, np.integer)) and isinstance(k, (int, np.integer))):
        raise TypeError(f"pass_at_k takes integers, got n={n!r}, c={c!r}, k={k!r}")
    if n < 1:
        raise ValueError(f"pass_at_k: n={n} samples; need at least 1")
    if not 0 <= c <= n:
        raise ValueError(f"pass_at_k: c={c} correct out of n={n} samples; need 0 <= c <= n")
    if not 1 <= k <= n:
        raise ValueError(f"pass_at_k: k={k} with n={n} samples; need 1 <= k <= n")
    if n - c < k:  # every k-subset contains a correct sample
        return 1.0
    # 1 - C(n-c, k)/C(n, k) as a product, so no factorial overflows (Chen et al. 2021, Fig. 3)
    failures_only = 1.0
    for i in range(n - c + 1, n + 1):
        failures_only *= 1.0 - k / i
    return 1.0 - failures_only


def mean_pass_at_k(successes_per_problem: Sequence[Sequence[bool]] | np.ndarray, k: int) -> float:
    """Mean of pass@k over problems; row i holds the outcomes (True = solved) of problem i's samples.

    Rows may differ in length (n is taken per row); every row needs at least k samples.
    """
    values = []
    for i, outcomes in enumerate(successes_per_problem):
        outcomes = np.asarray(outcomes, dtype=bool)
        if outcomes.ndim != 1:
            raise ValueError(f"mean_pass_at_k: problem {i} is not a flat list of outcomes")
        if len(outcomes) < k:
            raise ValueError(f"mean_pass_at_k: problem {i} has {len(outcomes)} samples, fewer than k={k}")
        values.append(pass_at_k(len(outcomes), int(outcomes.sum()), k))
    if not values:
        raise ValueError("mean_pass_at_k: no problems")
    return float(np.mean(values))


def sample_successes(
    engine: GenerationEngine,
    task: Task,
    rows: Sequence[Row],
    samples: int,
    **kwargs: Any,
) -> np.ndarray:
    """Draw `samples` completions a row; return a bool matrix (rows x samples), True = solved.

    Keyword arguments are those of `sample_completions`.
    """
    texts = sample_completions(engine, task, rows, samples, **kwargs)
    matrix = np.zeros((len(rows), samples), dtype=bool)
    for i, (row, drawn) in enumerate(zip(rows, texts)):
        for j, text in enumerate(drawn):
            matrix[i, j] = bool(task.is_success(text, row))
    return matrix


def sample_completions(
    engine: GenerationEngine,
    task: Task,
    rows: Sequence[Row],
    samples: int,
    *,
    temperature: float = 1.0,
    seed: int | None = 0,
    max_new_tokens: int = 96,
    batch_size: int = 64,
    adapter: str | None = None,
    progress: bool = True,
) -> list[list[str]]:
    """Draw `samples` completion texts a row (rows x samples).

    Each engine call generates at most `batch_size` sequences: several rows with all their samples
    when samples <= batch_size, otherwise one row and a slice of its samples. Every call gets its own
    seed derived from (seed, first row, first sample), so a run is reproducible for a given seed and
    batch_size. Generation stops at the end of the first JSON object, as SV-Bench's parser reads it.
    """
    if samples < 1:
        raise ValueError(f"sample_completions: samples={samples}; need at least 1")
    if batch_size < 1:
        raise ValueError(f"sample_completions: batch_size={batch_size}; need at least 1")
    samples_per_call = min(samples, batch_size)
    rows_per_call = max(1, batch_size // samples_per_call)
    texts: list[list[str]] = [[] for _ in rows]
    with progress_bar(len(rows) * samples, f"sampling {samples}/problem", progress, unit="sample", leave=True) as bar:
        for row_start in range(0, len(rows), rows_per_call):
            chunk = rows[row_start : row_start + rows_per_call]
            prompts = [task.prompt(row) for row in chunk]
            for sample_start in range(0, samples, samples_per_call):
                n = min(samples_per_call, samples - sample_start)
                params = SamplingParams(
                    max_new_tokens=max_new_tokens,
                    temperature=temperature,
                    n=n,
                    seed=_call_seed(seed, row_start, sample_start),
                    stop_at_json_end=True,
                )
                completions = engine.generate(prompts, params, adapters=adapter)
                if len(completions) != len(chunk):
                    raise RuntimeError(f"engine returned {len(completions)} prompt results for {len(chunk)} prompts")
                for offset, drawn in enumerate(completions):
                    if len(drawn) != n:
                        raise RuntimeError(f"engine returned {len(drawn)} samples where n={n} were asked")
                    texts[row_start + offset].extend(completion.text for completion in drawn)
                bar.update(len(chunk) * n)
    return texts


def _call_seed(seed: int | None, row_start: int, sample_start: int) -> int | None:
    if seed is None:
        return None
    digest = hashlib.sha256(f"{seed}:{row_start}:{sample_start}".encode()).digest()
    return int.from_bytes(digest[:4], "little")
