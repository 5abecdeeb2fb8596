"""The defaults that decide whether SOAR's methods can differ at all (each failed on the behaviour before).

- the final students train for their own budget (epochs over PQ ∪ D_train), not the inner loop's steps
- a dataset whose students all failed carries no advantage in the teacher's RLOO (not a −1)
- the teacher's first update is not scaled away by a warmup
- one completion budget from the task (E1 96, E2 384) for mining, students and Q_R
- Q_R is stratified by label
- the KL loss term's gradient is the gradient of KL(π‖π_ref), not of KL(π_ref‖π)
- the report's paired differences resample problems and seeds together
"""

from __future__ import annotations

import math

import pytest
import torch

from sv_soar.config import parse_config
from sv_soar.evaluation.final import final_steps, training_phases
from sv_soar.soar_step import rloo_teacher_advantages
from sv_soar.tasks import get_task
from sv_soar.student.config import StudentTrainConfig
from sv_soar.policy_gradient import kl_k3, kl_penalty, learning_rate_at
from sv_soar.soar_step import class_balance, draw_q_r


def config(**sections):
    return parse_config({"data": {"hard_set": "hs"}, **sections})


def test_final_students_train_for_epochs_over_their_set_not_the_inner_loops_steps():
    # 64 rows of PQ ∪ D_train, 8 prompts a step, 2 epochs: 16 steps (the inner loop's 10 would see 80 prompts,
    # not even 2 passes; before, the final student got student.steps whatever the set's size)
    default = config()
    assert final_steps(default, 64) == 16 != default.student.steps
    assert final_steps(config(evaluation={"epochs": 0.5}), 64) == 4
    assert final_steps(config(evaluation={"epochs": 1}, student={"batch_prompts": 3}), 10) == 4  # ceil(10/3)
    assert final_steps(config(evaluation={"steps": 7}), 64) == 7  # an explicit count wins


def test_pq_only_arm_leaves_d_train_out():
    pq, d_train = [[{"q": 1}], [{"q": 2}]], [{"q": 9}]
    assert training_phases(pq, d_train, curriculum=False, train_on="pq") == [[{"q": 1}, {"q": 2}]]
    assert training_phases(pq, d_train, curriculum=True, train_on="pq") == [[{"q": 1}], [{"q": 2}]]
    assert training_phases([], d_train, curriculum=False, train_on="pq") == []  # nothing promoted: nothing to train
    assert config(evaluation={"train_on": "pq"}).evaluation.train_on == "pq"


def test_a_failed_dataset_is_left_out_of_the_teachers_rloo():
    # finished R = [0.1, −0.1, 0.0]: A = R_k − mean of the other finished ones; the failed one gets 0
    assert rloo_teacher_advantages([0.1, None, -0.1, 0.0]) == pytest.approx([0.15, 0.0, -0.15, 0.0])
    assert rloo_teacher_advantages([0.2, None]) == [0.0, 0.0]  # one finished dataset: nothing to compare
    assert config().soar.floor == "neutral"
    assert config(soar={"floor": -0.5}).soar.floor == -0.5  # the old behaviour stays available


def test_the_teachers_first_update_uses_its_learning_rate():
    teacher = config().teacher
    assert learning_rate_at(0, teacher.learning_rate, teacher.warmup_steps, 20) == teacher.learning_rate


def test_default_lora_learning_rates_are_the_calibrated_ones():
    """The defaults follow benchmarks/results/lr_calibration.json (SOAR's 1e-5 is a full-fine-tuning rate): the
    student's is the lowest rate whose 10 steps raised the training reward, the teacher's the lowest whose one
    update changed at least half of the redrawn rollouts; full fine-tuning keeps SOAR's 1e-5."""
    import json
    from pathlib import Path

    measured = json.loads((Path(__file__).parents[1] / "benchmarks/results/lr_calibration.json").read_text())
    student = min(row["lr"] for row in measured["student"]
                  if row["train_reward_last2"] - row["train_reward_first2"] > 0.1)
    teacher = min(row["lr"] for row in measured["teacher"] if row["changed_share"] >= 0.5)
    assert (config().student.learning_rate, config().teacher.learning_rate) == (student, teacher) == (1e-3, 1e-3)
    full = config(student={"finetune": "full"}, teacher={"finetune": "full"})
    assert (full.student.learning_rate, full.teacher.learning_rate) == (1e-5, 1e-5)
    assert config(student={"finetune": "full", "learning_rate": 3e-5}).student.learning_rate == 3e-5  # set wins


def test_one_completion_budget_from_the_task():
    student = StudentTrainConfig()
    assert student.tokens_for(get_task("e1")) == 96 == get_task("e1").answer_tokens  # what `hardset` mines with
    assert student.tokens_for(get_task("e2")) == 384  # E2 answers list findings and maybe a patch
    assert StudentTrainConfig(max_new_tokens=48).tokens_for(get_task("e2")) == 48  # an explicit budget wins


def test_q_r_is_stratified_by_label():
    d_train = [{"question": f"m{i}", "answer": "Malicious"} for i in range(12)] + \
              [{"question": f"b{i}", "answer": "Benign"} for i in range(4)]
    for seed in range(20):  # a plain draw of 8 from 12 + 4 gives 2/6, 1/7, 3/5 ... splits
        q_r = draw_q_r(d_train, 8, seed)
        assert class_balance(q_r) == {"Benign": 4, "Malicious": 4}
        assert len({row["question"] for row in q_r}) == 8
    assert class_balance(draw_q_r(d_train, 14, 0)) == {"Benign": 4, "Malicious": 10}  # Benign runs out first
    assert draw_q_r(d_train, 8, 3) == draw_q_r(d_train, 8, 3) != draw_q_r(d_train, 8, 4)


def _expected_gradient(term, logits, ref_logprobs):
    """Σ_y π(y) ∇term(log π(y), log π_ref(y)): the gradient a loss term gives on average over samples of π."""
    logprobs = torch.log_softmax(logits, dim=-1)
    weights = logprobs.exp().detach()
    (weights * term(logprobs, ref_logprobs)).sum().backward()
    return logits.grad.clone()


def test_kl_loss_gradient_is_that_of_kl_policy_to_reference():
    torch.manual_seed(0)
    ref_logprobs = torch.log_softmax(torch.randn(6), dim=-1)
    start = torch.randn(6)

    exact = start.clone().requires_grad_(True)
    p = torch.log_softmax(exact, dim=-1)
    (p.exp() * (p - ref_logprobs)).sum().backward()  # KL(π‖π_ref)
    forward = start.clone().requires_grad_(True)
    q = torch.log_softmax(forward, dim=-1)
    (ref_logprobs.exp() * (ref_logprobs - q)).sum().backward()  # KL(π_ref‖π)

    k2 = _expected_gradient(kl_penalty, start.clone().requires_grad_(True), ref_logprobs)
    k3 = _expected_gradient(kl_k3, start.clone().requires_grad_(True), ref_logprobs)
    assert torch.allclose(k2, exact.grad, atol=1e-6)
    assert torch.allclose(k3, forward.grad, atol=1e-6)  # why k3 is only the logged value
    assert not torch.allclose(k3, exact.grad, atol=1e-3)


def test_paired_bootstrap_over_problems_and_seeds():
    from sv_soar.evaluation.report_data import paired_difference

    # method A solves problem 0 in every sample, B never; both solve nothing else: escape 1/4 vs 0
    a = {0: [32, 0, 0, 0], 1: [32, 0, 0, 0]}
    b = {0: [0, 0, 0, 0], 1: [0, 0, 0, 0]}
    diff = paired_difference(a, b, samples=32, metric="escape_rate")
    assert diff["mean"] == pytest.approx(0.25)
    assert diff["per_seed"] == {0: pytest.approx(0.25), 1: pytest.approx(0.25)}
    assert 0 <= diff["low"] <= 0.25 <= diff["high"] <= 1  # resampling problems: the one problem may be left out
    same = paired_difference(a, a, samples=32, metric="pass@1")
    assert (same["mean"], same["low"], same["high"]) == (0.0, 0.0, 0.0)
    one = paired_difference({0: [16, 8]}, {0: [8, 8]}, samples=32, metric="pass@1")
    assert one["mean"] == pytest.approx((0.5 - 0.25) / 2)
    assert math.isfinite(one["low"]) and one["low"] <= one["mean"] <= one["high"]


def test_window_tau_and_floor_are_one_default_each():
    """Window 3, τ 0.01 and the neutral floor (docs/design.md §4) are defined once (sv_soar.soar_defaults) and are
    the defaults of `sv-soar train`'s config, the promotion state and the teacher envs' config alike."""
    from sv_soar import soar_defaults
    from sv_soar.promotion import PromotionState
    from sv_soar.teacher_env_config import TeacherEnvConfig

    assert (soar_defaults.WINDOW, soar_defaults.TAU, soar_defaults.FLOOR) == (3, 0.01, "neutral")
    soar = config().soar
    assert (soar.window, soar.tau, soar.floor) == (3, 0.01, "neutral")
    state = PromotionState(task="e1", model="m")
    assert (state.window, state.tau) == (3, 0.01)
    env = TeacherEnvConfig()
    assert (env.window, env.tau, env.floor) == (3, 0.01, "neutral")


def test_training_and_evaluation_temperatures_are_separate():
    """Students train at student.temperature (SOAR: 1.0, where groups vary); D_test is sampled at
    evaluation.temperature when set (the hard set's mining temperature), else at the training one."""
    assert config().evaluation_temperature() == 1.0
    assert config(student={"temperature": 0.7}).evaluation_temperature() == 0.7
    run = config(evaluation={"temperature": 0.1})
    assert (run.student.temperature, run.evaluation_temperature()) == (1.0, 0.1)
    with pytest.raises(Exception, match="evaluation.temperature"):
        config(evaluation={"temperature": 0})
