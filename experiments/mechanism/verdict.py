"""The mechanism comparison's verdict, clause by clause against its protocol (README.md, "The comparison"). Written
and committed before any of the comparison's D_test numbers was read, so that the reading is fixed in advance:

    training side  every SOAR and Base-T run's first promotion at step >= 3 (true by construction: the window is 3);
                   SOAR's promoted questions differ from Base-T's (not the same set) in >= 2 of 3 seeds; SOAR's
                   stepping-stone share rises from the mean of outer steps 1-5 to the mean of steps 6-10, averaged
                   over seeds, and Base-T's does not (the cue-disagreeing share beside it). Reported, not part of
                   the goal; a clause without the data to read it (a seed, or the steps at one end) is "not
                   readable", never "no"
    primary        D_test J, SOAR - Base-T and SOAR - Hard-only (final students on their own sets, one a run;
                   paired bootstrap over seeds and pairs, `sv-soar report`'s); SOAR - compute-matched Hard-only
                   beside them
    guard          each method's accuracy on the twins (D_test) and on the cue-agreeing flows stays high: at most
                   GUARD_DROP below the untrained student's; SOAR's enters the goal, the others' are reported
    goal           both primary differences > 0 with 95 % CIs excluding 0, and SOAR's guard holds: the outcome is
                   positive, else negative with the parts of the goal that failed. The verdict refuses to read a
                   comparison with a method's seed or the untrained student's scores missing

    .venv/bin/python experiments/mechanism/verdict.py runs/mechanism-try10 [--out experiments/mechanism/comparison]

Writes verdict.md and verdict.json into --out; run-comparison.sh runs it after the report.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from sv_soar.evaluation.report_data import (
    RunData,
    base_metrics,
    load_run_data,
    paired_rows,
    part_accuracies,
    promoted_questions,
    summarise_methods,
)
from sv_soar.tasks.mechanism import cue_relation

EDGE = 5  # outer steps at each end of a run (1-5 against 6-10) for the stepping-stone trend
FIRST_PROMOTION = 3  # the paper's window: no promotion before the teacher has learned
SEEDS = (0, 1, 2)
DIFFERING_SEEDS = 2  # of 3
GUARD_DROP = 0.10  # "stays high": at most this far below the untrained student
GUARD_SET = "cue-agreeing"  # run-comparison.sh's --extra-eval experiments/mechanism/cue-agreeing.jsonl
SOAR, BASE_T, HARD, MATCHED = "soar (PQ only)", "base-t (PQ only)", "hard-only", "hard-only-matched"
PRIMARY = ((SOAR, BASE_T), (SOAR, HARD))
SHARES = ("stepping stones", "cue-disagreeing")
KINDS = {"neutral": "stepping stones", "disagree": "cue-disagreeing", "agree": "cue-agreeing"}  # by cue_relation


def clears_zero(difference: dict | None) -> bool:
    """The goal's test of one difference: a mean above 0 and a 95 % interval that excludes it."""
    return difference is not None and difference["mean"] > 0 and difference["low"] > 0


def first_promotion(data: RunData) -> int | None:
    """The 1-based outer step of the run's first promotion (None: it never promoted)."""
    return next((s["step"] + 1 for s in data.steps if s.get("promoted")), None)


def step_shares(data: RunData) -> dict[str, dict[int, float]]:
    """{kind: {0-based outer step: share}}, the shares of stepping stones and of cue-disagreeing flows among the
    teacher's valid problems, over the steps that scored datasets (a failed step has none)."""
    shares: dict[str, dict[int, float]] = {name: {} for name in SHARES}
    for step in data.steps:
        rows = [{"question": q, "answer": a} for dataset in step.get("datasets") or [] for q, a in dataset]
        if rows and step.get("stepping_stone_share") is not None:
            shares["stepping stones"][step["step"]] = step["stepping_stone_share"]
            shares["cue-disagreeing"][step["step"]] = sum(cue_relation(r) == "disagree" for r in rows) / len(rows)
    return shares


def trend(by_step: dict[int, float], outer_steps: int) -> dict[str, float] | None:
    """Mean over outer steps 1-EDGE against the last EDGE (None until both ends have a step)."""
    first = [v for t, v in by_step.items() if t < EDGE]
    last = [v for t, v in by_step.items() if t >= outer_steps - EDGE]
    if not first or not last:
        return None
    return {"first": float(np.mean(first)), "last": float(np.mean(last)),
            "change": float(np.mean(last) - np.mean(first)), "steps": [len(first), len(last)]}


def _mean_change(entries: list[dict], method: str, kind: str) -> float | None:
    """The change of one share, averaged over seeds; None unless every seed of SEEDS has it."""
    changes = [e[method][kind]["change"] for e in entries if method in e and e[method][kind]]
    return float(np.mean(changes)) if len(changes) == len(SEEDS) else None


def training_side(runs: list[RunData]) -> dict:
    """The protocol's training-side clauses: each True, False or None (not readable yet: a seed or a step missing)."""
    by_seed: dict[int, dict[str, RunData]] = {}
    for data in runs:
        if data.method in ("soar", "base-t"):
            by_seed.setdefault(data.run.config.run.seed, {})[data.method] = data
    seeds = {}
    for seed, pair in sorted(by_seed.items()):
        entry: dict = {}
        for method, data in pair.items():
            outer = getattr(data.run.config.run, "outer_steps", 2 * EDGE)
            entry[method] = {"first_promotion": first_promotion(data),
                             **{kind: trend(v, outer) for kind, v in step_shares(data).items()}}
        if len(pair) == 2:
            soar, base = promoted_questions(pair["soar"]), promoted_questions(pair["base-t"])
            entry["promoted_differ"] = soar != base  # not the same set: one question of difference is enough
            entry["soar_not_base_t"] = len(soar - base)
        seeds[seed] = entry
    entries = list(seeds.values())
    promotions = [e[m]["first_promotion"] for e in entries for m in ("soar", "base-t") if m in e]
    mean_change = {m: {kind: _mean_change(entries, m, kind) for kind in SHARES} for m in ("soar", "base-t")}
    paired = [e for e in entries if "promoted_differ" in e]
    differing = sum(e["promoted_differ"] for e in paired)
    soar_rise, base_rise = mean_change["soar"]["stepping stones"], mean_change["base-t"]["stepping stones"]
    clauses = {  # first promotion >= 3 holds by construction (the promotion window is 3 steps): it checks the code
        f"first promotion at step >= {FIRST_PROMOTION}": all(p is None or p >= FIRST_PROMOTION for p in promotions),
        f"promoted questions differ in >= {DIFFERING_SEEDS} of {len(SEEDS)} seeds":
            True if differing >= DIFFERING_SEEDS else None if len(paired) < len(SEEDS) else False,
        "SOAR's stepping-stone share rises": None if soar_rise is None else soar_rise > 0,
        "Base-T's stepping-stone share does not rise": None if base_rise is None else base_rise <= 0,
    }
    return {"seeds": seeds, "clauses": clauses, "mean_change": mean_change, "differing_seeds": differing}


def primary(runs: list[RunData]) -> dict:
    rows = {row["pair"]: row for row in paired_rows(runs, metrics=()) if row["metric"] == "J"}
    differences = {f"{a} − {b}": rows.get(f"{a} − {b}") for a, b in (*PRIMARY, (SOAR, MATCHED))}
    return {"differences": differences, "goal": all(clears_zero(differences[f"{a} − {b}"]) for a, b in PRIMARY)}


def guard(runs: list[RunData]) -> dict:
    """Each method's pass@1 on D_test's twins and on the cue-agreeing flows against the untrained student's."""
    base_test, base_guard = base_metrics(runs) or {}, base_metrics(runs, GUARD_SET) or {}
    reference = {"twins": part_accuracies(base_test).get("pass@1 twins"),
                 GUARD_SET: (base_guard.get("pass_at_k") or {}).get("1", (base_guard.get("pass_at_k") or {}).get(1))}
    methods = {}
    for set_name, column in (("d_test", "pass@1 twins"), (GUARD_SET, "pass@1")):
        part = "twins" if set_name == "d_test" else GUARD_SET
        for summary in summarise_methods(runs, set_name):
            value = summary.metrics.get(column)
            if value is not None and "loop student" not in summary.method:
                methods.setdefault(summary.method, {})[part] = value
    holds = {method: all(part in parts and reference[part] is not None
                         and parts[part]["mean"] >= reference[part] - GUARD_DROP for part in reference)
             for method, parts in methods.items()}
    return {"base": reference, "methods": methods, "holds": holds}


def _ranks(values: np.ndarray) -> np.ndarray:
    """Ranks from 0, ties given their mean rank (for Spearman's rho)."""
    order = np.argsort(values, kind="stable")
    ranks = np.empty(len(values))
    ranks[order] = np.arange(len(values))
    _, inverse = np.unique(values, return_inverse=True)
    return (np.bincount(inverse, ranks) / np.bincount(inverse))[inverse]


def spearman(x: np.ndarray, y: np.ndarray) -> float:
    rx, ry = _ranks(x), _ranks(y)
    if rx.std() == 0 or ry.std() == 0:
        return float("nan")
    return float(np.corrcoef(rx, ry)[0, 1])


def dataset_points(runs: list[RunData]) -> list[dict]:
    """Every dataset the SOAR and Base-T runs' teachers wrote: its R_k, its advantage in its step (R_k less the
    step's mean, what a teacher update's RLOO advantage is proportional to), its count of each kind of problem, and
    its shares of stepping stones and of cue-disagreeing flows (the two kinds that break the cue, G3 and try 9)."""
    points = []
    for data in runs:
        if data.method not in ("soar", "base-t"):
            continue
        for step in data.steps:
            scored = [(d, r) for d, r in zip(step.get("datasets") or [], step.get("R_k") or []) if d and r is not None]
            for dataset, r_k in scored:
                relations = [cue_relation({"question": q, "answer": a}) for q, a in dataset]
                counts = {kind: relations.count(relation) for relation, kind in KINDS.items()}
                points.append({"run": data.name, "method": data.method, "step": step["step"] + 1, "R_k": r_k,
                               "advantage": r_k - float(np.mean([r for _, r in scored])), "counts": counts,
                               **{kind: counts[kind] / len(relations) for kind in SHARES}})
    return points


def _advantages(points: list[dict], rng: np.random.Generator, resamples: int) -> dict:
    """{method: {kind: mean advantage its problems of that kind got, with a bootstrap interval over datasets}}."""
    table: dict = {}
    for method in ("soar", "base-t"):
        mine = [p for p in points if p["method"] == method]
        if not mine:
            continue
        advantage = np.array([p["advantage"] for p in mine])
        for kind in KINDS.values():
            counts = np.array([p["counts"][kind] for p in mine], dtype=float)
            if counts.sum() == 0:
                continue
            draws = rng.integers(0, len(mine), size=(resamples, len(mine)))
            boot = [(advantage[i] * counts[i]).sum() / counts[i].sum() for i in draws if counts[i].sum() > 0]
            low, high = np.quantile(boot, [0.025, 0.975])
            table.setdefault(method, {})[kind] = {"mean": float((advantage * counts).sum() / counts.sum()),
                                                  "low": float(low), "high": float(high), "problems": int(counts.sum())}
    return table


def reward_diagnosis(runs: list[RunData], resamples: int = 2000) -> dict:
    """Post hoc, training side only (added after seed 0's training side was read, before any D_test number): does
    the grounded reward favour the datasets that teach, and which problems does the teacher's update push toward?
    Spearman's rho between a dataset's R_k and its share of stepping stones, of cue-disagreeing flows, and of both,
    over every dataset of the SOAR and Base-T runs, with a bootstrap interval over datasets; the mean advantage
    each kind of problem got in its step; and what one more problem of a kind adds to its dataset's R_k within its
    step, against the noise in R_k (`marginal_values`, added after seeds 0-1's training side was read). A reward
    that tracks them and a teacher whose share does not rise put the break on the teacher's side; a reward that does
    not, on the grounding's."""
    points = dataset_points(runs)
    if len(points) < 3:
        return {"datasets": len(points), "rho": {}, "advantage": {}}
    r_k = np.array([p["R_k"] for p in points])
    shares = {name: np.array([p[name] for p in points]) for name in SHARES}
    shares["both"] = shares["stepping stones"] + shares["cue-disagreeing"]
    rng = np.random.default_rng(0)
    draws = rng.integers(0, len(points), size=(resamples, len(points)))
    rho = {}
    for name, share in shares.items():
        boot = np.array([spearman(share[i], r_k[i]) for i in draws])
        boot = boot[~np.isnan(boot)]
        low, high = (np.quantile(boot, [0.025, 0.975]) if len(boot) else (float("nan"), float("nan")))
        rho[name] = {"rho": spearman(share, r_k), "low": float(low), "high": float(high)}
    return {"datasets": len(points), "rho": rho, "advantage": _advantages(points, rng, resamples),
            "marginal": {method: marginal_values([p for p in points if method in ("both", p["method"])], rng, resamples)
                         for method in ("both", "soar", "base-t")},
            "points": points}


def marginal_values(points: list[dict], rng: np.random.Generator, resamples: int) -> dict | None:
    """What one more problem of a kind adds to a dataset's R_k within its step, the signal a teacher's update reads:
    least squares of each dataset's advantage (R_k less its step's mean) on its counts of stepping stones and of
    cue-disagreeing flows (each less its step's mean; cue-agreeing flows are the rest), with a bootstrap interval
    over steps (a step's datasets share their Q_R draw and baseline), and the residual standard deviation: the
    noise a dataset's R_k carries whatever it holds. Only steps whose datasets are all the same size enter (in
    another, one more stepping stone may also be one more problem); a resample whose counts cannot tell the kinds
    apart is left out of the interval and counted. None with too few steps or counts that never vary."""
    steps: dict[tuple[str, int], list[dict]] = {}
    for point in points:
        steps.setdefault((point["run"], point["step"]), []).append(point)
    even = [step for step in steps.values() if len({sum(p["counts"].values()) for p in step}) == 1]
    kept = [point for step in even for point in step]  # step by step: a step's rows are consecutive
    ends = np.cumsum([len(step) for step in even])
    groups = [np.arange(end - len(step), end) for step, end in zip(even, ends)]
    counts = np.array([[p["counts"][kind] for kind in SHARES] for p in kept], dtype=float).reshape(-1, len(SHARES))
    r_k = np.array([p["R_k"] for p in kept])
    for members in groups:
        counts[members] -= counts[members].mean(axis=0)
        r_k[members] -= r_k[members].mean()
    if len(groups) < 3 or np.linalg.matrix_rank(counts) < len(SHARES):
        return None

    def fit(rows: np.ndarray) -> np.ndarray:
        if np.linalg.matrix_rank(counts[rows]) < len(SHARES):  # lstsq would give an unidentified kind 0
            return np.full(len(SHARES), np.nan)
        return np.linalg.lstsq(counts[rows], r_k[rows], rcond=None)[0]

    coefficients = fit(np.arange(len(kept)))
    boot = np.array([fit(np.concatenate([groups[g] for g in rng.integers(0, len(groups), len(groups))]))
                     for _ in range(resamples)])
    identified = boot[~np.isnan(boot).any(axis=1)]
    residual = r_k - counts @ coefficients
    dof = max(1, len(kept) - len(groups) - len(SHARES))  # a mean taken out per step, a coefficient per kind
    return {"datasets": len(kept), "steps": len(groups), "steps_left_out": len(steps) - len(even),
            "resamples_left_out": int(len(boot) - len(identified)),
            "residual_sd": float(np.sqrt((residual ** 2).sum() / dof)),
            **{kind: {"mean": float(coefficients[k]),
                      "low": float(np.quantile(identified[:, k], 0.025)) if len(identified) else float("nan"),
                      "high": float(np.quantile(identified[:, k], 0.975)) if len(identified) else float("nan")}
               for k, kind in enumerate(SHARES)}}


def plot_diagnosis(points: list[dict], path: Path) -> Path:
    """R_k of each dataset against its share of problems that break the cue, by method."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg  # heavy: matplotlib
    from matplotlib.figure import Figure  # heavy: matplotlib

    fig = Figure(figsize=(6.5, 4.2), dpi=120)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    jitter = np.random.default_rng(0)
    for method, colour in (("soar", "tab:blue"), ("base-t", "tab:orange")):
        mine = [p for p in points if p["method"] == method]
        x = [p["stepping stones"] + p["cue-disagreeing"] + jitter.uniform(-0.01, 0.01) for p in mine]
        ax.scatter(x, [p["R_k"] for p in mine], s=14, alpha=0.6, color=colour, label=method)
    ax.axhline(0, color="grey", lw=0.8)
    ax.set_xlabel("dataset's share of stepping stones + cue-disagreeing flows")
    ax.set_ylabel("R_k (D_train's Q_R pairs)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, format="png")
    return path


def missing_data(runs: list[RunData]) -> list[str]:
    """What the verdict cannot be read without: every method's final student in every seed (one student a run, as
    run-comparison.sh evaluates them), and the untrained student's scores on D_test and on the guard's set."""
    problems = []
    have = {}
    for data in runs:
        for label, evaluation in data.evaluations():
            if "loop student" in label:
                continue
            if len(evaluation["seeds"]) != 1:
                problems.append(f"{data.name}: {len(evaluation['seeds'])} final students (the comparison has one)")
            have.setdefault(label, set()).add(data.run.config.run.seed)
    for label in (SOAR, BASE_T, HARD, MATCHED):
        lacking = sorted(set(SEEDS) - have.get(label, set()))
        if lacking:
            problems.append(f"{label}: no final student for seed(s) {', '.join(map(str, lacking))}")
    for set_name in ("d_test", GUARD_SET):
        if base_metrics(runs, set_name) is None:
            problems.append(f"no untrained-student scores on {set_name} (run-comparison.sh scores them with "
                            "base-t seed 0's evaluation)")
    return problems


def verdict(runs: list[RunData]) -> dict:
    """The outcome, as the protocol's goal reads it: both primary differences clear 0 and SOAR's guard holds (the
    other methods' guards and the training side are reported, and do not enter it)."""
    training, main, kept = training_side(runs), primary(runs), guard(runs)
    j = {s.method: s.metrics.get("pair_accuracy") for s in summarise_methods(runs) if "loop student" not in s.method}
    failed = [f"primary: {a} − {b}" + ("" if main["differences"][f"{a} − {b}"] is not None else " (missing)")
              for a, b in PRIMARY if not clears_zero(main["differences"][f"{a} − {b}"])]
    failed += [] if kept["holds"].get(SOAR, False) else ["guard: SOAR"]
    return {"outcome": "negative" if failed else "positive", "failed": failed, "J": j,
            "base_J": (base_metrics(runs) or {}).get("pair_accuracy"),
            "training_side": training, "primary": main, "guard": kept, "diagnosis": reward_diagnosis(runs)}


def _interval(value: dict | None) -> str:
    return "—" if value is None else f"{value['mean']:+.3f} [{value['low']:+.3f}, {value['high']:+.3f}]"


def _trend(value: dict | None) -> str:
    return "—" if value is None else f"{value['first']:.3f} → {value['last']:.3f}"


def render(result: dict) -> str:
    """verdict.md: the outcome, then the primary, the guard, the training side and the diagnosis. A training-only
    result (--training-only: no outcome, primary or guard) gets the last two."""
    if "outcome" not in result:
        return "\n".join(["# The mechanism comparison so far: training side only", "",
                          "No evaluation file was opened (`verdict.py --training-only`).", "",
                          *_training_lines(result["training_side"]), *_diagnosis_lines(result["diagnosis"])]) + "\n"
    outcome = result["outcome"].upper() + ("" if not result["failed"] else f" (failed: {'; '.join(result['failed'])})")
    clauses = result["training_side"]["clauses"]
    unmet = [name for name, ok in clauses.items() if ok is not True]
    training = (f"Training side: {len(clauses) - len(unmet)} of {len(clauses)} clauses met"
                + (f" (not met: {'; '.join(unmet)})." if unmet else "."))
    return "\n".join(["# The mechanism comparison: verdict against its protocol", "",
                      f"**Outcome: {outcome}.** {training} Clauses fixed before D_test was read (`verdict.py`'s "
                      "docstring); the outcome is the goal's alone.", "",
                      *_primary_lines(result), *_guard_lines(result["guard"]),
                      *_training_lines(result["training_side"]), *_diagnosis_lines(result["diagnosis"])]) + "\n"


def _primary_lines(result: dict) -> list[str]:
    lines = ["## Primary: D_test J, paired differences (95 % CI over seeds and pairs)", "",
             "| difference | J | per seed | > 0, CI excluding 0 |", "|---|---:|---|---|"]
    for pair, d in result["primary"]["differences"].items():
        per_seed = "—" if d is None else ", ".join(f"{s}: {v:+.3f}" for s, v in sorted(d["per_seed"].items()))
        ok = "missing" if d is None else ("yes" if clears_zero(d) else "no")
        lines.append(f"| {pair} | {_interval(d)} | {per_seed} | {ok} |")
    base_j = result["base_J"]
    untrained = f"; the untrained student {base_j:+.3f}" if base_j is not None else ""
    return lines + ["", "J of each method's final students: "
                    + ", ".join(f"{m} {_interval(v)}" for m, v in result["J"].items()) + untrained, ""]


def _guard_lines(kept: dict) -> list[str]:
    base = kept["base"]
    lines = [f"## Guard: accuracy on the twins and on the cue-agreeing flows (≥ the untrained student's − {GUARD_DROP})",
             "", f"| method | twins | {GUARD_SET} | holds |", "|---|---:|---:|---|",
             "| untrained student | " + " | ".join("—" if base[p] is None else f"{base[p]:.3f}" for p in base) + " | |"]
    for method, parts in kept["methods"].items():
        cells = " | ".join("—" if parts.get(p) is None else
                           f"{parts[p]['mean']:.3f} [{parts[p]['low']:.3f}, {parts[p]['high']:.3f}]" for p in base)
        lines.append(f"| {method} | {cells} | {'yes' if kept['holds'][method] else 'no'} |")
    return lines + [""]


def _training_lines(training: dict) -> list[str]:
    met = {True: "yes", False: "no", None: "not readable yet (a seed or the steps at one end missing)"}
    change = training["mean_change"]
    lines = ["## Training side", "", "| clause | met |", "|---|---|",
             *(f"| {name} | {met[ok]} |" for name, ok in training["clauses"].items()), "",
             f"Change from outer steps 1-{EDGE} to the last {EDGE}, mean over seeds {', '.join(map(str, SEEDS))} "
             "(— until every seed has both ends): "
             + "; ".join(f"{m}: " + ", ".join(f"{kind} {'—' if c is None else f'{c:+.3f}'}" for kind, c in kinds.items())
                         for m, kinds in change.items()) + ". A first promotion before step "
             f"{FIRST_PROMOTION} cannot happen (the promotion window is {FIRST_PROMOTION} steps): that clause checks the "
             "code. Promoted questions differ when the two sets are not the same.",
             "", "| seed | method | first promotion | stepping stones | cue-disagreeing | promoted questions not the "
             "other's |", "|---:|---|---:|---|---|---:|"]
    for seed, entry in training["seeds"].items():
        for method in ("soar", "base-t"):
            if method in entry:
                e = entry[method]
                other = entry.get("soar_not_base_t", "—") if method == "soar" else ""
                lines.append(f"| {seed} | {method} | {e['first_promotion'] or 'never'} | {_trend(e['stepping stones'])}"
                             f" | {_trend(e['cue-disagreeing'])} | {other} |")
    return lines + [""]


def _rho(value: dict) -> str:
    if np.isnan(value["rho"]):
        return "— (no variation: the shares or R_k constant)"
    return f"{value['rho']:+.2f} [{value['low']:+.2f}, {value['high']:+.2f}]"


def _diagnosis_lines(diagnosis: dict) -> list[str]:
    if not diagnosis["rho"]:
        return []
    return ["## Diagnosis (post hoc, training side): does the grounded reward favour the datasets that teach?", "",
            f"Spearman's rho between a dataset's R_k and its share of each kind of problem, over the "
            f"{diagnosis['datasets']} datasets of the SOAR and Base-T runs (95 % bootstrap interval over datasets; "
            "`reward_diagnosis`, added after seed 0's training side was read; not a clause of the protocol).", "",
            "| share of | rho |", "|---|---:|",
            *(f"| {name} | {_rho(v)} |" for name, v in diagnosis["rho"].items()),
            "", "![R_k against the teaching share](diagnosis.png)", "",
            "The mean advantage each kind of problem got in its step (its dataset's R_k less the step's mean: what "
            "a teacher update's RLOO advantage is proportional to; SOAR's teacher is updated with it, Base-T's "
            "would have been; 95 % bootstrap interval over datasets):", "",
            "| method | " + " | ".join(KINDS.values()) + " |", "|---|" + "---:|" * len(KINDS),
            *(f"| {method} | " + " | ".join(
                "—" if kinds.get(k) is None else
                f"{kinds[k]['mean']:+.3f} [{kinds[k]['low']:+.3f}, {kinds[k]['high']:+.3f}] ({kinds[k]['problems']})"
                for k in KINDS.values()) + " |" for method, kinds in diagnosis["advantage"].items()), "",
            *_marginal_lines(diagnosis.get("marginal") or {})]


def _marginal_lines(marginal: dict) -> list[str]:
    rows = [(method, value) for method, value in marginal.items() if value is not None]
    if not rows:
        return []
    return ["What one more problem of each kind adds to a dataset's R_k within its step (least squares of the "
            "advantage on the step-centred counts; 95 % bootstrap interval over steps; `marginal_values`), and the "
            "residual standard deviation: the noise in a dataset's R_k that its problems do not explain.", "",
            "| datasets of | one more stepping stone | one more cue-disagreeing flow | residual sd | datasets (steps) |",
            "|---|---:|---:|---:|---:|",
            *(f"| {method} | {_interval(v['stepping stones'])} | {_interval(v['cue-disagreeing'])} | "
              f"{v['residual_sd']:.3f} | {v['datasets']} ({v['steps']}) |" for method, v in rows), "",
            *[f"Left out for {method}: {v['steps_left_out']} step(s) whose datasets differ in size, "
              f"{v['resamples_left_out']} resample(s) whose counts could not tell the kinds apart." for method, v in rows
              if v["steps_left_out"] or v["resamples_left_out"]], ""]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out", type=Path, help="the comparison's run folders' parent (run-comparison.sh's OUT)")
    parser.add_argument("--out", dest="report", type=Path, default=Path(__file__).parent / "comparison")
    parser.add_argument("--training-only", action="store_true",
                        help="the training side and the diagnosis so far, opening no evaluation file (blind to D_test)")
    args = parser.parse_args(argv)
    if not args.out.is_dir():
        print(f"verdict.py: {args.out}: no such folder (run-comparison.sh's OUT)", file=sys.stderr)
        return 2
    folders = sorted(p for p in args.out.iterdir() if (p / "config.toml").is_file())
    runs = [load_run_data(folder, evaluations=not args.training_only) for folder in folders]
    missing = [data.name for data in runs if data.final is None] + ([] if args.training_only else missing_data(runs))
    if missing and not args.training_only:
        print(f"verdict.py: not yet readable: {'; '.join(missing)} (the verdict waits for every run; "
              "--training-only reads the training side so far)", file=sys.stderr)
        return 2
    result = (verdict(runs) if not args.training_only else
              {"training_side": training_side(runs), "diagnosis": reward_diagnosis(runs)})
    args.report.mkdir(parents=True, exist_ok=True)
    (args.report / "verdict.json").write_text(json.dumps(result, indent=2, default=str) + "\n")
    (args.report / "verdict.md").write_text(render(result))
    if result["diagnosis"]["rho"]:
        plot_diagnosis(result["diagnosis"]["points"], args.report / "diagnosis.png")
    print(render(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
