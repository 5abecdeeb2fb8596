"""The report's plots (`sv-soar report`, sv_soar.evaluation.report): pass@k per method, R̂_t per run, the
teacher's drift, valid rate and diversity. They take the report's RunData / MethodSummary (duck-typed here, so
that this module does not import the report that imports it). Matplotlib's Agg canvas directly: no pyplot
state, no display."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from sv_soar.evaluation.final import PASS_KS
from sv_soar.jsonl import atomic_path


def _figure(width: float, height: float):
    # Figure + Agg canvas directly: no pyplot global state, no display needed.
    from matplotlib.backends.backend_agg import FigureCanvasAgg  # heavy: matplotlib
    from matplotlib.figure import Figure  # heavy: matplotlib

    fig = Figure(figsize=(width, height), dpi=120)
    FigureCanvasAgg(fig)
    return fig


def _save(fig, path: Path, integer_x: bool = False) -> Path:
    if integer_x:  # outer steps
        from matplotlib.ticker import MaxNLocator  # heavy: matplotlib

        for ax in fig.axes:
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
    return path


def plot_pass_at_k(summaries: list[Any], base: dict[str, Any] | None, path: Path) -> Path:
    fig = _figure(6.5, 4.2)
    ax = fig.add_subplot(1, 1, 1)
    for summary in summaries:
        ks = [k for k in PASS_KS if f"pass@{k}" in summary.metrics]
        values = [summary.metrics[f"pass@{k}"] for k in ks]
        line, = ax.plot(ks, [v["mean"] for v in values], marker="o", label=f"{summary.method} ({summary.students} students)")
        ax.fill_between(ks, [v["low"] for v in values], [v["high"] for v in values], color=line.get_color(), alpha=0.15)
    if base is not None:
        ks = sorted(int(k) for k in base["pass_at_k"])
        ax.plot(ks, [base["pass_at_k"][str(k)] for k in ks], linestyle="--",
                color="grey", marker=".", label="base (untrained)")
    ax.set_xscale("log", base=2)
    ticks = sorted({k for s in summaries for k in PASS_KS if f"pass@{k}" in s.metrics})
    if ticks:
        ax.set_xticks(ticks, labels=[str(k) for k in ticks])
    ax.set_xlabel("k")
    ax.set_ylabel("pass@k on D_test")
    ax.set_title("Final evaluation: pass@k (band: 95% bootstrap over students)")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize="small")
    return _save(fig, path)


def plot_reward(runs: list[Any], path: Path) -> Path:
    looped = [data for data in runs if data.steps]
    fig = _figure(7.0, 2.4 * len(looped) + 0.6)
    for index, data in enumerate(looped):
        ax = fig.add_subplot(len(looped), 1, index + 1)
        steps = [s["step"] + 1 for s in data.steps]
        r_hat = [s.get("R_hat") if s.get("R_hat") is not None else np.nan for s in data.steps]
        average = [s.get("moving_average") if s.get("moving_average") is not None else np.nan for s in data.steps]
        ax.plot(steps, r_hat, marker="o", linestyle="", label="R̂_t = mean_k R_k")
        ax.plot(steps, average, label=f"moving average (window {data.run.config.soar.window})")
        ax.axhline(data.run.config.soar.tau, color="grey", linestyle=":", label=f"τ = {data.run.config.soar.tau}")
        promoted = [s["step"] + 1 for s in data.steps if s.get("promoted")]
        for i, step in enumerate(promoted):
            ax.axvline(step, color="tab:green", alpha=0.6, label="promotion" if i == 0 else None)
        ax.set_title(f"{data.name} ({data.method})", fontsize="medium")
        ax.set_ylabel("R")
        ax.grid(True, alpha=0.3)
        if index == 0:
            ax.legend(fontsize="x-small", loc="best")
    fig.axes[-1].set_xlabel("outer step")
    return _save(fig, path, integer_x=True)


def plot_drift(runs: list[Any], path: Path) -> Path:
    """Per step: the share of the teacher's rollouts its update changed (same seed), and KL(π‖π_init)."""
    def update(key: str):
        return lambda step: (step.get("teacher_update") or {}).get(key, np.nan)

    return _step_panels(runs, path, [("rollouts changed by the update (same seed)", update("changed_share"), True),
                                     ("KL(π‖π_init) per token after the update", update("kl_after"), False)])


def plot_teacher(runs: list[Any], path: Path) -> Path:
    return _step_panels(runs, path, [
        ("valid problems / rollouts drawn", lambda step: step.get("valid_rate", np.nan), True),
        ("question diversity (pairwise Jaccard distance)",
         lambda step: step.get("diversity", {}).get("pairwise_jaccard_distance", np.nan), False)])


def plot_mechanism(runs: list[Any], path: Path) -> Path:
    """Tasks with twin pairs and stepping stones (the mechanism task): per step, the baseline student's J on Q_R's
    hard pairs (Acc is J there) and the share of stepping stones among the teacher's valid problems."""
    return _step_panels(runs, path, [
        ("baseline student's J on Q_R's pairs", lambda step: step.get("baseline_accuracy", np.nan), False),
        ("stepping stones / valid teacher problems", lambda step: step.get("stepping_stone_share", np.nan), True)])


def _step_panels(runs: list[Any], path: Path, panels: list[tuple[str, Any, bool]]) -> Path:
    """Side-by-side panels of one per-step value each, a line a run: (title, value of a step log entry, whether
    the value is a share in [0, 1]); the first panel carries the legend."""
    looped = [data for data in runs if data.steps]
    fig = _figure(9.0, 3.4)
    for index, (title, value, share) in enumerate(panels):
        ax = fig.add_subplot(1, len(panels), index + 1)
        for data in looped:
            ax.plot([s["step"] + 1 for s in data.steps], [value(s) for s in data.steps], marker=".", label=data.name)
        if share:
            ax.set_ylim(-0.02, 1.02)
        ax.set_title(title, fontsize="medium")
        ax.set_xlabel("outer step")
        ax.grid(True, alpha=0.3)
    fig.axes[0].legend(fontsize="x-small")
    return _save(fig, path, integer_x=True)
