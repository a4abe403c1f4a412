"""Batched sampling from a causal LM with its chat template (until the shared engine lands).

Prompts are sorted by length and generated in batches with left padding and the KV cache, so a
batch wastes little work on padding. Sampling is seeded per batch, so a job is reproducible.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

Conversation = Sequence[dict[str, str]]


@dataclass(frozen=True)
class SamplingParams:
    max_new_tokens: int = 256
    temperature: float = 0.8
    top_p: float = 0.95
    seed: int = 0


def sample_responses(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    conversations: Sequence[Conversation],
    *,
    n: int,
    params: SamplingParams,
    batch_size: int = 16,
    on_batch: Callable[[float], None] | None = None,
) -> list[list[str]]:
    """`n` sampled replies for each conversation, in the conversations' order."""
    prompts = [
        tokenizer.apply_chat_template(
            list(conversation), add_generation_prompt=True, tokenize=False
        )
        for conversation in conversations
    ]
    work = sorted(
        ((index, prompt) for index, prompt in enumerate(prompts) for _ in range(n)),
        key=lambda item: len(item[1]),
    )
    replies: list[list[str]] = [[] for _ in prompts]
    for start in range(0, len(work), batch_size):
        batch = work[start : start + batch_size]
        texts = _generate(model, tokenizer, [prompt for _, prompt in batch], params, start)
        for (index, _), text in zip(batch, texts, strict=True):
            replies[index].append(text)
        if on_batch is not None:
            on_batch(min(1.0, (start + len(batch)) / len(work)))
    return replies


@torch.inference_mode()
def _generate(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    prompts: list[str],
    params: SamplingParams,
    batch_offset: int,
) -> list[str]:
    tokenizer.padding_side = "left"  # decoder-only models continue from the right edge
    inputs = tokenizer(prompts, return_tensors="pt", padding=True, add_special_tokens=False)
    inputs = inputs.to(model.device)
    generator_seed = params.seed * 1_000_003 + batch_offset
    torch.manual_seed(generator_seed)
    output = model.generate(
        **inputs,
        do_sample=params.temperature > 0,
        temperature=params.temperature if params.temperature > 0 else None,
        top_p=params.top_p if params.temperature > 0 else None,
        max_new_tokens=params.max_new_tokens,
        pad_token_id=tokenizer.pad_token_id,
        use_cache=True,
    )
    new_tokens = output[:, inputs["input_ids"].shape[1] :]
    return [text.strip() for text in tokenizer.batch_decode(new_tokens, skip_special_tokens=True)]
