"""The policy under optimisation: loading it with its frozen reference, rollouts through the
generation engine, and per-token log-probabilities and values of the answers it wrote.

Shared by PPO, RLOO and DPO. Sequences use one layout throughout, the engine's: B rows, each
a prompt left-padded to a common width P and an answer right-padded to a common width T, so
that the logits that predict answer tokens are always the columns P-1 .. P+T-2, whatever the
row.

With LoRA the reference is the same model with its adapters switched off, so the weights are
held once; with full fine-tuning the reference is a frozen copy.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import torch
from torch.utils.checkpoint import checkpoint
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedModel

from app.round_config import PolicyConfig
from worker.serving.engine import GenerationEngine, Sampling, seeded
from worker.training import distributed
from worker.training.checkpoints import (
    atomic_directory,
    from_folder,
    resolve_device,
    training_dtype,
    with_lora,
    write_pretrained,
)
from worker.training.data import Messages, pad_rows
from worker.training.optimisation import autocast
from worker.training.reward_model import model_parts, shared_prefix_hidden
from worker.training.rl_math import entropy, token_logprobs

StepCallback = Callable[[dict[str, float]], None]
"""Hears each optimisation step's metrics."""


@dataclass
class Rollout:
    """Answers sampled from the policy, as token tensors in the shared layout."""

    prompt_ids: torch.Tensor  # (B, P) left-padded
    prompt_mask: torch.Tensor  # (B, P) 1 on prompt tokens, 0 on padding
    response_ids: torch.Tensor  # (B, T) right-padded, end-of-turn token included when sampled
    response_mask: torch.Tensor  # (B, T) 1 on answer tokens, 0 on padding
    texts: list[str]
    conversation: list[int]
    """Index of the conversation each row answers."""
    ended: torch.Tensor
    """(B,) bool: the answer ended by itself rather than at the token limit."""

    def __len__(self) -> int:
        return len(self.texts)

    def rows(self, index: torch.Tensor) -> Rollout:
        """The rollout restricted to rows `index`."""
        picked = index.tolist()
        return Rollout(
            self.prompt_ids[index],
            self.prompt_mask[index],
            self.response_ids[index],
            self.response_mask[index],
            [self.texts[i] for i in picked],
            [self.conversation[i] for i in picked],
            self.ended[index],
        )

    @classmethod
    def from_tokens(
        cls,
        prompts: Sequence[list[int]],
        responses: Sequence[list[int]],
        *,
        pad_id: int,
        device: torch.device,
        texts: Sequence[str] | None = None,
        conversation: Sequence[int] | None = None,
        ended: Sequence[bool] | None = None,
    ) -> Rollout:
        prompt_ids, prompt_mask = pad_rows(list(prompts), pad_id, left=True)
        response_ids, response_mask = pad_rows(
            [list(r) or [pad_id] for r in responses], pad_id, left=False
        )
        for row, response in enumerate(responses):
            response_mask[row, len(response) :] = 0  # an empty answer keeps one masked slot
        return cls(
            prompt_ids.to(device),
            prompt_mask.to(device),
            response_ids.to(device),
            response_mask.to(device),
            list(texts or [""] * len(prompts)),
            list(conversation if conversation is not None else range(len(prompts))),
            torch.tensor(list(ended or [True] * len(prompts)), device=device),
        )


class Policy:
    """The model being optimised, its reference, and the engine that samples from it."""

    def __init__(self, base: str | Path, config: PolicyConfig) -> None:
        self.config = config
        self.device = resolve_device(config.device)
        torch.manual_seed(config.seed)
        self.tokenizer = from_folder(AutoTokenizer, base)
        model = load_policy_model(base, self.device, lora=config.lora)
        if config.lora:
            self.model = with_lora(
                model, task_type="CAUSAL_LM", rank=config.lora_rank, top_layers=config.lora_layers
            )
            self._frozen_reference = None
        else:
            self.model = model
            self._frozen_reference = copy.deepcopy(model).eval().requires_grad_(False)
        self.engine = GenerationEngine(self.model, self.tokenizer, name="policy")

    @property
    def pad_id(self) -> int:
        """The padding token of every tensor layout, the engine's."""
        return self.engine.pad_id

    def trainable_parameters(self) -> list[torch.nn.Parameter]:
        return [parameter for parameter in self.model.parameters() if parameter.requires_grad]

    @contextmanager
    def reference(self) -> Iterator[PreTrainedModel]:
        """The frozen reference policy (the LoRA model with its adapters off)."""
        if self._frozen_reference is not None:
            yield self._frozen_reference
            return
        with self.model.disable_adapter():
            yield self.model

    def rollout(self, conversations: Sequence[Messages], *, samples: int, seed: int) -> Rollout:
        """`samples` answers per conversation from the current weights, batched by the engine:
        of processes training together, each answers its part of `conversations`, with the
        seeds one process would give them."""
        self.model.eval()
        sampling = Sampling(
            max_new_tokens=self.config.max_new_tokens,
            temperature=self.config.temperature,
            top_p=self.config.top_p,
            seed=seed,
        )
        mine = distributed.part(len(conversations))
        prompts = [
            self.engine.encode_chat(conversations[index])[-self.config.max_prompt_tokens :]
            for index in mine
        ]
        return sample_answers(self.engine, prompts, sampling, samples=samples, first=mine.start)

    def close(self) -> None:
        self.engine.close(drain=False)

    def merged(self) -> PreTrainedModel:
        """The trained policy as a plain model (LoRA adapters merged in)."""
        return self.model.merge_and_unload() if self.config.lora else self.model

    def save(self, path: Path) -> Path:
        with atomic_directory(path) as tmp:
            write_pretrained(tmp, self.merged(), self.tokenizer)
        return path


def load_policy_model(base: str | Path, device: torch.device, *, lora: bool) -> PreTrainedModel:
    """The weights of the policy at `base` on `device`, in the dtype it trains in."""
    model = from_folder(AutoModelForCausalLM, base, dtype=training_dtype(device, lora=lora))
    return model.to(device)


def sample_answers(
    engine: GenerationEngine,
    prompts: Sequence[list[int]],
    sampling: Sampling,
    *,
    samples: int,
    first: int = 0,
    on_answer: Callable[[int, int], None] | None = None,
) -> Rollout:
    """`samples` answers to each prompt (token ids), all submitted at once so that the engine
    batches them: B = prompts x samples rows, a prompt's answers together. The prompts are
    conversations `first`, `first + 1`, ... (`Rollout.conversation`); sample j of
    conversation i uses seed `sampling.seed + i * samples + j`.
    `on_answer(done, total)` hears each answer as it is collected, in order."""
    numbers = range(first, first + len(prompts))
    generations = engine.submit_many(
        [
            (prompt, seeded(sampling, number * samples + sample))
            for number, prompt in zip(numbers, prompts, strict=True)
            for sample in range(samples)
        ]
    )
    completions = []
    for generation in generations:
        completions.append(generation.wait())
        if on_answer is not None:
            on_answer(len(completions), len(generations))
    return Rollout.from_tokens(
        [prompt for prompt in prompts for _ in range(samples)],
        [list(completion.token_ids) for completion in completions],
        pad_id=engine.pad_id,
        device=engine.device,
        texts=[completion.text for completion in completions],
        conversation=[number for number in numbers for _ in range(samples)],
        ended=[completion.finish_reason == "stop" for completion in completions],
    )


def answer_logprobs(
    model: PreTrainedModel, rollout: Rollout, *, with_entropy: bool = False
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """log p(answer token) for every answer position `(B, T)`, and optionally the entropy of
    each position's distribution (no gradient). Only the answers' logits are computed, a chunk
    of positions at a time (`LOGIT_CHUNK`): the full `(B, T, V)` logits of a 50k vocabulary
    would be most of a step's memory. With gradients, each chunk's logits are recomputed in
    the backward pass instead of being kept."""
    backbone, lm_head = model_parts(model)
    with autocast(rollout.response_ids.device):
        hidden = answer_hidden(backbone, rollout)  # (B, T, H)
    rows, length = rollout.response_ids.shape
    flat_hidden = hidden.reshape(rows * length, -1)  # (B * T, H)
    flat_tokens = rollout.response_ids.reshape(-1)  # (B * T,)
    recompute = torch.is_grad_enabled()
    parts = []
    for start in range(0, rows * length, LOGIT_CHUNK):
        chunk = (
            lm_head,
            flat_hidden[start : start + LOGIT_CHUNK],
            flat_tokens[start : start + LOGIT_CHUNK],
            with_entropy,
        )
        parts.append(
            checkpoint(_chunk_logprobs, *chunk, use_reentrant=False)
            if recompute
            else _chunk_logprobs(*chunk)
        )
    logprobs = torch.cat([part for part, _ in parts]).view(rows, length)
    if not with_entropy:
        return logprobs, None
    return logprobs, torch.cat([part for _, part in parts]).view(rows, length)


LOGIT_CHUNK = 256
"""Answer positions whose logits exist at once: 256 x 49152 fp32 is 50 MB (with its
log-softmax and, in the backward pass, their gradients, about four times that). 1024 took
a DPO step on long answers 680 MB higher, and no faster."""


def _chunk_logprobs(
    lm_head: torch.nn.Module, hidden: torch.Tensor, tokens: torch.Tensor, with_entropy: bool
) -> tuple[torch.Tensor, torch.Tensor]:
    """(log-probs, entropies without gradient) of one chunk of positions."""
    with autocast(hidden.device):
        logits = lm_head(hidden)
    if not with_entropy:
        return token_logprobs(logits, tokens), logits.new_empty(0)
    with torch.no_grad():
        entropies = entropy(logits.detach())
    return token_logprobs(logits, tokens), entropies


def answer_values(critic: PreTrainedModel, rollout: Rollout) -> torch.Tensor:
    """The critic's value of each answer position `(B, T)`: its head applied to the hidden
    state that predicts that token."""
    backbone, head = model_parts(critic)
    with autocast(rollout.response_ids.device):
        return head(answer_hidden(backbone, rollout)).squeeze(-1).float()


def answer_hidden(backbone: torch.nn.Module, rollout: Rollout) -> torch.Tensor:
    """The hidden states that predict each answer token `(B, T, H)`: the prompt's last one,
    then the answer's own but its last. Rows answering the same conversation share one run
    of its prompt (C conversations: C prompt runs for B rows)."""
    firsts: dict[int, int] = {}
    for row, conversation in enumerate(rollout.conversation):
        firsts.setdefault(conversation, row)
    prompt_rows = torch.tensor(list(firsts.values()), device=rollout.prompt_ids.device)  # (C,)
    slot = {conversation: index for index, conversation in enumerate(firsts)}
    owner = torch.tensor(
        [slot[conversation] for conversation in rollout.conversation],
        device=rollout.prompt_ids.device,
    )  # (B,) each row's conversation, an index into prompt_rows
    last_prompt, hidden = shared_prefix_hidden(
        backbone,
        rollout.prompt_ids.index_select(0, prompt_rows),
        rollout.prompt_mask.index_select(0, prompt_rows),
        owner,
        rollout.response_ids,
        rollout.response_mask,
    )  # (B, H) and (B, T, H)
    return torch.cat([last_prompt.unsqueeze(1), hidden[:, :-1]], dim=1)


def minibatches(size: int, minibatch: int, *, generator: torch.Generator) -> Iterator[torch.Tensor]:
    """Shuffled indices of `size` rows in as many chunks as the processes' rows make
    minibatches of `minibatch` (as even as may be): each process's chunks are its part of
    each minibatch, and all take the same number of optimiser steps."""
    count = math.ceil(distributed.sum_of(size) / minibatch)
    order = torch.randperm(size, generator=generator)
    yield from order.tensor_split(count)


def micro_batches(
    rollout: Rollout, index: torch.Tensor, max_tokens: int
) -> Iterator[tuple[torch.Tensor, float]]:
    """Rows `index` of `rollout` in micro-batches of at most `max_tokens` padded tokens (a row
    at least), each with its share of the answer tokens of those rows (of every process's rows
    `index`, when several share the batch): a loss averaged over all their tokens is the sum
    over micro-batches of each one's average times its share, so the micro-batches' gradients
    add up to the whole batch's in the memory of one of them."""
    width = rollout.prompt_ids.shape[1] + rollout.response_ids.shape[1]
    rows_per_part = max(1, max_tokens // width)
    tokens = rollout.response_mask[index].sum(1).float()
    total = distributed.summed(tokens.sum()).clamp(min=1)
    for part, part_tokens in zip(
        index.split(rows_per_part), tokens.split(rows_per_part), strict=True
    ):
        yield part, (part_tokens.sum() / total).item()


def prompt_batches(
    conversations: Sequence[Messages], steps: int, per_step: int, seed: int
) -> list[list[Messages]]:
    """`steps` batches of `per_step` prompts, going through a seeded shuffle of all prompts
    before repeating any."""
    if not conversations:
        raise ValueError("no prompts to train on")
    generator = torch.Generator().manual_seed(seed)
    order: list[int] = []
    while len(order) < steps * per_step:
        order += torch.randperm(len(conversations), generator=generator).tolist()
    return [
        [conversations[index] for index in order[step * per_step : (step + 1) * per_step]]
        for step in range(steps)
    ]


def run_steps(
    policy: Policy,
    step: Callable[..., dict[str, float]],
    conversations: Sequence[Messages],
    *,
    on_step: StepCallback | None = None,
) -> list[dict[str, float]]:
    """Call `step(prompts, seed=...)` on `config.steps` batches of `config.prompts_per_step`
    prompts (the policy's `OnlineConfig`); the curve of metrics. The policy's engine is closed
    at the end, whatever happens."""
    config = policy.config
    curve = []
    try:
        batches = prompt_batches(conversations, config.steps, config.prompts_per_step, config.seed)
        for number, batch in enumerate(batches, start=1):
            metrics = {"step": number, **step(batch, seed=config.seed + number)}
            curve.append(metrics)
            if on_step is not None:
                on_step(metrics)
    finally:
        policy.close()
    return curve
