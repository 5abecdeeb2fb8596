"""`sv-soar report RUN_DIR...`: one markdown page and its plots for one run or a comparison of runs.

    sv-soar report runs/demo/soar                              # -> runs/demo/soar/report/
    sv-soar report runs/e1/soar-s* runs/e1/hard-only-s* --out experiments/cold-start-e1

What it reads from each run folder (sv_soar.run_dir): config.toml (method, seed), steps.jsonl (the
outer loop's per-step log), evaluation/final.json (`sv-soar evaluate`) and, when present,
evaluation/loop-student.json (`sv-soar evaluate --loop-student`: a "<method> (loop student)" row). What it
writes:

    report.md       runs, final evaluation per method (pass@k, escape rate, ECE, abstain rate, each
                    with a bootstrap interval over every final student of the method's runs), the
                    outer loop per run (steps, promotions, valid rate, time per phase)
    pass_at_k.png   pass@k against k per method, with the interval as a band and the untrained base
    reward.png      R̂_t and its moving average over steps, τ, promotions marked; one panel a run
    teacher.png     the teacher's valid rate and its questions' diversity over steps

Runs of the same method are pooled: three SOAR runs with seeds 0, 1, 2, each evaluated with three
fresh students, are one "soar" row over nine students. A run without evaluation/final.json shows in
the outer-loop sections only; a Hard-only run has no outer loop.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from sv_soar.evaluation.final import PASS_KS
from sv_soar.evaluation.report_data import (OTHER_METRICS, MethodSummary, RunData, base_metrics, evaluated_sets,
                                            load_run_data, paired_rows, part_accuracies, promoted_questions,
                                            summarise_methods)
from sv_soar.evaluation.report_plots import plot_drift, plot_mechanism, plot_pass_at_k, plot_reward, plot_teacher
from sv_soar.jsonl import write_text_atomic
from sv_soar.soar_step import class_balance

UNSTUCK_ACCURACY = 0.5  # sample efficiency: outer steps until the baseline student's Acc(Q_R) first reaches this
PHASES = ("teacher_sampling", "student_training", "evaluation", "intrinsic_reward", "teacher_update", "total")


# --- markdown ---------------------------------------------------------------------------------------


def render_markdown(runs: list[RunData], summaries: list[MethodSummary], base: dict[str, Any] | None,
                    plots: dict[str, Path], command: str, training_only: bool = False) -> str:
    lines = ["# SOAR report", ""]
    lines += ["## Runs", "", "| run | method | seed | teacher | student | outer steps | promotions | promoted questions | final students |",
              "|---|---|---:|---|---|---:|---:|---:|---:|"]
    for data in runs:
        config = data.run.config
        promotions = sum(1 for step in data.steps if step.get("promoted"))
        promoted = sum(len(dataset) for dataset in data.run.promoted_datasets())
        teacher = "—" if data.method == "hard-only" else f"`{config.teacher.model}`"
        steps = "—" if data.method == "hard-only" else f"{len(data.steps)}/{config.run.outer_steps}"
        students = "not read" if training_only else len(data.final["seeds"]) if data.final else 0
        lines.append(f"| `{data.run.folder}` | {data.method} | {config.run.seed} | {teacher} | `{config.student.model}` "
                     f"| {steps} | {promotions} | {promoted} | {students} |")
    lines.append("")

    if training_only:
        lines += ["## Final evaluation", "", "Not read: this report is of the training side only (`--training-only`); "
                  "no run's evaluation/ files were opened.", ""]
    else:
        lines += final_tables(runs, summaries, base, plots)

    paired = paired_rows(runs)
    if paired:
        lines += ["## Paired differences on D_test", "",
                  "A − B, paired by seed and by problem; 95 % bootstrap over seeds and problems together "
                  "(`paired_difference`); one column a seed.", ""]
        seeds = sorted({s for row in paired for s in row["per_seed"]})
        lines.append("| pair | metric | mean | 95 % interval | " + " | ".join(f"seed {s}" for s in seeds) + " |")
        lines.append("|---|---|---:|---|" + "---:|" * len(seeds))
        for row in paired:
            cells = [f"{row['per_seed'][s]:+.3f}" if s in row["per_seed"] else "—" for s in seeds]
            lines.append(f"| {row['pair']} | {row['metric']} | {row['mean']:+.3f} | [{row['low']:+.3f}, {row['high']:+.3f}] | "
                         + " | ".join(cells) + " |")
        lines.append("")

    balance = class_balance_rows(runs)
    if balance:
        lines += ["## Class balance", "", "| run | D_train | D_test | Q_R (summed over steps) |", "|---|---|---|---|"]
        lines += balance + [""]

    looped = [data for data in runs if data.steps]
    if looped:
        lines += ["## Teacher drift", "",
                  "changed share: the share of a step's first-round rollouts that differ when redrawn with the same "
                  "seed after the update (0: the update changed nothing the teacher writes); KL: KL(π‖π_init) per "
                  "token on those redrawn rollouts (the mean log-ratio: unbiased, so below 0 on a few samples when "
                  "the true KL is near 0). Base-T never updates.", "",
                  "| run | changed share per step | KL after per step |", "|---|---|---|"]
        for data in looped:
            updates = [s.get("teacher_update") or {} for s in data.steps]
            changed = " ".join(f"{u['changed_share']:.2f}" if "changed_share" in u else "—" for u in updates)
            kl = " ".join(f"{u['kl_after']:.4f}" if "kl_after" in u else "—" for u in updates)
            lines.append(f"| `{data.name}` | {changed} | {kl} |")
        lines.append("")
        if "drift" in plots:
            lines += [f"![teacher drift]({plots['drift'].name})", ""]
        lines += ["## Outer loop", ""]
        lines += ["| run | steps | valid rate | R̂ mean | R̂ last | promotions (step) | "
                  f"steps to Acc(Q_R) ≥ {UNSTUCK_ACCURACY} | s/step | "
                  + " | ".join(f"{phase} s" for phase in PHASES[:-1]) + " |",
                  "|---|---:|---:|---:|---:|---|---:|---:|" + "---:|" * (len(PHASES) - 1)]
        for data in looped:
            lines.append(_loop_row(data))
        lines.append("")
        lines.append(f"Steps to Acc(Q_R) ≥ {UNSTUCK_ACCURACY} (sample efficiency): outer steps until the baseline "
                     "student (the last promoted one) first solves that share of a step's Q_R, from D_train; '—' "
                     "when it never does. Time per phase is the mean over the run's steps; student training and "
                     "evaluation are parts of scoring (the rest of scoring is the reward cache and bookkeeping).")
        lines.append("")
        lines += divergence_lines(runs)
        lines += label_share_lines(looped)
        lines += stepping_stone_lines(looped)
        for key, title in (("mechanism", "the baseline's J on Q_R's hard pairs and the teacher's stepping-stone share"),
                           ("reward", "R̂_t and its moving average, promotions marked"),
                           ("teacher", "teacher valid rate and question diversity")):
            if key in plots:
                lines += [f"![{title}]({plots[key].name})", ""]
    lines += ["## Command", "", "```", command, "```", ""]
    return "\n".join(lines)


def final_tables(runs: list[RunData], summaries: list[MethodSummary], base: dict[str, Any] | None,
                 plots: dict[str, Path]) -> list[str]:
    """One table a problem set the final students were scored on: D_test, then each extra set."""
    if not summaries:
        return ["## Final evaluation on D_test", "",
                "No run has been evaluated yet: `sv-soar evaluate RUN_DIR` writes evaluation/final.json.", ""]
    lines = []
    for set_name in evaluated_sets(runs):
        set_summaries = summaries if set_name == "d_test" else summarise_methods(runs, set_name)
        set_base = base if set_name == "d_test" else base_metrics(runs, set_name)
        title = "D_test" if set_name == "d_test" else f"`{set_name}` (an extra set, --extra-eval)"
        lines += [f"## Final evaluation on {title}", ""]
        lines += metrics_table(set_summaries, set_base)
        if set_name == "d_test" and "pass_at_k" in plots:
            lines += [f"![pass@k per method]({plots['pass_at_k'].name})", ""]
    return lines


def metrics_table(summaries: list[MethodSummary], base: dict[str, Any] | None) -> list[str]:
    names = [f"pass@{k}" for k in PASS_KS if any(f"pass@{k}" in s.metrics for s in summaries)]
    names += [name for name in OTHER_METRICS if any(name in s.metrics for s in summaries)]
    names += sorted({name for s in summaries for name in s.metrics if name.startswith("pass@1 ")})
    lines = ["Mean over final students with a 95 % bootstrap interval over students; the base row is the untrained "
             "student. pair_accuracy (tasks with twin pairs): J = pass@1(x) + pass@1(x') − 1 over each problem and "
             "its twin, 0 for any answer that ignores the causal feature. "
             "Escape rate: share of problems solved at least once. pass@1 <label>: the success rate on "
             "the problems of that label (a student that flips its label prior gains on one label, loses on the "
             "other); pass@1 twins: on the hard problems' twins (tasks with twin pairs)." + (" A \"(loop student)\" row is the outer loop's own student, the last promoted baseline "
                          "(`sv-soar evaluate --loop-student`): trained on the teacher's problems only, one a run."
                          if any(s.method.endswith("(loop student)") for s in summaries) else ""), "",
             "| method | runs | students | " + " | ".join(names) + " |",
             "|---|---:|---:|" + "---:|" * len(names)]
    if base is not None:
        base_labels = part_accuracies(base)
        cells = [f"{base_labels[name]:.3f}" if name in base_labels else _base_cell(base, name) for name in names]
        lines.append("| base (untrained) | — | — | " + " | ".join(cells) + " |")
    for summary in summaries:
        cells = []
        for name in names:
            value = summary.metrics.get(name)
            cells.append("—" if value is None else f"{value['mean']:.3f} [{value['low']:.3f}, {value['high']:.3f}]")
        lines.append(f"| {summary.method} | {summary.runs} | {summary.students} | " + " | ".join(cells) + " |")
    return lines + [""]


def class_balance_rows(runs: list[RunData]) -> list[str]:
    def show(counts: dict[str, int]) -> str:
        return ", ".join(f"{label} {count}" for label, count in counts.items()) or "—"

    rows, seen = [], set()
    for data in runs:
        q_r: dict[str, int] = {}
        for step in data.steps:
            for label, count in (step.get("q_r_balance") or {}).items():
                q_r[label] = q_r.get(label, 0) + count
        key = (str(data.run.config.data.hard_set), data.steps == [])
        if key in seen and not q_r:
            continue
        seen.add(key)
        rows.append(f"| `{data.name}` | {show(class_balance(data.run.d_train()))} | {show(class_balance(data.run.d_test()))} "
                    f"| {show(q_r)} |")
    return rows


def _base_cell(base: dict[str, Any], name: str) -> str:
    # final.json is JSON: pass_at_k's keys are strings ("1", "4", ...)
    value = base["pass_at_k"].get(name[5:]) if name.startswith("pass@") else base.get(name)
    return "—" if value is None else f"{value:.3f}"


def _loop_row(data: RunData) -> str:
    steps = data.steps
    scored = [s for s in steps if s.get("R_hat") is not None]
    valid = np.mean([s.get("valid_rate", 0.0) for s in steps])
    r_mean = f"{np.mean([s['R_hat'] for s in scored]):+.3f}" if scored else "—"
    r_last = f"{scored[-1]['R_hat']:+.3f}" if scored else "—"
    promotions = ", ".join(str(s["step"] + 1) for s in steps if s.get("promoted")) or "none"
    reached = steps_to_accuracy(steps, UNSTUCK_ACCURACY)
    seconds = [np.mean([s.get("seconds", {}).get(phase, 0.0) for s in steps]) for phase in PHASES]
    return (f"| `{data.name}` | {len(steps)} | {valid:.2f} | {r_mean} | {r_last} | {promotions} | "
            f"{'—' if reached is None else reached} | {seconds[-1]:.0f} | "
            + " | ".join(f"{value:.1f}" for value in seconds[:-1]) + " |")


def steps_to_accuracy(steps: list[dict[str, Any]], threshold: float) -> int | None:
    """Outer steps until the baseline student's accuracy on Q_R first reaches `threshold`: step t's log holds
    the accuracy of the baseline it started from (reached after t steps) and, when it promoted, the promoted
    dataset's students' median accuracy (the next baseline: reached after t + 1 steps)."""
    for entry in steps:
        t = entry["step"]
        if (entry.get("baseline_accuracy") or 0.0) >= threshold:
            return t
        k = entry.get("promoted_dataset")
        if entry.get("promoted") and k is not None:
            finished = sorted(a for a in entry["student_accuracies"][k] if a is not None)
            if finished and finished[(len(finished) - 1) // 2] >= threshold:
                return t + 1
    return None


def label_share_lines(looped: list[RunData], edge: int = 5) -> list[str]:
    """The share of each label among the teacher's valid problems over the first and the last `edge` steps
    (E1): a grounded reward on a one-class Q_R can teach the teacher to write that class, not harder problems."""
    rows, labels = [], set()
    for data in looped:
        counts = [step.get("dataset_balance") or [] for step in data.steps]
        if not any(counts):
            continue
        first, last = _label_shares(counts[:edge]), _label_shares(counts[-edge:])
        labels |= set(first) | set(last)
        rows.append((data.name, first, last))
    if not rows:
        return []
    names = sorted(labels)
    lines = ["## The teacher's labels", "",
             f"Share of each label among the teacher's valid problems, first {edge} steps → last {edge} steps.", "",
             "| run | " + " | ".join(names) + " |", "|---|" + "---|" * len(names)]
    for name, first, last in rows:
        cells = [f"{first.get(n, 0):.2f} → {last.get(n, 0):.2f}" for n in names]
        lines.append(f"| `{name}` | " + " | ".join(cells) + " |")
    return lines + [""]


def stepping_stone_lines(looped: list[RunData], edge: int = 5) -> list[str]:
    """Tasks with stepping stones (the mechanism task): their share among the teacher's valid problems over the first
    and the last `edge` steps, and the teacher's agreement with the oracle's labels. SOAR's teacher should write
    more of them as it learns; Base-T's, never updated, should not."""
    rows = []
    for data in looped:
        shares = [s["stepping_stone_share"] for s in data.steps if s.get("stepping_stone_share") is not None]
        if shares:
            agreement = [s["teacher_label_agreement"] for s in data.steps if s.get("teacher_label_agreement") is not None]
            agreed = f"{np.mean(agreement):.2f}" if agreement else "—"
            trend = (f"{np.mean(shares[:edge]):.3f} → {np.mean(shares[-edge:]):.3f}" if len(shares) >= 2 * edge
                     else f"{np.mean(shares):.3f} over {len(shares)} steps (fewer than {2 * edge}: no halves yet)")
            rows.append(f"| `{data.name}` | {data.method} | {trend} | {agreed} |")
    if not rows:
        return []
    return ["## The teacher's stepping stones", "",
            f"Share of stepping stones among the teacher's valid problems, mean of the first {edge} steps → the last "
            f"{edge}; the teacher's label agreement with the oracle over the run (its labels are not used).", "",
            "| run | method | stepping-stone share | label agreement |", "|---|---|---|---:|", *rows, ""]


def _label_shares(steps_balances: list[list[dict[str, int]]]) -> dict[str, float]:
    total: dict[str, int] = {}
    for balances in steps_balances:
        for balance in balances:
            for label, count in balance.items():
                total[label] = total.get(label, 0) + count
    return {label: count / max(1, sum(total.values())) for label, count in total.items()}


def divergence_lines(runs: list[RunData]) -> list[str]:
    """Whether SOAR's teacher writes other problems than Base-T's of the same seed: both sample with the same
    step seeds, so they write the same datasets until an update moves SOAR's teacher."""
    by_seed: dict[int, dict[str, RunData]] = {}
    for data in runs:
        if data.steps and data.method in ("soar", "base-t"):
            by_seed.setdefault(data.run.config.run.seed, {})[data.method] = data
    rows = []
    for seed, pair in sorted(by_seed.items()):
        if len(pair) < 2:
            continue
        soar, base = ({s["step"]: s.get("datasets") for s in pair[m].steps} for m in ("soar", "base-t"))
        common = sorted(set(soar) & set(base))
        differ = [t for t in common if soar[t] != base[t]]
        first = str(differ[0] + 1) if differ else "never"
        promoted = {m: promoted_questions(pair[m]) for m in ("soar", "base-t")}
        rows.append(f"| {seed} | {len(common)} | {first} | {len(differ)} | "
                    f"{len(promoted['soar'] - promoted['base-t'])} of {len(promoted['soar'])} | "
                    f"{len(promoted['base-t'] - promoted['soar'])} of {len(promoted['base-t'])} |")
    if not rows:
        return []
    return ["## Does SOAR's teacher write other problems than Base-T's?", "",
            "Same seed, same step seeds: the datasets are identical until SOAR's updates change its teacher. The "
            "promoted questions (the final students' training set under train_on = \"pq\") that the other run of "
            "the seed did not promote, so far.", "",
            "| seed | steps compared | first step with different datasets | steps with different datasets | "
            "SOAR's promoted questions not Base-T's | Base-T's not SOAR's |",
            "|---:|---:|---:|---:|---:|---:|", *rows, ""]


# --- the report ---------------------------------------------------------------------------------------


def write_report(folders: list[Path], out: Path, command: str = "", *, training_only: bool = False) -> Path:
    """Read the runs, write out/report.md and its PNGs; returns the markdown's path. `training_only`: the runs'
    evaluation files are not opened (a report while runs are going, blind to D_test until the protocol's end)."""
    runs = [load_run_data(folder, evaluations=not training_only) for folder in folders]
    summaries = summarise_methods(runs)
    base = base_metrics(runs)
    plots: dict[str, Path] = {}
    if summaries:
        plots["pass_at_k"] = plot_pass_at_k(summaries, base, out / "pass_at_k.png")
    if any(data.steps for data in runs):
        plots["reward"] = plot_reward(runs, out / "reward.png")
        plots["teacher"] = plot_teacher(runs, out / "teacher.png")
        plots["drift"] = plot_drift(runs, out / "drift.png")
    if any("stepping_stone_share" in step for data in runs for step in data.steps):
        plots["mechanism"] = plot_mechanism(runs, out / "mechanism.png")
    return write_text_atomic(out / "report.md", render_markdown(runs, summaries, base, plots, command, training_only))
