"""PPO against a reward model, in the InstructGPT form.

Each step samples one answer per prompt from the current policy, scores it with the reward
model (normalised), and pays `-beta * KL(policy || reference)` at every token plus the score at
the last; a critic initialised from the reward model gives values, GAE (gamma 1, lambda 0.95)
turns them into advantages, which are whitened; then several epochs of minibatches optimise
PPO's clipped policy loss and clipped value loss, a micro-batch of answers at a time. Beta
adapts to keep the KL near a target. With LoRA the critic is adapters on the reward model,
which scores with them switched off, so its weights are held once. Processes training together
each sample their part of a step's prompts and take their part of each minibatch; whitening,
the KL and the metrics are the whole step's (`worker.training.distributed`).

Shapes: B answers (one per prompt), T answer tokens (the longest answer's; `mask` marks the
real ones).

    python -m worker.training.ppo --data prompts.jsonl --base models/base \
        --reward-model models/rm-1 --out models/ppo-1
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from app.round_config import PPOConfig
from worker.training import distributed
from worker.training.checkpoints import training_dtype, with_lora
from worker.training.cli import online_main
from worker.training.data import Messages
from worker.training.optimisation import optimiser_step
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


@dataclass
class Experience:
    """What a step's rollout measured, once, with the weights that sampled it: the fixed
    targets of the step's epochs of minibatches."""

    logprobs: torch.Tensor
    """(B, T) log-probability of each answer token under the sampling policy (the ratio's
    denominator)."""
    values: torch.Tensor
    """(B, T) the critic's value before each answer token, 0 past the answer's end."""
    advantages: torch.Tensor
    """(B, T) GAE's advantages, whitened over the answer tokens."""
    returns: torch.Tensor
    """(B, T) the value targets: GAE's advantages (before whitening) plus the values."""
    scores: torch.Tensor
    """(B,) each answer's reward-model score, less the penalty if it was cut off."""
    entropy: torch.Tensor
    """(B, T) entropy of the policy's distribution at each answer position."""
    kl: float
    """KL to the reference summed over an answer's tokens, the mean over answers."""

    def rows(self, index: torch.Tensor) -> Experience:
        """The experience of rows `index` (as `Rollout.rows`)."""
        return Experience(
            self.logprobs[index],
            self.values[index],
            self.advantages[index],
            self.returns[index],
            self.scores[index],
            self.entropy[index],
            self.kl,
        )


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
        # 1. Rollout: sample one answer per prompt from the current policy
        rollout = self.policy.rollout(conversations, samples=1, seed=seed)
        generated = time.perf_counter()
        # 2. Score the answers and 3. turn scores, KL and values into advantages
        experience = self._experience(conversations, rollout)
        # 4. Optimise: epochs of minibatches of the clipped policy and value losses
        stats = self._optimise(rollout, experience)
        # 5. Adapt beta towards the KL target, on the whole step's answers
        mask = rollout.response_mask  # (B, T)
        step = distributed.sums(
            {
                "answers": len(rollout),
                "tokens": mask.sum().item(),
                "reward": experience.scores.sum().item(),
                "entropy": (experience.entropy * mask).sum().item(),
            }
        )
        answers, tokens = step["answers"], step["tokens"]
        self.kl.update(experience.kl, int(answers))
        return {
            "reward": step["reward"] / answers,
            "kl": experience.kl,
            "beta": self.kl.beta,
            "entropy": step["entropy"] / max(1, tokens),
            "response_length": tokens / answers,
            "explained_variance": explained_variance(
                experience.values, experience.returns, mask, total=distributed.summed
            ),
            **distributed.sums(stats),
            "generation_seconds": generated - started,
            "seconds": time.perf_counter() - started,
        }

    @torch.no_grad()
    def _experience(self, conversations: list[Messages], rollout: Rollout) -> Experience:
        mask = rollout.response_mask  # (B, T) 1 on answer tokens, 0 on padding
        # 2. Score: the answer tokens' log-probs under the policy and the reference and the
        # critic's values, all (B, T); the reward model's score of each whole answer, (B,)
        self.critic.eval()  # as the policy after its rollout: no dropout in what is scored
        logprobs, entropy = answer_logprobs(self.policy.model, rollout, with_entropy=True)
        with self.policy.reference() as reference:
            ref_logprobs, _ = answer_logprobs(reference, rollout)  # (B, T)
        values = answer_values(self.critic, rollout) * mask  # (B, T)
        scores = self.scorer.score(
            [conversations[index] for index in rollout.conversation], rollout.texts
        )  # (B,)
        scores = scores - self.config.missing_eos_penalty * (~rollout.ended).float()
        # 3. Advantages: -beta * KL at every token plus the score at the last, through GAE,
        # whitened over the whole step's answers
        kl = kl_per_token(logprobs, ref_logprobs) * mask  # (B, T)
        rewards = per_token_rewards(scores, kl, mask, self.kl.beta)  # (B, T)
        advantages, returns = gae(
            rewards, values, mask, gamma=self.config.gamma, lam=self.config.lam
        )  # (B, T) each
        kl_totals = distributed.sums({"kl": kl.sum().item(), "answers": len(rollout)})
        return Experience(
            logprobs=logprobs,
            values=values,
            advantages=masked_whiten(advantages, mask, total=distributed.summed),
            returns=returns,
            scores=scores,
            entropy=entropy,
            kl=kl_totals["kl"] / kl_totals["answers"],
        )

    def _optimise(self, rollout: Rollout, experience: Experience) -> dict[str, float]:
        """`ppo_epochs` passes over the answers in shuffled minibatches, one optimiser step of
        the policy and one of the critic per minibatch; this process's part of the mean of the
        losses' statistics."""
        config = self.config
        totals = dict.fromkeys(
            ("policy_loss", "value_loss", "clip_fraction", "value_clip_fraction", "approx_kl"),
            0.0,
        )
        updates = 0
        self.policy.model.train()
        self.critic.train()
        for _ in range(config.ppo_epochs):
            for index in minibatches(len(rollout), config.minibatch_size, generator=self.generator):
                for part, share in micro_batches(rollout, index, config.micro_batch_tokens):
                    loss, stats = self._loss(rollout.rows(part), experience.rows(part))
                    (share * loss).backward()
                    for name, value in stats.items():
                        totals[name] += share * value
                for parameters, optimizer in (
                    (self.policy.trainable_parameters(), self.policy_optimizer),
                    (list(self.critic.parameters()), self.critic_optimizer),
                ):
                    distributed.sum_gradients(parameters)
                    optimiser_step(parameters, optimizer, max_grad_norm=config.max_grad_norm)
                updates += 1
        return {name: total / max(1, updates) for name, total in totals.items()}

    def _loss(self, rows: Rollout, experience: Experience) -> tuple[torch.Tensor, dict[str, float]]:
        """PPO's loss on some of the rollout's rows and their experience: the clipped policy
        loss plus the weighted clipped value loss; and its parts and clipping statistics."""
        mask = rows.response_mask
        logprobs, _ = answer_logprobs(self.policy.model, rows)  # (b, T) with gradients
        policy = clipped_policy_loss(
            logprobs, experience.logprobs, experience.advantages, mask, clip=self.config.clip
        )
        value_loss, value_clip = clipped_value_loss(
            answer_values(self.critic, rows),
            experience.values,
            experience.returns,
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


def main(argv: list[str] | None = None) -> int:
    return online_main(__spec__.name, argv, PPOConfig, train_ppo, "PPO")


if __name__ == "__main__":
    raise SystemExit(main())
