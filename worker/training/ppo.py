"""PPO against a reward model, in the InstructGPT form.

Each step samples one answer per prompt from the current policy, scores it with the reward
model (normalised), and pays `-beta * KL(policy || reference)` at every token plus the score at
the last; a critic initialised from the reward model gives values, GAE (gamma 1, lambda 0.95)
turns them into advantages, which are whitened; then several epochs of minibatches optimise
PPO's clipped policy loss and clipped value loss, a micro-batch of answers at a time. Beta
adapts to keep the KL near a target. With LoRA the critic is adapters on the reward model,
which scores with them switched off, so its weights are held once.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path

import torch

from app.round_config import PPOConfig
from worker.training.checkpoints import training_dtype, with_lora
from worker.training.data import Messages
from worker.training.policy import (
    Policy,
    Rollout,
    StepCallback,
    answer_logprobs,
    answer_values,
    micro_batches,
    minibatches,
    run_steps,
)
from worker.training.reward_model import RewardScorer, load_reward_model
from worker.training.rl_math import (
    AdaptiveKLController,
    clipped_policy_loss,
    clipped_value_loss,
    explained_variance,
    gae,
    kl_per_token,
    masked_mean,
    masked_whiten,
    per_token_rewards,
)


def train_ppo(
    conversations: Sequence[Messages],
    base: str | Path,
    reward_model: Path,
    config: PPOConfig,
    *,
    on_step: StepCallback | None = None,
) -> tuple[Policy, list[dict[str, float]]]:
    """Run `config.steps` PPO steps over `conversations` (cycled); the policy and its curve."""
    policy = Policy(base, config)
    step = PPOStep.against(reward_model, policy, config)
    return policy, run_steps(policy, step, conversations, on_step=on_step)


class PPOStep:
    """One PPO update: sample, score, advantages, several epochs of minibatches."""

    def __init__(self, policy: Policy, critic, scorer: RewardScorer, config: PPOConfig) -> None:
        self.policy, self.critic, self.scorer, self.config = policy, critic, scorer, config
        self.policy_optimizer = torch.optim.AdamW(
            policy.trainable_parameters(), lr=config.learning_rate
        )
        self.critic_optimizer = torch.optim.AdamW(
            [p for p in critic.parameters() if p.requires_grad], lr=config.value_learning_rate
        )
        self.kl = AdaptiveKLController(config.beta, config.kl_target, config.kl_horizon)
        self.generator = torch.Generator().manual_seed(config.seed)

    @classmethod
    def against(cls, reward_model: Path, policy: Policy, config: PPOConfig) -> PPOStep:
        """The step of `policy` against the reward model at `reward_model`, its critic
        starting from it. With LoRA the critic is adapters on the reward model, which scores
        with them switched off: one trunk for both."""
        critic, _ = load_reward_model(
            reward_model, policy.device, dtype=training_dtype(policy.device, lora=config.lora)
        )
        if config.lora:
            critic = with_lora(
                critic, task_type="SEQ_CLS", rank=config.lora_rank, top_layers=config.lora_layers
            )
        scorer = RewardScorer(
            reward_model,
            policy.device,
            normalize=config.normalize_rewards,
            adapted=critic if config.lora else None,
        )
        return cls(policy, critic, scorer, config)

    def __call__(self, conversations: list[Messages], *, seed: int) -> dict[str, float]:
        started = time.perf_counter()
        rollout = self.policy.rollout(conversations, samples=1, seed=seed)
        generated = time.perf_counter()
        experience = self._experience(conversations, rollout)
        stats = self._optimise(rollout, experience)
        self.kl.update(experience["kl_sum"], len(rollout))
        mask = rollout.response_mask
        return {
            "reward": experience["scores"].mean().item(),
            "kl": experience["kl_sum"],
            "beta": self.kl.beta,
            "entropy": masked_mean(experience["entropy"], mask).item(),
            "response_length": mask.sum(1).float().mean().item(),
            "explained_variance": explained_variance(
                experience["values"], experience["returns"], mask
            ),
            **stats,
            "generation_seconds": generated - started,
            "seconds": time.perf_counter() - started,
        }

    @torch.no_grad()
    def _experience(self, conversations: list[Messages], rollout: Rollout) -> dict:
        mask = rollout.response_mask
        self.critic.eval()  # as the policy after its rollout: no dropout in what is scored
        logprobs, token_entropy = answer_logprobs(self.policy.model, rollout, with_entropy=True)
        with self.policy.reference() as reference:
            ref_logprobs, _ = answer_logprobs(reference, rollout)
        values = answer_values(self.critic, rollout) * mask
        scores = self.scorer.score(
            [conversations[index] for index in rollout.conversation], rollout.texts
        )
        scores = scores - self.config.missing_eos_penalty * (~rollout.ended).float()
        kl = kl_per_token(logprobs, ref_logprobs) * mask
        rewards = per_token_rewards(scores, kl, mask, self.kl.beta)
        advantages, returns = gae(
            rewards, values, mask, gamma=self.config.gamma, lam=self.config.lam
        )
        return {
            "logprobs": logprobs,
            "values": values,
            "advantages": masked_whiten(advantages, mask),
            "returns": returns,
            "scores": scores,
            "entropy": token_entropy,
            "kl_sum": kl.sum(1).mean().item(),
        }

    def _optimise(self, rollout: Rollout, experience: dict) -> dict[str, float]:
        config = self.config
        totals = {
            "policy_loss": 0.0,
            "value_loss": 0.0,
            "clip_fraction": 0.0,
            "value_clip_fraction": 0.0,
            "approx_kl": 0.0,
        }
        updates = 0
        self.policy.model.train()
        self.critic.train()
        for _ in range(config.ppo_epochs):
            for index in minibatches(len(rollout), config.minibatch_size, generator=self.generator):
                for part, share in micro_batches(rollout, index, config.micro_batch_tokens):
                    loss, stats = self._loss(rollout.rows(part), experience, part)
                    (share * loss).backward()
                    for name, value in stats.items():
                        totals[name] += share * value
                for optimizer, parameters in (
                    (self.policy_optimizer, self.policy.trainable_parameters()),
                    (self.critic_optimizer, list(self.critic.parameters())),
                ):
                    torch.nn.utils.clip_grad_norm_(parameters, config.max_grad_norm)
                    optimizer.step()
                    optimizer.zero_grad(set_to_none=True)
                updates += 1
        return {name: total / max(1, updates) for name, total in totals.items()}

    def _loss(
        self, rows: Rollout, experience: dict, index: torch.Tensor
    ) -> tuple[torch.Tensor, dict[str, float]]:
        """PPO's loss on some of the rollout's rows (`index`): the clipped policy loss plus
        the weighted clipped value loss; and its parts and clipping statistics."""
        mask = rows.response_mask
        logprobs, _ = answer_logprobs(self.policy.model, rows)
        policy = clipped_policy_loss(
            logprobs,
            experience["logprobs"][index],
            experience["advantages"][index],
            mask,
            clip=self.config.clip,
        )
        value_loss, value_clip = clipped_value_loss(
            answer_values(self.critic, rows),
            experience["values"][index],
            experience["returns"][index],
            mask,
            clip=self.config.value_clip,
        )
        stats = {
            "policy_loss": policy.loss.item(),
            "value_loss": value_loss.item(),
            "clip_fraction": policy.clip_fraction,
            "value_clip_fraction": value_clip,
            "approx_kl": policy.approx_kl,
        }
        return policy.loss + self.config.value_coefficient * value_loss, stats
