"""The cold-start report: how much of a task the base student cannot solve at all (fail@K).

the seed write-up (docs/design.md §1), "Phase 1: Cold-Start Analysis": what fraction of examples has zero pass rate
for K = 8, 16, 32, 64, 128, and how that varies by difficulty. This module only renders numbers that
`sv_soar.evaluation.hardset` computed: a markdown file and a PNG of zero-pass fraction against K.
"""

from __future__ import annotations

import os
import statistics
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from sv_soar.jsonl import atomic_path, write_text_atomic

OVERALL = "overall"


@dataclass
class ColdStartReport:
    task: str
    model: str
    source: str  # where the problems came from: "builtin", a JSONL path, "saved results: ..."
    samples: int  # S: samples a problem; the hard set is fail@S
    temperature: float | None  # None where the saved results do not say
    seed: int  # seed of the D_train / D_test split (and of sampling, where this run sampled)
    command: str  # the command line that produced the report
    problems: int
    # zero_pass[group][K] = fraction of the group's problems with no success in their first K samples;
    # the OVERALL group comes first, then the task's breakdown groups (E1: scenario)
    zero_pass: dict[str, dict[int, float]]
    group_sizes: dict[str, int]
    pass_at_k: dict[int, float]  # mean unbiased pass@k over all problems
    hard_set: int
    d_train: int
    d_test: int
    seconds: float | None = None  # wall time of sampling, where this run sampled
    notes: list[str] = field(default_factory=list)
    # K -> problems with K samples; saved results give each problem its own K (`samples` is the fewest)
    k_per_problem: dict[int, int] = field(default_factory=dict)
    # the --min-samples rule applied to saved results, as the report states it
    min_samples: str | None = None


def k_spread(counts: Sequence[int]) -> str:
    """Samples a problem in one line: "min 1, median 8, max 8 (K=1 x1, K=8 x3)"."""
    histogram = Counter(counts)
    bars = ", ".join(f"K={k} x{histogram[k]}" for k in sorted(histogram))
    return f"min {min(counts)}, median {statistics.median(counts):g}, max {max(counts)} ({bars})"


def render_markdown(report: ColdStartReport) -> str:
    ks = sorted(report.zero_pass[OVERALL])
    lines = [
        f"# Cold-start report: {report.task}, {report.model}",
        "",
        "Fail@K analysis (the seed write-up's Phase 1): the fraction of problems the model solves in",
        "none of its first K samples. The hard set D is fail@S; it is split 50/50 into D_train (SOAR's",
        "reward questions) and D_test (final evaluation only), docs/design.md §4.",
        "",
        "| setting | value |",
        "|---|---|",
        f"| task | {report.task} |",
        f"| model | `{report.model}` |",
        f"| problems | {report.source} |",
        *_samples_rows(report),
        f"| temperature | {'not recorded' if report.temperature is None else report.temperature} |",
        f"| seed | {report.seed} |",
    ]
    if report.seconds is not None:
        lines.append(f"| sampling time | {report.seconds:.1f} s |")
    lines += [
        "",
        "## Counts",
        "",
        f"- problems: {report.problems}",
        f"- hard set D (0/{'K' if len(report.k_per_problem) > 1 else report.samples} solved): {report.hard_set} "
        f"({_percent(report.hard_set / report.problems if report.problems else 0.0)})",
        f"- D_train: {report.d_train}, D_test: {report.d_test}",
        "",
        "## Zero-pass fraction by K",
        "",
        "| group | problems | " + " | ".join(f"K={k}" for k in ks) + " |",
        "|---|---:|" + "---:|" * len(ks),
    ]
    for group, by_k in report.zero_pass.items():
        name = f"**{group}**" if group == OVERALL else group
        cells = " | ".join(_percent(by_k[k]) for k in ks)
        lines.append(f"| {name} | {report.group_sizes[group]} | {cells} |")
    lines += ["", f"## pass@k over all problems (unbiased estimator, n = {report.samples})", ""]
    if report.pass_at_k:
        lines += [
            "| " + " | ".join(f"pass@{k}" for k in report.pass_at_k) + " |",
            "|" + "---:|" * len(report.pass_at_k),
            "| " + " | ".join(_percent(v) for v in report.pass_at_k.values()) + " |",
        ]
    else:
        lines.append("(no k in {1, 4, 8, 16, 32} is at most S)")
    if report.notes:
        lines += ["", "## Notes", ""] + [f"- {note}" for note in report.notes]
    lines += ["", "## Command", "", "```", report.command, "```", ""]
    return "\n".join(lines)


def _samples_rows(report: ColdStartReport) -> list[str]:
    """The settings rows on samples: S, or each problem's own K (min / median / max, a histogram) and the rule
    that kept them."""
    if len(report.k_per_problem) <= 1:
        rows = [f"| samples a problem (S) | {report.samples} |"]
    else:
        counts = [k for k, n in report.k_per_problem.items() for _ in range(n)]
        rows = [f"| samples a problem (K, each problem its own) | {k_spread(counts)}; hard = 0/K; the table and "
                f"pass@k below use each problem's first {report.samples} |"]
    if report.min_samples:
        rows.append(f"| min samples | {report.min_samples} |")
    return rows


def plot_zero_pass(report: ColdStartReport, path: str | os.PathLike) -> Path:
    """Zero-pass fraction against K (log2 axis), one line per breakdown group and one overall."""
    # Figure + Agg canvas directly: no pyplot global state, no display needed.
    from matplotlib.backends.backend_agg import FigureCanvasAgg  # heavy: matplotlib
    from matplotlib.figure import Figure  # heavy: matplotlib

    fig = Figure(figsize=(7.5, 4.5), dpi=120)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    for group, by_k in report.zero_pass.items():
        ks = sorted(by_k)
        label = f"{group} (n={report.group_sizes[group]})"
        if group == OVERALL:
            ax.plot(ks, [by_k[k] for k in ks], marker="o", color="black", linewidth=2.5, label=label, zorder=3)
        else:
            ax.plot(ks, [by_k[k] for k in ks], marker=".", linewidth=1.2, alpha=0.85, label=label)
    ax.set_xscale("log", base=2)
    all_ks = sorted(report.zero_pass[OVERALL])
    ax.set_xticks(all_ks, labels=[str(k) for k in all_ks])
    ax.set_ylim(-0.02, 1.02)
    ax.set_xlabel("K (samples a problem)")
    ax.set_ylabel("fraction with 0/K solved")
    ax.set_title(f"Cold start: {report.task}, {report.model}, T={report.temperature}")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize="small", loc="center left", bbox_to_anchor=(1.01, 0.5))
    fig.tight_layout()

    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
    return Path(path)


def write_cold_start_report(report: ColdStartReport, out_dir: str | os.PathLike) -> tuple[Path, Path]:
    """Write out_dir/cold_start_report.md and out_dir/cold_start.png (both atomically)."""
    out_dir = Path(out_dir)
    markdown = write_text_atomic(out_dir / "cold_start_report.md", render_markdown(report))
    png = plot_zero_pass(report, out_dir / "cold_start.png")
    return markdown, png


def _percent(fraction: float) -> str:
    return f"{100 * fraction:.1f}%"
