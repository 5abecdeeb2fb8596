"""The report's sections that tell a real comparison from a degenerate one: accuracy by label (a one-class hard
set is escaped by flipping the label prior), outer steps until the baseline solves half of Q_R (sample
efficiency), and whether SOAR's teacher writes other problems than Base-T's of the same seed."""

from __future__ import annotations

from types import SimpleNamespace

from sv_soar.evaluation.report import divergence_lines, steps_to_accuracy
from sv_soar.evaluation.report_data import RunData, label_accuracies


def test_accuracy_by_label_shows_a_flipped_prior():
    # a student that answers Benign to everything: all Benign problems solved, no Malicious one
    metrics = {"labels": ["Benign", "Benign", "Malicious", "Malicious"], "successes": [8, 6, 0, 0], "samples": 8}
    assert label_accuracies(metrics) == {"pass@1 Benign": 0.875, "pass@1 Malicious": 0.0}
    assert label_accuracies({"successes": [8, 6], "samples": 8}) == {}  # labels not recorded: no columns


def step(t, baseline, promoted_accuracies=None):
    entry = {"step": t, "baseline_accuracy": baseline, "promoted": promoted_accuracies is not None,
             "promoted_dataset": 1 if promoted_accuracies is not None else None}
    entry["student_accuracies"] = [[0.0], promoted_accuracies or [0.0]]
    return entry


def test_steps_to_accuracy_counts_the_promotion_that_reached_it():
    steps = [step(0, 0.0), step(1, 0.0, [0.25]), step(2, 0.25, [0.5, 0.75, 0.0]), step(3, 0.5)]
    assert steps_to_accuracy(steps, 0.5) == 3  # step 3's promoted students: median 0.5, the baseline after 3 steps
    assert steps_to_accuracy(steps, 0.2) == 2
    assert steps_to_accuracy(steps[:2], 0.5) is None


def run_data(method, seed, datasets, promoted=()):
    config = SimpleNamespace(run=SimpleNamespace(seed=seed, method=method))
    run = SimpleNamespace(config=config, promoted_datasets=lambda: [[{"question": q} for q in d] for d in promoted])
    return RunData(run, [{"step": t, "datasets": d} for t, d in enumerate(datasets)], None)


def test_divergence_names_the_first_step_where_soar_and_base_t_differ_and_counts_the_promoted_questions():
    """The protocol's training side: SOAR's promoted questions differ from Base-T's (in ≥ 2 of 3 seeds)."""
    same, other = [[["q1", "Benign"]]], [[["q2", "Malicious"]]]
    runs = [run_data("soar", 0, [same, same, other], promoted=[["a", "b"], ["c"]]),
            run_data("base-t", 0, [same, same, same], promoted=[["a", "b", "d"]]),
            run_data("soar", 1, [same, same]), run_data("base-t", 1, [same, same])]
    rows = [line for line in divergence_lines(runs) if line.startswith("| 0") or line.startswith("| 1")]
    assert rows == ["| 0 | 3 | 3 | 1 | 1 of 3 | 1 of 3 |", "| 1 | 2 | never | 0 | 0 of 0 | 0 of 0 |"]
    assert divergence_lines([run_data("soar", 0, [same])]) == []  # no Base-T of the seed: no section


def test_label_share_of_the_teachers_problems_first_and_last_steps():
    from sv_soar.evaluation.report import label_share_lines

    def data(balances):
        config = SimpleNamespace(run=SimpleNamespace(seed=0, method="soar"))
        steps = [{"step": t, "dataset_balance": b} for t, b in enumerate(balances)]
        return RunData(SimpleNamespace(config=config, folder=SimpleNamespace(name="soar-s0")), steps, None)

    early = [[{"Benign": 1, "Malicious": 1}, {"Malicious": 2}]]  # 1 Benign of 4
    late = [[{"Benign": 2}, {"Benign": 1, "Malicious": 1}]]  # 3 Benign of 4
    lines = label_share_lines([data(early * 5 + late * 5)])
    assert "| `soar-s0` | 0.25 → 0.75 | 0.75 → 0.25 |" in lines


def test_loop_students_are_paired_soar_against_base_t_and_kept_apart_from_the_final_students():
    from sv_soar.evaluation.report_data import paired_rows, summarise_methods

    def evaluated(method, seed, final_successes, loop_successes):
        config = SimpleNamespace(run=SimpleNamespace(seed=seed, method=method),
                                 evaluation=SimpleNamespace(compute_matched_to=None, train_on="pq+d_train"))

        def report(successes):
            metrics = {"pass_at_k": {"1": sum(successes) / (4 * len(successes))}, "escape_rate": 0.5,
                       "successes": successes, "samples": 4}
            return {"seeds": [{"sets": {"d_test": metrics}}]}

        return RunData(SimpleNamespace(config=config), [], report(final_successes), report(loop_successes))

    runs = [evaluated("soar", 0, [0, 0], [4, 4]), evaluated("base-t", 0, [0, 0], [4, 0]),
            evaluated("soar", 1, [0, 0], [4, 4]), evaluated("base-t", 1, [0, 0], [0, 0])]
    rows = {(row["pair"], row["metric"]): row for row in paired_rows(runs, metrics=("pass@1",))}
    assert rows[("soar − base-t", "pass@1")]["mean"] == 0.0  # the final students: the same successes
    loop = rows[("soar (loop student) − base-t (loop student)", "pass@1")]
    assert loop["per_seed"] == {0: 0.5, 1: 1.0} and loop["mean"] == 0.75
    assert [s.method for s in summarise_methods(runs)] == ["soar", "soar (loop student)", "base-t",
                                                           "base-t (loop student)"]


def test_stepping_stone_share_first_and_last_steps_and_the_plot(tmp_path):
    from sv_soar.evaluation.report import stepping_stone_lines
    from sv_soar.evaluation.report_plots import plot_mechanism

    def data(method, shares):
        config = SimpleNamespace(run=SimpleNamespace(seed=0, method=method))
        steps = [{"step": t, "stepping_stone_share": s, "teacher_label_agreement": 0.5, "baseline_accuracy": 0.1 * t}
                 for t, s in enumerate(shares)]
        return RunData(SimpleNamespace(config=config, folder=SimpleNamespace(name=f"{method}-s0")), steps, None)

    runs = [data("soar", [0.1] * 5 + [0.5] * 5), data("base-t", [0.1] * 10)]
    lines = stepping_stone_lines(runs)
    assert "| `soar-s0` | soar | 0.100 → 0.500 | 0.50 |" in lines and "| `base-t-s0` | base-t | 0.100 → 0.100 | 0.50 |" in lines
    assert stepping_stone_lines([run_data("soar", 0, [[]])]) == []  # a task without stepping stones: no section
    going = stepping_stone_lines([data("soar", [0.1, 0.3])])  # a run still going: its halves would overlap
    assert "| `soar-s0` | soar | 0.200 over 2 steps (fewer than 10: no halves yet) | 0.50 |" in going
    assert plot_mechanism(runs, tmp_path / "mechanism.png").stat().st_size > 0


def test_the_mechanism_comparisons_pairs_final_students_trained_on_pq_alone_against_hard_only():
    """experiments/mechanism/config-try10.toml: every run has evaluation.train_on = "pq". SOAR and Base-T are then
    "(PQ only)" rows, Hard-only (whose own set is D_train either way) and the compute-matched one are not, and the
    protocol's primary rows, J of SOAR − Base-T and of SOAR − Hard-only, are all there."""
    from sv_soar.evaluation.report_data import method_label, paired_rows, summarise_methods

    def evaluated(method, seed, successes, twin_successes, matched=None):
        config = SimpleNamespace(run=SimpleNamespace(seed=seed, method=method),
                                 evaluation=SimpleNamespace(compute_matched_to=matched, train_on="pq"))
        metrics = {"pass_at_k": {"1": 0.5}, "successes": successes, "twin_successes": twin_successes, "samples": 4}
        return RunData(SimpleNamespace(config=config), [], {"seeds": [{"sets": {"d_test": metrics}}]})

    runs = [run for seed in (0, 1) for run in (
        evaluated("soar", seed, [4, 4], [4, 2]), evaluated("base-t", seed, [4, 4], [0, 0]),
        evaluated("hard-only", seed, [4, 0], [0, 4]), evaluated("hard-only", seed, [4, 4], [0, 0], matched="soar-s0"))]
    assert [method_label(run) for run in runs[:4]] == ["soar (PQ only)", "base-t (PQ only)", "hard-only",
                                                       "hard-only-matched"]
    rows = {(row["pair"], row["metric"]): row for row in paired_rows(runs, metrics=("pass@1",))}
    assert rows[("soar (PQ only) − base-t (PQ only)", "J")]["mean"] == 0.75  # J 0.75 against 0
    assert rows[("soar (PQ only) − hard-only", "J")]["mean"] == 0.75
    assert rows[("soar (PQ only) − hard-only-matched", "J")]["mean"] == 0.75
    assert rows[("base-t (PQ only) − hard-only", "J")]["mean"] == 0.0
    # the guard beside J: accuracy on the twins (a student that ignored them would break what it knew)
    twins = {s.method: s.metrics["pass@1 twins"]["mean"] for s in summarise_methods(runs)}
    assert twins == {"soar (PQ only)": 0.75, "base-t (PQ only)": 0.0, "hard-only": 0.5, "hard-only-matched": 0.0}
