"""experiments/mechanism/verdict.py, the comparison's reading fixed before its D_test numbers were read: on made-up
runs whose answer is known, it calls a clear SOAR win positive, and calls a win that broke the twins, or a
difference whose interval reaches 0, negative and names the clause that failed."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from sv_soar.evaluation.report_data import RunData
from sv_soar.tasks.mechanism import hard_rows, stepping_stone_rows

ROOT = Path(__file__).resolve().parent.parent
spec = importlib.util.spec_from_file_location("verdict", ROOT / "experiments" / "mechanism" / "verdict.py")
verdict = importlib.util.module_from_spec(spec)
spec.loader.exec_module(verdict)

HARD, STONES = hard_rows(8, seed=1), stepping_stone_rows(8, seed=2)


def metrics(correct, twins, samples=4):
    """D_test metrics of 8 pairs: successes on each hard item and on its twin."""
    successes, twin_successes = [correct] * 8, [twins] * 8
    j = (correct + twins) / samples - 1
    return {"pass_at_k": {"1": correct / samples}, "successes": successes, "twin_successes": twin_successes,
            "samples": samples, "pair_accuracy": j, "labels": ["Malicious", "Benign"] * 4}


def run(method, seed, j_correct, *, twins=4, cue_agreeing=0.95, stones=(0.1, 0.1), matched=None, promoted=("a",)):
    config = SimpleNamespace(run=SimpleNamespace(seed=seed, method=method),
                             evaluation=SimpleNamespace(compute_matched_to=matched, train_on="pq"))
    steps = []
    for t in range(10):
        share = stones[0] if t < 5 else stones[1]
        n_stones = round(8 * share)
        dataset = [[r["question"], r["answer"]] for r in STONES[:n_stones] + HARD[:8 - n_stones]]
        steps.append({"step": t, "promoted": t in (2, 5), "stepping_stone_share": n_stones / 8, "datasets": [dataset],
                      "R_k": [n_stones / 8 - 0.1]})  # a reward that tracks the stepping stones exactly
    guard_set = {"pass_at_k": {"1": cue_agreeing}, "successes": [round(4 * cue_agreeing)] * 8, "samples": 4}
    final = {"seeds": [{"sets": {"d_test": metrics(j_correct, twins), "cue-agreeing": guard_set}}],
             "base": {"d_test": metrics(0, 4), "cue-agreeing": {"pass_at_k": {"1": 1.0}}}}
    folder = SimpleNamespace(name=f"{method}-s{seed}")
    promoted_rows = [[{"question": f"{q}-{method}-{seed}"} for q in promoted]]
    return RunData(SimpleNamespace(config=config, folder=folder, promoted_datasets=lambda: promoted_rows), steps, final)


def comparison(soar_correct=(3, 3, 3), soar_twins=4, base_t_correct=(0, 0, 0)):
    return [r for seed in (0, 1, 2) for r in (
        run("soar", seed, soar_correct[seed], twins=soar_twins, stones=(0.125, 0.5)),
        run("base-t", seed, base_t_correct[seed], stones=(0.25, 0.125)),
        run("hard-only", seed, 0), run("hard-only", seed, 0, matched="soar-s0"))]


def test_a_clear_soar_win_is_positive_and_every_training_clause_is_read():
    result = verdict.verdict(comparison())
    assert result["outcome"] == "positive" and result["failed"] == []
    differences = result["primary"]["differences"]
    assert differences["soar (PQ only) − base-t (PQ only)"]["mean"] == 0.75  # J 0.75 against 0
    assert differences["soar (PQ only) − hard-only-matched"]["low"] > 0
    training = result["training_side"]
    assert all(training["clauses"].values())  # first promotion at 3; promoted questions differ; 0.125 → 0.5 rises
    assert training["seeds"][0]["soar"]["stepping stones"] == {"first": 0.125, "last": 0.5, "change": 0.375,
                                                               "steps": [5, 5]}
    assert training["seeds"][0]["soar"]["cue-disagreeing"]["first"] == 0.875  # the hard items disagree with the cue
    assert verdict.missing_data(comparison()) == []
    markdown = verdict.render(result)
    assert "**Outcome: POSITIVE.** Training side: 4 of 4 clauses met." in markdown and "| soar (PQ only) − base-t (PQ only) | +0.750 [+0.750, +0.750]" in markdown


def test_a_win_that_breaks_the_twins_or_does_not_clear_zero_is_negative_and_says_why():
    broken = verdict.verdict(comparison(soar_twins=2))  # J rises on the hard items, but the twins fall to 0.5
    assert broken["outcome"] == "negative" and broken["failed"] == ["guard: SOAR"]
    assert broken["guard"]["holds"] == {"soar (PQ only)": False, "base-t (PQ only)": True, "hard-only": True,
                                        "hard-only-matched": True}
    # one seed of three carries the win: the bootstrap over seeds reaches 0 (against Hard-only) or below
    tied = verdict.verdict(comparison(soar_correct=(3, 0, 0), base_t_correct=(0, 0, 3)))  # +0.75, 0, −0.75 by seed
    assert tied["outcome"] == "negative"
    assert tied["failed"] == ["primary: soar (PQ only) − base-t (PQ only)", "primary: soar (PQ only) − hard-only"]
    assert tied["primary"]["differences"]["soar (PQ only) − base-t (PQ only)"]["per_seed"] == {0: 0.75, 1: 0.0,
                                                                                               2: -0.75}
    assert "**Outcome: NEGATIVE (failed: primary: soar (PQ only) − base-t (PQ only); primary" in verdict.render(tied)


def test_the_post_hoc_diagnosis_reads_whether_the_reward_tracks_the_problems_that_teach(tmp_path):
    assert list(verdict._ranks(np.array([3.0, 1.0, 2.0, 2.0]))) == [3.0, 0.0, 1.5, 1.5]  # ties share their mean rank
    runs = comparison()
    diagnosis = verdict.reward_diagnosis(runs)
    assert diagnosis["datasets"] == 60  # 10 steps of one dataset, SOAR and Base-T, 3 seeds
    rho = diagnosis["rho"]
    assert rho["stepping stones"]["rho"] == pytest.approx(1.0) and rho["cue-disagreeing"]["rho"] == pytest.approx(-1.0)
    assert rho["stepping stones"]["low"] == pytest.approx(1.0)  # the rest are hard items, all cue-disagreeing
    blind = verdict.render({"training_side": verdict.training_side(runs), "diagnosis": diagnosis})
    assert "training side only" in blind and "Primary" not in blind and "| stepping stones | +1.00 [+1.00, +1.00] |" in blind
    assert verdict.plot_diagnosis(diagnosis["points"], tmp_path / "d.png").read_bytes()[:4] == b"\x89PNG"


def test_missing_data_is_named_never_read_as_a_failure_or_a_pass():
    """A seed without its final student, the untrained student's scores not taken, a run still going or a failed
    step: the verdict names what is missing, and a training-side clause it cannot read is "not readable"."""
    runs = [r for r in comparison() if r.name != "soar-s2"]
    assert verdict.missing_data(runs) == ["soar (PQ only): no final student for seed(s) 2"]
    for r in runs:
        r.final.pop("base")
    assert verdict.missing_data(runs)[1:] == [
        "no untrained-student scores on d_test (run-comparison.sh scores them with base-t seed 0's evaluation)",
        "no untrained-student scores on cue-agreeing (run-comparison.sh scores them with base-t seed 0's evaluation)"]
    training = verdict.training_side(runs)  # SOAR has two seeds: its clauses wait
    assert training["clauses"]["SOAR's stepping-stone share rises"] is None
    assert training["clauses"]["promoted questions differ in >= 2 of 3 seeds"] is True  # two seeds already differ
    going = comparison()
    for r in going:
        if r.method in ("soar", "base-t"):
            del r.steps[4:]  # outer steps 1-4 so far: the last five have not come
    assert verdict.training_side(going)["clauses"]["Base-T's stepping-stone share does not rise"] is None
    failed_step = comparison()
    failed_step[1].steps[7] = {"step": 7, "error": "the teacher wrote 1 valid problem"}  # Base-T seed 0, step 8
    seed0 = verdict.training_side(failed_step)["seeds"][0]["base-t"]["stepping stones"]
    assert seed0["steps"] == [5, 4] and seed0["last"] == 0.125  # the other four of steps 6-10, not step 5
    markdown = verdict.render(verdict.verdict(runs))
    assert "| SOAR's stepping-stone share rises | not readable yet" in markdown
    assert "Training side: 3 of 4 clauses met (not met: SOAR's stepping-stone share rises)." in markdown
    assert "| both | — (no variation: the shares or R_k constant) |" in markdown  # every dataset here is stones + hard items alone


def test_the_diagnosis_gives_each_kind_of_problem_the_advantage_of_its_dataset_in_its_step():
    stones = [[r["question"], r["answer"]] for r in STONES[:4]]
    hard = [[r["question"], r["answer"]] for r in HARD[:4]]
    config = SimpleNamespace(run=SimpleNamespace(seed=0, method="soar"))
    steps = [{"step": t, "datasets": [stones, hard], "R_k": [0.5, 0.0], "stepping_stone_share": 0.5} for t in range(3)]
    soar = RunData(SimpleNamespace(config=config, folder=SimpleNamespace(name="soar-s0")), steps, None)
    advantage = verdict.reward_diagnosis([soar])["advantage"]["soar"]
    assert advantage["stepping stones"] == {"mean": 0.25, "low": 0.25, "high": 0.25, "problems": 12}
    assert advantage["cue-disagreeing"]["mean"] == -0.25 and "cue-agreeing" not in advantage  # none written


def test_the_diagnosis_reads_what_one_more_problem_of_a_kind_adds_to_its_datasets_reward():
    """Made-up datasets whose R_k is a step's own level plus 0.1 a stepping stone and 0.3 a cue-disagreeing flow:
    the within-step fit finds both, the step levels (a step's Q_R draw and baseline) do not leak into them, and the
    residual sd is the noise put in."""
    rng = np.random.default_rng(1)
    points = []
    for step in range(30):
        level = rng.normal(0, 1.0)  # far larger than the effects: only a within-step reading recovers them
        for _ in range(4):
            stones, disagreeing = (int(c) for c in rng.integers(0, 4, size=2))
            points.append({"run": "soar-s0", "method": "soar", "step": step,
                           "counts": {"stepping stones": stones, "cue-disagreeing": disagreeing,
                                      "cue-agreeing": 8 - stones - disagreeing},
                           "R_k": level + 0.1 * stones + 0.3 * disagreeing + rng.normal(0, 0.02)})
    fit = verdict.marginal_values(points, np.random.default_rng(0), 500)
    assert fit["stepping stones"]["mean"] == pytest.approx(0.1, abs=0.01)
    assert fit["cue-disagreeing"]["mean"] == pytest.approx(0.3, abs=0.01)
    interval = fit["stepping stones"]
    assert interval["low"] < interval["mean"] < interval["high"] and interval["high"] - interval["low"] < 0.03
    # the residual sd is a fit with one level a step (a dummy column each) and the two kinds: its dof N - steps - 2
    design = np.array([[p["counts"]["stepping stones"], p["counts"]["cue-disagreeing"]] + [p["step"] == s for s in range(30)]
                       for p in points], dtype=float)
    outcome = np.array([p["R_k"] for p in points])
    dummies, residuals, *_ = np.linalg.lstsq(design, outcome, rcond=None)
    assert fit["stepping stones"]["mean"] == pytest.approx(dummies[0]) and fit["residual_sd"] == pytest.approx(
        np.sqrt(residuals[0] / (120 - 30 - 2)))
    assert (fit["datasets"], fit["steps"], fit["steps_left_out"]) == (120, 30, 0)
    # a step whose datasets differ in size is left out (one more stone there may be one more problem) and counted
    uneven = points + [{"run": "soar-s0", "method": "soar", "step": 99, "R_k": 5.0,
                        "counts": {"stepping stones": stones, "cue-disagreeing": 0, "cue-agreeing": 1}}
                       for stones in (1, 2)]
    refit = verdict.marginal_values(uneven, np.random.default_rng(0), 50)
    assert refit["steps_left_out"] == 1 and refit["datasets"] == 120
    assert refit["stepping stones"]["mean"] == pytest.approx(fit["stepping stones"]["mean"])
    assert verdict.marginal_values(points[:8], np.random.default_rng(0), 10) is None  # two steps: nothing to read
    lines = "\n".join(verdict._marginal_lines({"both": fit, "base-t": None}))
    assert f"| both | {fit['stepping stones']['mean']:+.3f} [" in lines and "base-t" not in lines
