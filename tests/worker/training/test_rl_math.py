"""The policy-optimisation maths against values worked out by hand."""

from __future__ import annotations

import math

import pytest
import torch

from worker.training.rl_math import (
    AdaptiveKLController,
    clipped_policy_loss,
    clipped_value_loss,
    dpo_loss,
    entropy,
    explained_variance,
    gae,
    kl_per_token,
    last_token_index,
    masked_mean,
    masked_var,
    masked_whiten,
    per_token_rewards,
    rloo_advantages,
    token_logprobs,
)


def t(*rows) -> torch.Tensor:
    return torch.tensor(rows, dtype=torch.float32)


def close(actual: torch.Tensor | float, expected) -> None:
    actual = actual if isinstance(actual, torch.Tensor) else torch.tensor(actual)
    torch.testing.assert_close(
        actual, torch.as_tensor(expected, dtype=actual.dtype), atol=1e-5, rtol=0
    )


def test_masked_statistics_ignore_padding():
    values, mask = t([1, 2, 99], [3, 99, 99]), t([1, 1, 0], [1, 0, 0])
    close(masked_mean(values, mask), 2.0)
    close(masked_mean(values, mask, dim=1), [1.5, 3.0])
    close(masked_var(values, mask), 1.0)  # (1 + 0 + 1) / (3 - 1)
    whitened = masked_whiten(values, mask)
    close(whitened, t([-1, 0, 0], [1, 0, 0]))
    close(masked_whiten(values, mask, shift_mean=False), t([1, 2, 0], [3, 0, 0]))


def test_token_logprobs_and_entropy_of_a_known_distribution():
    logits = torch.log(t([0.5, 0.25, 0.25])).view(1, 1, 3)
    close(token_logprobs(logits, torch.tensor([[1]])), [[math.log(0.25)]])
    close(entropy(logits), [[1.5 * math.log(2)]])  # 0.5 ln 2 + 2 * 0.25 ln 4


def test_the_two_kl_estimators():
    logp, ref = t(math.log(0.5)), t(math.log(0.25))
    close(kl_per_token(logp, ref, estimator="k1"), [math.log(2)])
    # k3 = (r - 1) - ln r with r = q/p = 0.5: -0.5 + ln 2
    close(kl_per_token(logp, ref, estimator="k3"), [-0.5 + math.log(2)])
    assert (kl_per_token(ref, logp, estimator="k3") >= 0).all()


def test_the_score_lands_on_the_last_response_token():
    mask = t([1, 1, 1, 0], [1, 1, 0, 0])
    assert last_token_index(mask).tolist() == [2, 1]
    kl = t([0.1, 0.2, 0.3, 9], [0.5, -0.5, 9, 9])
    rewards = per_token_rewards(t(2.0, -1.0), kl, mask, beta=0.5)
    close(rewards, t([-0.05, -0.1, 1.85, 0], [-0.25, -0.75, 0, 0]))


def test_gae_by_hand():
    # one response of three tokens: rewards (0, 0, 1), values (0.5, 0.6, 0.7), gamma 1, lambda 0.5
    rewards, values, mask = t([0, 0, 1]), t([0.5, 0.6, 0.7]), t([1, 1, 1])
    advantages, returns = gae(rewards, values, mask, gamma=1.0, lam=0.5)
    # deltas: 0 + 0.6 - 0.5 = 0.1; 0 + 0.7 - 0.6 = 0.1; 1 + 0 - 0.7 = 0.3
    # A2 = 0.3; A1 = 0.1 + 0.5 * 0.3 = 0.25; A0 = 0.1 + 0.5 * 0.25 = 0.225
    close(advantages, t([0.225, 0.25, 0.3]))
    close(returns, t([0.725, 0.85, 1.0]))


def test_gae_stops_at_the_padding():
    rewards, values = t([0, 1, 5]), t([0.2, 0.4, 3.0])
    advantages, returns = gae(rewards, values, t([1, 1, 0]), gamma=1.0, lam=1.0)
    # lambda 1: A_t = sum of future rewards - V_t, ending at the last real token
    close(advantages, t([0.8, 0.6, 0.0]))
    close(returns, t([1.0, 1.0, 0.0]))


def test_leave_one_out_baselines():
    close(rloo_advantages(t([1, 2, 6])), t([-3, -1.5, 4.5]))  # 1 - 4, 2 - 3.5, 6 - 1.5
    with pytest.raises(ValueError):
        rloo_advantages(t([1.0]))


def test_the_clipped_policy_loss_by_hand():
    old = t([0.0, 0.0, 0.0])
    new = torch.log(t([1.5, 0.5, 1.1]))  # ratios 1.5, 0.5, 1.1
    advantages, mask = t([1.0, 1.0, -1.0]), t([1, 1, 1])
    result = clipped_policy_loss(new, old, advantages, mask, clip=0.2)
    # token 0: max(-1.5, -1.2) = -1.2 (clipped); token 1: max(-0.5, -0.8) = -0.5;
    # token 2: max(1.1, 1.1) = 1.1
    close(result.loss, (-1.2 - 0.5 + 1.1) / 3)
    assert result.clip_fraction == pytest.approx(1 / 3)
    assert result.approx_kl > 0


def test_the_clipped_value_loss_by_hand():
    values, old, returns, mask = t([2.0, 0.0]), t([1.0, 0.0]), t([1.0, 1.0]), t([1, 1])
    loss, fraction = clipped_value_loss(values, old, returns, mask, clip=0.5)
    # token 0: clipped V 1.5 -> max(1, 0.25) = 1; token 1: both 1 -> 1
    close(loss, 0.5 * (1.0 + 1.0) / 2)
    assert fraction == 0.0
    loss, fraction = clipped_value_loss(t([1.0]), t([3.0]), t([1.0]), t([1]), clip=0.5)
    close(loss, 0.5 * 1.5**2)  # clipped V 2.5 is further from the return 1 than V
    assert fraction == 1.0


def test_the_dpo_loss_by_hand():
    result = dpo_loss(t(-10.0), t(-12.0), t(-11.0), t(-11.0), beta=0.5)
    # rewards 0.5 * 1 = 0.5 and 0.5 * -1 = -0.5: margin 1, loss -log sigmoid(1)
    close(result.loss, -math.log(1 / (1 + math.exp(-1))))
    assert result.accuracy == 1.0
    smoothed = dpo_loss(t(-10.0), t(-12.0), t(-11.0), t(-11.0), beta=0.5, label_smoothing=0.1)
    expected = 0.9 * -math.log(1 / (1 + math.exp(-1))) + 0.1 * -math.log(1 / (1 + math.exp(1)))
    close(smoothed.loss, expected)
    weighted = dpo_loss(t(0.0, 0.0), t(0.0, 0.0), t(0.0, 0.0), t(0.0, 0.0), weight=t(1.0, 3.0))
    close(weighted.loss, math.log(2))


def test_explained_variance_of_a_perfect_and_a_useless_critic():
    returns, mask = t([1.0, 2.0, 3.0]), t([1, 1, 1])
    assert explained_variance(returns, returns, mask) == pytest.approx(1.0)
    assert explained_variance(t([2.0, 2.0, 2.0]), returns, mask) == pytest.approx(0.0)


def test_the_adaptive_kl_controller_moves_beta_towards_the_target():
    controller = AdaptiveKLController(0.1, target=6.0, horizon=100)
    assert controller.update(kl=12.0, samples=10) == pytest.approx(0.1 * (1 + 0.2 * 0.1))
    assert controller.update(kl=3.0, samples=10) == pytest.approx(0.102 * (1 - 0.2 * 0.1))
    fixed = AdaptiveKLController(0.1, target=None)
    assert fixed.update(kl=100.0, samples=10) == 0.1
