"""RLOO: REINFORCE with a leave-one-out baseline (Ahmadian et al. 2024), no critic.

Each step samples k answers per prompt; an answer's return is its normalised reward-model
score minus `beta` times its summed KL to the reference, and its advantage is that return minus
the mean return of the prompt's other k - 1 answers. One policy-gradient update per batch, so
the sampling log-probs are the update's own (detached); the update runs a micro-batch of
answers at a time. Processes training together each sample their part of a step's prompts, all
k answers of a prompt in one process (`worker.training.distributed`).

Shapes: B answers (k per prompt, a prompt's together), T answer tokens (the longest answer's;
`mask` marks the real ones).

    python -m worker.training.rloo --data prompts.jsonl --base models/base \
        --reward-model models/rm-1 --out models/rloo-1
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path

import torch

from app.round_config import RLOOConfig
from worker.training import distributed
from worker.training.cli import online_main
from worker.training.data import Messages
from worker.training.optimisation import optimiser_step
from worker.training.policy import (
    Policy,
    Rollout,
    StepCallback,
    answer_logprobs,
    micro_batches,
    run_steps,
)
from worker.training.reward_model import RewardScorer
from worker.training.rl_math import clipped_policy_loss, kl_per_token, rloo_advantages


def train_rloo(
    conversations: Sequence[Messages],
    base: str | Path,
    reward_model: Path,
    config: RLOOConfig,
    *,
    on_step: StepCallback | None = None,
) -> tuple[Policy, list[dict[str, float]]]:
    """Run `config.steps` RLOO steps over `conversations` (cycled); the policy and its curve."""
    policy = Policy(base, config)
    scorer = RewardScorer(reward_model, policy.device, normalize=config.normalize_rewards)
    step = RLOOStep(policy, scorer, config)
    return policy, run_steps(policy, step, conversations, on_step=on_step)


class RLOOStep:
    """One RLOO update: sample, score, baseline, one gradient step."""

    def __init__(self, policy: Policy, scorer: RewardScorer, config: RLOOConfig) -> None:
        self.policy, self.scorer, self.config = policy, scorer, config
        self.optimizer = torch.optim.AdamW(policy.trainable_parameters(), lr=config.learning_rate)

    def __call__(self, conversations: list[Messages], *, seed: int) -> dict[str, float]:
        started = time.perf_counter()
        k = self.config.samples_per_prompt
        # 1. Rollout: sample k answers per prompt from the current policy
        rollout = self.policy.rollout(conversations, samples=k, seed=seed)
        generated = time.perf_counter()
        mask = rollout.response_mask  # (B, T) 1 on answer tokens, 0 on padding
        # 2. Score: log-probs under the policy and the reference, and the reward model's score
        # of each whole answer, less the penalty if it was cut off
        with torch.no_grad():
            logprobs, token_entropy = answer_logprobs(self.policy.model, rollout, with_entropy=True)
            with self.policy.reference() as reference:
                ref_logprobs, _ = answer_logprobs(reference, rollout)  # (B, T)
            scores = self.scorer.score(
                [conversations[index] for index in rollout.conversation], rollout.texts
            )  # (B,)
            scores = scores - self.config.missing_eos_penalty * (~rollout.ended).float()
        # 3. Advantages: the return (score less beta times the answer's KL) less the mean
        # return of the prompt's other k - 1 answers
        kl = (kl_per_token(logprobs, ref_logprobs) * mask).sum(1)  # (B,)
        returns = scores - self.config.beta * kl  # (B,)
        advantages = rloo_advantages(returns.view(-1, k)).view(-1)  # (prompts, k) -> (B,)
        # 4. Optimise: one policy-gradient step on every answer
        loss = self._update(rollout, advantages)
        totals = distributed.sums(  # the whole step's, over the processes sharing it
            {
                "answers": len(rollout),
                "tokens": mask.sum().item(),
                "reward": scores.sum().item(),
                "kl": kl.sum().item(),
                "entropy": (token_entropy * mask).sum().item(),
                "policy_loss": loss,
            }
        )
        answers, tokens = totals["answers"], totals["tokens"]
        return {
            "reward": totals["reward"] / answers,
            "kl": totals["kl"] / answers,
            "entropy": totals["entropy"] / max(1, tokens),
            "policy_loss": totals["policy_loss"],
            "response_length": tokens / answers,
            "generated_tokens": int(tokens),
            "generation_seconds": generated - started,
            "seconds": time.perf_counter() - started,
        }

    def _update(self, rollout: Rollout, advantages: torch.Tensor) -> float:
        """One policy-gradient step on every answer, a micro-batch of them at a time (the
        log-probabilities above, taken without gradients, spare keeping the whole batch's
        activations); this process's part of its loss."""
        self.policy.model.train()
        loss = 0.0
        everything = torch.arange(len(rollout), device=advantages.device)
        for part, share in micro_batches(rollout, everything, self.config.micro_batch_tokens):
            rows = rollout.rows(part)
            logprobs, _ = answer_logprobs(self.policy.model, rows)  # (b, T), b rows of the part
            result = clipped_policy_loss(  # at ratio 1: the policy gradient of the advantages
                logprobs,
                logprobs.detach(),
                advantages[part].unsqueeze(1).expand_as(logprobs),  # (b,) -> (b, T)
                rows.response_mask,
            )
            (share * result.loss).backward()
            loss += share * result.loss.item()
        distributed.sum_gradients(self.policy.trainable_parameters())
        optimiser_step(
            self.policy.trainable_parameters(),
            self.optimizer,
            max_grad_norm=self.config.max_grad_norm,
        )
        return loss


def main(argv: list[str] | None = None) -> int:
    return online_main(__spec__.name, argv, RLOOConfig, train_rloo, "RLOO")


if __name__ == "__main__":
    raise SystemExit(main())
