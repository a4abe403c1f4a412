"""DPO (Rafailov et al. 2023): the policy learns straight from a snapshot's pairs, offline.

No reward model and no sampling: the loss raises the policy's log-likelihood ratio (against
the reference) of the chosen answer over the rejected one. The reference's log-probabilities
are computed once, before training, and each prompt and answer is encoded once. Ties (0.5
targets) say nothing about which answer to prefer and are left out; rater trust weighs pairs.

Shapes: N pairs of a batch, B its distinct answers (an answer in several pairs is run once),
T answer tokens.

    python -m worker.training.dpo --data pairs.jsonl --base models/base --out models/dpo-1
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from pathlib import Path

import torch
from transformers import PreTrainedModel

from app.pairs import Pair
from app.round_config import DPOConfig
from worker.training import distributed
from worker.training.cli import (
    PAIRS,
    fail,
    parse_settings,
    phase_lines,
    read_pairs,
    save_and_report,
    step_bar,
    trainer_parser,
)
from worker.training.data import PreferenceBatch, PreferenceBatcher
from worker.training.optimisation import optimiser_step, planned_steps
from worker.training.policy import Policy, Rollout, StepCallback, answer_logprobs
from worker.training.rl_math import DPOLoss, dpo_loss

REFERENCE_PASS = "reference log-probs"
"""The pass before the steps, as progress names it."""


def train_dpo(
    pairs: Sequence[Pair],
    base: str | Path,
    config: DPOConfig,
    *,
    on_step: StepCallback | None = None,
    on_reference: Callable[[int, int], None] | None = None,
) -> tuple[Policy, list[dict[str, float]]]:
    """Optimise the policy on the strict `train` pairs; the policy and its curve.
    `on_reference(done, total)` hears the batches of the reference pass that comes first."""
    train = strict_training_pairs(pairs)
    if not train:
        raise ValueError("no strict training pairs for DPO")
    policy = Policy(base, config)
    try:
        batcher = PreferenceBatcher(train, policy.tokenizer, max_length=config.max_length)
        # 1. Reference: the frozen reference's log-probability of every answer, once
        reference = _reference_logps(policy, batcher, config, on_reference)
        # 2. Optimise: epochs of shuffled batches of pairs, one optimiser step a batch
        optimizer = torch.optim.AdamW(policy.trainable_parameters(), lr=config.learning_rate)
        curve: list[dict[str, float]] = []
        for epoch in range(config.epochs):
            for batch in batcher.batches(
                config.batch_pairs, shuffle=True, seed=config.seed + epoch
            ):
                metrics = {
                    "step": len(curve) + 1,
                    **dpo_update(policy, optimizer, batch, reference, config),
                }
                curve.append(metrics)
                if on_step is not None:
                    on_step(metrics)
    finally:
        policy.close()
    return policy, curve


def strict_training_pairs(pairs: Sequence[Pair]) -> list[Pair]:
    """The pairs DPO trains on: the `train` split's, ties (0.5 targets) left out."""
    return [pair for pair in pairs if pair.split == "train" and pair.target == 1.0]


@torch.no_grad()
def _reference_logps(
    policy: Policy,
    batcher: PreferenceBatcher,
    config: DPOConfig,
    on_batch: Callable[[int, int], None] | None = None,
) -> dict[tuple, torch.Tensor]:
    """The reference's summed log-probability of every answer, once, keyed by tokens."""
    table: dict[tuple, torch.Tensor] = {}
    batches = list(batcher.batches(config.batch_pairs, shuffle=False))
    with policy.reference() as reference:
        reference.eval()
        for done, batch in enumerate(batches, start=1):
            mine = batch.subset(distributed.part(batch.size))  # this process's part
            table.update(distributed.gathered(_reference_entries(reference, policy, mine)))
            if on_batch is not None:
                on_batch(done, len(batches))
    return table


def _reference_entries(
    reference: PreTrainedModel, policy: Policy, batch: PreferenceBatch
) -> list[tuple[tuple, torch.Tensor]]:
    """(key, reference log-probability) of each pair's chosen and rejected answer."""
    if not batch.size:
        return []
    answers, _ = _answer_logps(reference, policy, batch)  # (B,)
    chosen_keys, rejected_keys = _pair_keys(batch)
    return [
        *zip(chosen_keys, answers[batch.chosen], strict=True),
        *zip(rejected_keys, answers[batch.rejected], strict=True),
    ]


def dpo_update(
    policy: Policy,
    optimizer: torch.optim.Optimizer,
    batch: PreferenceBatch,
    reference: dict[tuple, torch.Tensor],
    config: DPOConfig,
) -> dict[str, float]:
    """One optimiser step on `batch`, whose answers' reference log-probs are in `reference`.
    The batch runs in micro-batches of at most `config.micro_batch_tokens` tokens whose
    gradients add up: the step of one pass over the batch, in a fraction of its memory."""
    started = time.perf_counter()
    policy.model.train()
    total_weight = sum(batch.weight)
    # 2a. Loss and gradients, a micro-batch of pairs at a time (of this process's part of the
    #     batch when several train together; then every process's micro-batches, in order)
    mine = batch.subset(distributed.part(batch.size))
    parts = [
        _backward(policy, part, reference, config, total_weight)
        for part in mine.micro_batches(config.micro_batch_tokens)
    ]
    parts = distributed.gathered(parts)
    # 2b. One optimiser step on the batch's summed gradients (all processes')
    distributed.sum_gradients(policy.trainable_parameters())
    optimiser_step(policy.trainable_parameters(), optimizer, max_grad_norm=config.max_grad_norm)
    # 2c. The batch's metrics, from its micro-batches' detached log-probs
    chosen, rejected, ref_chosen, ref_rejected, lengths, weight = (
        torch.cat(column) for column in zip(*parts, strict=True)
    )  # (N,) each
    result = _loss(chosen, rejected, ref_chosen, ref_rejected, weight, config)
    return {
        "loss": result.loss.item(),
        "chosen_nll": _chosen_nll(chosen, lengths, weight).item(),
        "accuracy": result.accuracy,
        "reward_margin": (result.chosen_reward - result.rejected_reward).mean().item(),
        "kl": ((chosen - ref_chosen) + (rejected - ref_rejected)).mean().item() / 2,
        "seconds": time.perf_counter() - started,
    }


def _backward(
    policy: Policy,
    part: PreferenceBatch,
    reference: dict[tuple, torch.Tensor],
    config: DPOConfig,
    total_weight: float,
) -> tuple[torch.Tensor, ...]:
    """Backpropagate one micro-batch's share of the step's loss (DPO plus the chosen answers'
    NLL on `config.nll_pairs`, both weighted sums over the step's total pair weight); its
    pairs' log-probs, lengths and weights."""
    answers, lengths = _answer_logps(policy.model, policy, part)  # (B,) each
    chosen, rejected = answers[part.chosen], answers[part.rejected]  # (N,) each
    ref_chosen, ref_rejected = (
        torch.stack([reference[key] for key in keys]) for keys in _pair_keys(part)
    )  # (N,) each
    weight = torch.tensor(part.weight, device=policy.device)  # (N,)
    chosen_lengths = lengths[part.chosen]
    dpo = _loss(chosen, rejected, ref_chosen, ref_rejected, weight, config).loss
    nll_weight = weight
    if config.nll_pairs == "rewrites":
        nll_weight = weight * torch.tensor(part.rewrite, device=policy.device)
    nll = -(chosen / chosen_lengths * nll_weight).sum()  # each pair's push, as under RPO
    (dpo * weight.sum() / total_weight + config.nll_coefficient * nll / total_weight).backward()
    values = (chosen, rejected, ref_chosen, ref_rejected, chosen_lengths, weight)
    return tuple(value.detach() for value in values)


def _loss(chosen, rejected, ref_chosen, ref_rejected, weight, config: DPOConfig) -> DPOLoss:
    return dpo_loss(
        chosen,
        rejected,
        ref_chosen,
        ref_rejected,
        beta=config.beta,
        label_smoothing=config.label_smoothing,
        weight=weight,
    )


def _chosen_nll(chosen: torch.Tensor, lengths: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """The chosen answers' mean token NLL, a weighted mean over pairs (RPO's term)."""
    return -(chosen / lengths * weight).sum() / weight.sum()


def _answer_logps(
    model, policy: Policy, batch: PreferenceBatch
) -> tuple[torch.Tensor, torch.Tensor]:
    """Summed log-probability of each distinct answer of the batch `(B,)`, and its length in
    tokens `(B,)`."""
    rollout = _rollout(policy, batch)
    logprobs, _ = answer_logprobs(model, rollout)  # (B, T)
    return (logprobs * rollout.response_mask).sum(1), rollout.response_mask.sum(1)


def _rollout(policy: Policy, batch: PreferenceBatch) -> Rollout:
    """The batch's distinct answers, each after its prompt, in the policy's layout."""
    return Rollout.from_tokens(
        [batch.prompt_ids[index] for index in batch.response_prompt],
        batch.response_ids,
        pad_id=policy.pad_id,
        device=policy.device,
        conversation=batch.response_prompt,
    )


def _pair_keys(batch: PreferenceBatch) -> tuple[list[tuple], list[tuple]]:
    """A stable key for each pair's chosen and rejected answer (prompt and answer tokens)."""
    keys = [
        (tuple(batch.prompt_ids[batch.response_prompt[index]]), tuple(answer))
        for index, answer in enumerate(batch.response_ids)
    ]
    return [keys[index] for index in batch.chosen], [keys[index] for index in batch.rejected]


def dpo_steps_on_pairs(
    policy: Policy, optimizer: torch.optim.Optimizer, pairs: Sequence[Pair], config: DPOConfig
) -> list[dict[str, float]]:
    """One pass of updates over freshly made `pairs` (online DPO): their reference log-probs
    first, then one step per batch."""
    batcher = PreferenceBatcher(list(pairs), policy.tokenizer, max_length=config.max_length)
    reference = _reference_logps(policy, batcher, config)
    return [
        dpo_update(policy, optimizer, batch, reference, config)
        for batch in batcher.batches(config.batch_pairs, shuffle=True, seed=config.seed)
    ]


def main(argv: list[str] | None = None) -> int:
    parser = trainer_parser(
        __spec__.name, "Optimise a policy on preference pairs with DPO.", data=PAIRS
    )
    args, config = parse_settings(parser, DPOConfig, argv)
    pairs = strict_training_pairs(read_pairs(args.data))
    if not pairs:
        fail(f"{args.data} holds no strict training pairs (split train, target 1)")
    steps = planned_steps(config.epochs, len(pairs), config.batch_pairs)
    on_reference = phase_lines(REFERENCE_PASS, lines=args.step_lines)
    with step_bar(steps, "DPO", lines=args.step_lines) as on_step:
        policy, curve = train_dpo(
            pairs, args.base, config, on_step=on_step, on_reference=on_reference
        )
    return save_and_report(policy, curve, args.out)


if __name__ == "__main__":
    raise SystemExit(main())
