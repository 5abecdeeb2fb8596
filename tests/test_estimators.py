"""Inner-loop estimators against values worked out by hand."""

from __future__ import annotations

import math

import pytest
import torch

from sv_soar.student.estimators import (
    ESTIMATORS,
    get_estimator,
    grpo_advantages,
    maxrl_advantages,
    rloo_advantages,
)


def close(actual: torch.Tensor, expected: list) -> None:
    torch.testing.assert_close(actual, torch.tensor(expected, dtype=torch.float32), rtol=1e-5, atol=1e-6)


# --- RLOO: A_i = r_i - mean of the others -------------------------------------------------------


def test_rloo_single_success():
    # r = [1, 0, 0, 0]: the others' mean is 0 for the success, 1/3 for each failure
    close(rloo_advantages(torch.tensor([1.0, 0.0, 0.0, 0.0])), [1.0, -1 / 3, -1 / 3, -1 / 3])


def test_rloo_graded_rewards():
    # r = [2, 0, 1]: 2 - (0+1)/2 = 1.5; 0 - (2+1)/2 = -1.5; 1 - (2+0)/2 = 0
    close(rloo_advantages(torch.tensor([2.0, 0.0, 1.0])), [1.5, -1.5, 0.0])


def test_rloo_all_zero_group_gives_zero():
    close(rloo_advantages(torch.zeros(4)), [0.0, 0.0, 0.0, 0.0])


def test_rloo_batched_rows_are_independent():
    rewards = torch.tensor([[1.0, 0.0, 0.0, 0.0], [1.0, 1.0, 0.0, 0.0]])
    # second row: 1 - 1/3 = 2/3 for the successes, 0 - 2/3 for the failures
    close(rloo_advantages(rewards), [[1.0, -1 / 3, -1 / 3, -1 / 3], [2 / 3, 2 / 3, -2 / 3, -2 / 3]])


# --- GRPO: (r - mean) / (unbiased std + eps) ----------------------------------------------------


def test_grpo_single_success():
    # mean 0.25; unbiased var = (0.75² + 3·0.25²)/3 = 0.25 -> std 0.5
    adv = grpo_advantages(torch.tensor([1.0, 0.0, 0.0, 0.0]), eps=0.0)
    close(adv, [1.5, -0.5, -0.5, -0.5])


def test_grpo_eps_is_added_to_std():
    adv = grpo_advantages(torch.tensor([1.0, 0.0, 0.0, 0.0]), eps=0.5)
    close(adv, [0.75, -0.25, -0.25, -0.25])


def test_grpo_all_zero_and_all_equal_groups_give_zero():
    close(grpo_advantages(torch.zeros(4)), [0.0] * 4)
    close(grpo_advantages(torch.full((3,), 0.7)), [0.0] * 3)


def test_grpo_batched():
    rewards = torch.tensor([[1.0, 0.0, 0.0, 0.0], [0.0, 0.0, 0.0, 0.0], [2.0, 0.0, 2.0, 0.0]])
    # third row: mean 1, unbiased std sqrt(4/3)
    s = 1 / math.sqrt(4 / 3)
    close(grpo_advantages(rewards, eps=0.0)[[0, 2]], [[1.5, -0.5, -0.5, -0.5], [s, -s, s, -s]])
    close(grpo_advantages(rewards)[1], [0.0] * 4)


# --- MaxRL: (r - mean) / mean, zero where mean is 0 ---------------------------------------------


def test_maxrl_single_success():
    # mean 0.25 -> (1 - 0.25)/0.25 = 3, (0 - 0.25)/0.25 = -1
    close(maxrl_advantages(torch.tensor([1.0, 0.0, 0.0, 0.0])), [3.0, -1.0, -1.0, -1.0])


def test_maxrl_weights_rare_success_more_than_rloo():
    rare = maxrl_advantages(torch.tensor([1.0] + [0.0] * 7))[0]  # p = 1/8 -> 7
    common = maxrl_advantages(torch.tensor([1.0] * 7 + [0.0]))[0]  # p = 7/8 -> 1/7
    assert rare.item() == pytest.approx(7.0) and common.item() == pytest.approx(1 / 7)


def test_maxrl_zero_where_mean_is_zero():
    close(maxrl_advantages(torch.zeros(4)), [0.0] * 4)
    rewards = torch.tensor([[0.0, 0.0, 0.0, 0.0], [0.0, 1.0, 1.0, 0.0]])
    # second row: mean 0.5 -> ±1
    adv = maxrl_advantages(rewards)
    close(adv, [[0.0, 0.0, 0.0, 0.0], [-1.0, 1.0, 1.0, -1.0]])
    assert torch.isfinite(adv).all()


def test_maxrl_rejects_negative_rewards():
    with pytest.raises(ValueError, match="non-negative"):
        maxrl_advantages(torch.tensor([1.0, -1.0]))


# --- shared behaviour ---------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(ESTIMATORS))
def test_shapes_are_preserved_and_groups_sum_to_zero(name):
    estimator = get_estimator(name)
    torch.manual_seed(0)
    one = torch.rand(8)
    many = torch.rand(3, 8)
    assert estimator(one).shape == (8,)
    out = estimator(many)
    assert out.shape == (3, 8)
    # every estimator centres rewards inside the group, so advantages of a group sum to zero
    torch.testing.assert_close(out.sum(dim=-1), torch.zeros(3), atol=1e-5, rtol=0)
    # a row of a batch gets the same advantages as on its own
    torch.testing.assert_close(out[1], estimator(many[1]))


@pytest.mark.parametrize("name", sorted(ESTIMATORS))
def test_group_of_one_is_rejected(name):
    with pytest.raises(ValueError, match="at least 2"):
        get_estimator(name)(torch.tensor([1.0]))


def test_unknown_estimator_names_the_choices():
    with pytest.raises(ValueError, match="grpo"):
        get_estimator("ppo")
