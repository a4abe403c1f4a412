"""The mathematics of policy optimisation, as pure tensor functions.

Nothing here knows about models, tokenizers or databases: each function takes tensors and
returns tensors, so each can be checked against values worked out by hand. Sequences are
right-padded `(batch, tokens)` tensors with a `mask` that is 1 on response tokens. A batch
shared out among processes gives the masked statistics a `total` that sums over them
(`worker.training.distributed.summed`), so that they are the whole batch's.

References: PPO (Schulman et al. 2017), GAE (Schulman et al. 2016), RLHF with a per-token KL
penalty and an adaptive KL coefficient (Ziegler et al. 2019; Ouyang et al. 2022), RLOO
(Ahmadian et al. 2024), DPO (Rafailov et al. 2023), the k3 KL estimator (Schulman 2020).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F

KLEstimator = Literal["k1", "k3"]
Total = Callable[[torch.Tensor], torch.Tensor]
"""A sum over the processes that share a batch; the tensor itself for one process (`alone`)."""


def alone(tensor: torch.Tensor) -> torch.Tensor:
    return tensor


# --- masked statistics ---------------------------------------------------------------------------


def masked_mean(
    values: torch.Tensor, mask: torch.Tensor, dim: int | None = None, *, total: Total = alone
) -> torch.Tensor:
    """Mean over the positions where `mask` is 1 (all of them, or along `dim`)."""
    mask = mask.to(values.dtype)
    if dim is None:
        return total((values * mask).sum()) / total(mask.sum()).clamp(min=1)
    return (values * mask).sum(dim) / mask.sum(dim).clamp(min=1)


def masked_var(values: torch.Tensor, mask: torch.Tensor, *, total: Total = alone) -> torch.Tensor:
    """Unbiased variance over the masked positions."""
    mean = masked_mean(values, mask, total=total)
    count = total(mask.to(values.dtype).sum()).clamp(min=2)
    return total(((values - mean) ** 2 * mask).sum()) / (count - 1)


def masked_whiten(
    values: torch.Tensor, mask: torch.Tensor, *, shift_mean: bool = True, total: Total = alone
) -> torch.Tensor:
    """Zero mean (unless `shift_mean` is off) and unit variance over the masked positions;
    padding stays zero."""
    mean = masked_mean(values, mask, total=total)
    var = masked_var(values, mask, total=total)
    whitened = (values - mean) * torch.rsqrt(var + 1e-8)
    if not shift_mean:
        whitened = whitened + mean
    return whitened * mask


def explained_variance(
    values: torch.Tensor, returns: torch.Tensor, mask: torch.Tensor, *, total: Total = alone
) -> float:
    """1 - Var(returns - values) / Var(returns): 1 is a perfect critic, 0 one that says nothing."""
    variance = masked_var(returns, mask, total=total)
    if variance.item() == 0:
        return float("nan")
    return (1 - masked_var(returns - values, mask, total=total) / variance).item()


# --- log-probabilities, entropy, KL --------------------------------------------------------------


def token_logprobs(logits: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
    """log p(token) under `logits`: `(B, T, V)` and `(B, T)` give `(B, T)`, in fp32."""
    logits = logits.float()
    return logits.gather(-1, tokens.unsqueeze(-1)).squeeze(-1) - logits.logsumexp(-1)


def entropy(logits: torch.Tensor) -> torch.Tensor:
    """Entropy of each position's next-token distribution: `(B, T, V)` gives `(B, T)`."""
    logits = logits.float()
    logp = F.log_softmax(logits, dim=-1)
    return -(logp.exp() * logp).sum(-1)


def kl_per_token(
    logprobs: torch.Tensor, ref_logprobs: torch.Tensor, *, estimator: KLEstimator = "k1"
) -> torch.Tensor:
    """A per-token estimate of KL(policy || reference) from the sampled tokens' log-probs.

    `k1` is `log p - log q`, unbiased but noisy and sometimes negative (InstructGPT's penalty);
    `k3` is `(r - 1) - log r` with `r = q / p`, unbiased and never negative.
    """
    log_ratio = logprobs - ref_logprobs
    if estimator == "k1":
        return log_ratio
    return torch.expm1(-log_ratio) + log_ratio


# --- rewards and advantages ----------------------------------------------------------------------


def last_token_index(mask: torch.Tensor) -> torch.Tensor:
    """The index of each row's last masked position (`(B, T)` gives `(B,)`)."""
    positions = torch.arange(mask.shape[1], device=mask.device).expand_as(mask)
    return (positions * mask.long()).max(dim=1).values


def per_token_rewards(
    scores: torch.Tensor, kl: torch.Tensor, mask: torch.Tensor, beta: float
) -> torch.Tensor:
    """InstructGPT's reward: `-beta * KL` at every response token, plus the reward model's
    score at the last one."""
    rewards = -beta * kl * mask
    rows = torch.arange(scores.shape[0], device=scores.device)
    rewards[rows, last_token_index(mask)] += scores
    return rewards


def gae(
    rewards: torch.Tensor,
    values: torch.Tensor,
    mask: torch.Tensor,
    *,
    gamma: float = 1.0,
    lam: float = 0.95,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Generalised advantage estimation over right-padded responses: `(advantages, returns)`,
    with the value after the last token taken as zero (the episode ends there)."""
    mask = mask.to(values.dtype)
    advantages = torch.zeros_like(values)
    running = torch.zeros_like(values[:, 0])
    for t in reversed(range(values.shape[1])):
        next_value = values[:, t + 1] * mask[:, t + 1] if t + 1 < values.shape[1] else 0.0
        delta = rewards[:, t] + gamma * next_value - values[:, t]
        running = (delta + gamma * lam * running) * mask[:, t]
        advantages[:, t] = running
    return advantages, (advantages + values) * mask


def rloo_advantages(scores: torch.Tensor) -> torch.Tensor:
    """Leave-one-out advantages for `(prompts, k)` scores: each sample's score minus the mean
    of the other k - 1 samples of its prompt."""
    k = scores.shape[1]
    if k < 2:
        raise ValueError("RLOO needs at least two samples per prompt")
    baseline = (scores.sum(dim=1, keepdim=True) - scores) / (k - 1)
    return scores - baseline


# --- losses --------------------------------------------------------------------------------------


@dataclass
class PolicyLoss:
    loss: torch.Tensor
    clip_fraction: float
    approx_kl: float
    """KL(old || new) over this minibatch (k3): how far one update moved the policy."""


def clipped_policy_loss(
    logprobs: torch.Tensor,
    old_logprobs: torch.Tensor,
    advantages: torch.Tensor,
    mask: torch.Tensor,
    *,
    clip: float = 0.2,
) -> PolicyLoss:
    """PPO's clipped surrogate: `max(-A r, -A clip(r, 1 - e, 1 + e))`, averaged over tokens."""
    ratio = torch.exp(logprobs - old_logprobs)
    unclipped = -advantages * ratio
    clipped = -advantages * ratio.clamp(1 - clip, 1 + clip)
    loss = masked_mean(torch.maximum(unclipped, clipped), mask)
    with torch.no_grad():
        clip_fraction = masked_mean((clipped > unclipped).float(), mask).item()
        approx_kl = masked_mean(kl_per_token(old_logprobs, logprobs, estimator="k3"), mask).item()
    return PolicyLoss(loss, clip_fraction, approx_kl)


def clipped_value_loss(
    values: torch.Tensor,
    old_values: torch.Tensor,
    returns: torch.Tensor,
    mask: torch.Tensor,
    *,
    clip: float = 0.2,
) -> tuple[torch.Tensor, float]:
    """PPO's clipped value loss `0.5 max((V - R)^2, (clip(V, V_old +- e) - R)^2)` and the share
    of tokens where the clipped term was the larger."""
    clipped_values = old_values + (values - old_values).clamp(-clip, clip)
    unclipped_error = (values - returns) ** 2
    clipped_error = (clipped_values - returns) ** 2
    loss = 0.5 * masked_mean(torch.maximum(unclipped_error, clipped_error), mask)
    fraction = masked_mean((clipped_error > unclipped_error).float(), mask).item()
    return loss, fraction


@dataclass
class DPOLoss:
    loss: torch.Tensor
    chosen_reward: torch.Tensor
    rejected_reward: torch.Tensor
    accuracy: float


def dpo_loss(
    chosen_logps: torch.Tensor,
    rejected_logps: torch.Tensor,
    ref_chosen_logps: torch.Tensor,
    ref_rejected_logps: torch.Tensor,
    *,
    beta: float = 0.1,
    label_smoothing: float = 0.0,
    weight: torch.Tensor | None = None,
) -> DPOLoss:
    """DPO's sigmoid loss on summed sequence log-probs; `label_smoothing` is the assumed share
    of flipped labels (conservative DPO); `weight` weighs the pairs (e.g. rater trust)."""
    chosen_reward = beta * (chosen_logps - ref_chosen_logps)
    rejected_reward = beta * (rejected_logps - ref_rejected_logps)
    margin = chosen_reward - rejected_reward
    losses = -(1 - label_smoothing) * F.logsigmoid(margin) - label_smoothing * F.logsigmoid(-margin)
    weight = torch.ones_like(losses) if weight is None else weight
    return DPOLoss(
        loss=(losses * weight).sum() / weight.sum(),
        chosen_reward=chosen_reward.detach(),
        rejected_reward=rejected_reward.detach(),
        accuracy=(margin > 0).float().mean().item(),
    )


# --- the KL coefficient --------------------------------------------------------------------------


class AdaptiveKLController:
    """Ziegler et al. (2019): nudge beta so that the observed KL tracks `target`, by at most
    20% of the error per `horizon` samples. A `target` of None keeps beta fixed."""

    def __init__(self, beta: float, target: float | None, horizon: int = 10_000) -> None:
        self.beta = beta
        self.target = target
        self.horizon = horizon

    def update(self, kl: float, samples: int) -> float:
        if self.target is not None:
            error = max(-0.2, min(0.2, kl / self.target - 1))
            self.beta *= 1 + error * samples / self.horizon
        return self.beta
