"""What a report reads from run folders, and the statistics over them: each run's config, steps and final
evaluation (`load_run_data`), the methods pooled over their runs with bootstrap intervals (`summarise_methods`),
and the paired, seed-matched differences between methods (`paired_rows`). `sv-soar report` (sv_soar.evaluation.report)
writes them as markdown and plots.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from math import comb
from pathlib import Path
from typing import Any

import numpy as np

from sv_soar.evaluation.final import (BOOTSTRAP_RESAMPLES, LOOP_STUDENT_FILE, bootstrap_interval, final_training_set,
                                     read_evaluation)
from sv_soar.jsonl import read_jsonl
from sv_soar.run_dir import Run, open_run

OTHER_METRICS = ("pair_accuracy", "escape_rate", "ece", "abstain_rate")  # pair_accuracy: J, tasks with twin pairs
METHOD_ORDER = ("soar", "base-t", "intrinsic-t", "hard-only", "hard-only-matched")


@dataclass
class RunData:
    run: Run
    steps: list[dict[str, Any]]
    final: dict[str, Any] | None
    loop_student: dict[str, Any] | None = None  # evaluation/loop-student.json: the last promoted baseline, scored

    def evaluations(self) -> list[tuple[str, dict[str, Any]]]:
        """(row label, evaluation report) of each evaluation the run has: its final students, its loop student."""
        found = [] if self.final is None else [(method_label(self), self.final)]
        if self.loop_student is not None:
            found.append((f"{self.method} (loop student)", self.loop_student))  # not trained on PQ: no variant
        return found

    @property
    def name(self) -> str:
        return self.run.folder.name

    @property
    def method(self) -> str:
        return self.run.config.run.method


@dataclass
class MethodSummary:
    """Final-evaluation metrics of one method, pooled over the final students of all its runs."""

    method: str
    runs: int
    students: int
    metrics: dict[str, dict[str, float]] = field(default_factory=dict)  # name -> mean, low, high


def load_run_data(folder: Path, *, evaluations: bool = True) -> RunData:
    """A run's config, step log and (`evaluations`) its final and loop-student evaluations. Without `evaluations`
    the evaluation files are not opened: a report on the training side only, blind to D_test."""
    run = open_run(folder)
    steps_path = run.folder / "steps.jsonl"
    steps = read_jsonl(steps_path) if steps_path.is_file() else []
    if not evaluations:
        return RunData(run, steps, None)
    evaluation = run.folder / "evaluation"
    return RunData(run, steps, read_evaluation(evaluation / "final.json", f"sv-soar evaluate {folder}"),
                   read_evaluation(evaluation / LOOP_STUDENT_FILE, f"sv-soar evaluate {folder} --loop-student"))


def summarise_methods(runs: list[RunData], set_name: str = "d_test") -> list[MethodSummary]:
    """Pool the per-student metrics of each method's evaluated runs and bootstrap over students (a run's loop
    student is a row of its own)."""
    by_method: dict[str, list[dict[str, Any]]] = {}
    for data in runs:
        for label, evaluation in data.evaluations():
            by_method.setdefault(label, []).append(evaluation)
    summaries = []
    for method in sorted(by_method, key=method_rank):
        columns: dict[str, list[float]] = {}
        students = 0
        for evaluation in by_method[method]:
            for seed in evaluation["seeds"]:
                metrics = seed["sets"].get(set_name)
                if metrics is None:
                    continue
                students += 1
                for k, value in metrics["pass_at_k"].items():
                    columns.setdefault(f"pass@{k}", []).append(value)
                for name in OTHER_METRICS:
                    if metrics.get(name) is not None:
                        columns.setdefault(name, []).append(metrics[name])
                for name, value in part_accuracies(metrics).items():
                    columns.setdefault(name, []).append(value)
        summary = MethodSummary(method, len(by_method[method]), students)
        for name, values in columns.items():
            low, high = bootstrap_interval(values)
            summary.metrics[name] = {"mean": float(np.mean(values)), "low": low, "high": high, "n": len(values)}
        summaries.append(summary)
    return summaries


def promoted_questions(data: RunData) -> set[str]:
    """The questions the run promoted (its final students' training set under train_on = "pq"), as a set."""
    return {row["question"] for dataset in data.run.promoted_datasets() for row in dataset}


def label_accuracies(metrics: dict[str, Any]) -> dict[str, float]:
    """{"pass@1 <label>": the mean success rate over the set's problems of that label} of one student on one
    set (E1: Benign, Malicious); empty when the set's labels were not recorded."""
    labels, successes, samples = metrics.get("labels") or [], metrics.get("successes") or [], metrics.get("samples")
    if not labels or len(labels) != len(successes) or not samples:
        return {}
    rates: dict[str, list[float]] = {}
    for label, count in zip(labels, successes):
        rates.setdefault(label, []).append(count / samples)
    return {f"pass@1 {label}": float(np.mean(values)) for label, values in sorted(rates.items())}


def part_accuracies(metrics: dict[str, Any]) -> dict[str, float]:
    """{"pass@1 <part>": success rate}: on each label's problems (`label_accuracies`) and, for tasks with twin pairs,
    on the twins ("pass@1 twins"; the mechanism task's guard: a student that learns the rule keeps them right)."""
    parts = label_accuracies(metrics)
    twins, samples = metrics.get("twin_successes") or [], metrics.get("samples")
    if twins and samples:
        parts["pass@1 twins"] = float(np.mean(twins)) / samples
    return parts


def evaluated_sets(runs: list[RunData]) -> list[str]:
    """The problem sets the runs' final students were scored on: d_test first, then the extra sets by name."""
    names = {name for data in runs for _, evaluation in data.evaluations() for seed in evaluation["seeds"]
             for name in seed["sets"]}
    return ["d_test"] * ("d_test" in names) + sorted(names - {"d_test"})


def _per_problem(successes: np.ndarray, samples: int, metric: str) -> np.ndarray:
    """A metric for each problem from its success count c of n samples: the unbiased pass@k
    1 − C(n−c, k)/C(n, k) (Chen et al. 2021), or escape (c > 0)."""
    if metric == "escape_rate":
        return (successes > 0).astype(float)
    k = int(metric.removeprefix("pass@"))
    return np.array([1.0 - comb(samples - c, k) / comb(samples, k) for c in successes.tolist()])


def paired_difference(a: dict[int, list[int]], b: dict[int, list[int]], *, samples: int, metric: str,
                      resamples: int = BOOTSTRAP_RESAMPLES, level: float = 0.95, seed: int = 0) -> dict[str, Any]:
    """A − B on `metric`, paired by seed and by problem: {seed: [successes of each D_test problem]} each.

    A method's seeds differ in the teacher, the promoted questions and the final student, so the seed
    is the unit that repeats the experiment; D_test's problems are a sample of the task. The bootstrap
    resamples both together (seeds, then problems, the same indices for A and B), so a difference that
    holds on a few problems only, or in one seed only, gets a wide interval."""
    return paired_values_difference({s: _per_problem(np.asarray(v), samples, metric) for s, v in a.items()},
                                    {s: _per_problem(np.asarray(v), samples, metric) for s, v in b.items()},
                                    resamples=resamples, level=level, seed=seed)


def paired_values_difference(a: dict[int, np.ndarray], b: dict[int, np.ndarray], *,
                             resamples: int = BOOTSTRAP_RESAMPLES, level: float = 0.95, seed: int = 0) -> dict[str, Any]:
    """A − B of per-problem values {seed: [value of each problem]}, bootstrapped over seeds and problems together
    (`paired_difference`; J's per-pair values come from `pair_values_by_seed`)."""
    seeds = sorted(set(a) & set(b))
    if not seeds:
        raise ValueError("paired_difference: the two methods share no seed")
    diffs = np.stack([np.asarray(a[s], dtype=float) - np.asarray(b[s], dtype=float) for s in seeds])  # [seeds, problems]
    rng = np.random.default_rng(seed)
    seed_index = rng.integers(0, len(seeds), size=(resamples, len(seeds)))
    problem_index = rng.integers(0, diffs.shape[1], size=(resamples, diffs.shape[1]))
    means = np.array([diffs[seed_index[i]][:, problem_index[i]].mean() for i in range(resamples)])
    alpha = (1.0 - level) / 2
    return {"mean": float(diffs.mean()), "low": float(np.quantile(means, alpha)),
            "high": float(np.quantile(means, 1.0 - alpha)), "seeds": len(seeds), "problems": int(diffs.shape[1]),
            "per_seed": {s: float(d.mean()) for s, d in zip(seeds, diffs)}}


def method_label(data: RunData) -> str:
    """The method, with a compute-matched Hard-only told apart from the plain one, and final students trained on the
    promoted questions alone ("(PQ only)") from those trained on them mixed with D_train (Hard-only: D_train either
    way, `final_training_set`)."""
    if data.method == "hard-only" and data.run.config.evaluation.compute_matched_to is not None:
        return "hard-only-matched"
    if final_training_set(data.run.config) == "pq":
        return f"{data.method} (PQ only)"
    return data.method


def successes_by_seed(runs: list[RunData], label: str, set_name: str = "d_test") -> tuple[dict[int, list[int]], int]:
    """{run seed: success counts of each problem} of one method's runs (their first final student each; for a
    "<method> (loop student)" label, their loop students)."""
    table, samples = {}, 0
    for data in runs:
        for evaluation_label, evaluation in data.evaluations():
            if evaluation_label != label or not evaluation["seeds"]:
                continue
            metrics = evaluation["seeds"][0]["sets"].get(set_name)
            if metrics and metrics.get("successes"):
                table[data.run.config.run.seed] = metrics["successes"]
                samples = metrics["samples"]
    return table, samples


def pair_values_by_seed(runs: list[RunData], label: str) -> dict[int, np.ndarray]:
    """{run seed: J of each D_test pair, pass@1(x) + pass@1(x') − 1} of one method's runs, for tasks with twin pairs."""
    table = {}
    for data in runs:
        for evaluation_label, evaluation in data.evaluations():
            if evaluation_label != label or not evaluation["seeds"]:
                continue
            metrics = evaluation["seeds"][0]["sets"].get("d_test") or {}
            if metrics.get("twin_successes"):
                n = metrics["samples"]
                table[data.run.config.run.seed] = (np.asarray(metrics["successes"]) / n
                                                   + np.asarray(metrics["twin_successes"]) / n - 1)
    return table


PAIRED = (("soar", "base-t"), ("soar", "hard-only"), ("soar", "hard-only-matched"), ("base-t", "hard-only"))
# the pairs by row label: SOAR's and Base-T's final students against the same kind (both mixed with D_train, or both
# "(PQ only)") and against Hard-only (D_train either way), then the loop students
PAIRED_LABELS = tuple((left + variant, right + variant if right in ("soar", "base-t") else right)
                      for variant in ("", " (PQ only)") for left, right in PAIRED
                      ) + (("soar (loop student)", "base-t (loop student)"),)


def paired_rows(runs: list[RunData], metrics: tuple[str, ...] = ("escape_rate", "pass@1", "pass@8", "pass@32")
                ) -> list[dict[str, Any]]:
    rows = []
    for left, right in PAIRED_LABELS:
        a, samples = successes_by_seed(runs, left)
        b, _ = successes_by_seed(runs, right)
        if not (set(a) & set(b)):
            continue
        pairs_a, pairs_b = pair_values_by_seed(runs, left), pair_values_by_seed(runs, right)
        if set(pairs_a) & set(pairs_b):  # twin pairs: J first, the primary metric (docs/design.md §7)
            rows.append({"pair": f"{left} − {right}", "metric": "J", **paired_values_difference(pairs_a, pairs_b)})
        for metric in metrics:
            if metric.startswith("pass@") and int(metric[5:]) > samples:
                continue
            rows.append({"pair": f"{left} − {right}", "metric": metric,
                         **paired_difference(a, b, samples=samples, metric=metric)})
    return rows


def base_metrics(runs: list[RunData], set_name: str = "d_test") -> dict[str, Any] | None:
    """The untrained student's metrics on the set (the same for every run on the same hard set)."""
    for data in runs:
        for _, evaluation in data.evaluations():
            if evaluation.get("base", {}).get(set_name):
                return evaluation["base"][set_name]
    return None



def method_rank(method: str) -> tuple[int, str]:
    """METHOD_ORDER first (a variant such as "soar (loop student)" right after its method), then by name."""
    plain = method.split(" (")[0]
    return (METHOD_ORDER.index(plain) if plain in METHOD_ORDER else len(METHOD_ORDER), method)
