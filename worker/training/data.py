"""Training batches from preference pairs and demonstrations, for the reward model and SFT.

Conversations go through the model's own chat template. A preference batch keeps the pairs of
one ranking together (InstructGPT) and lists each distinct prompt and each distinct response
once, so the reward model reads a prompt once however many answers it has, and an answer once
however many pairs it is in.
"""

from __future__ import annotations

import random
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, fields

import torch
from transformers import PreTrainedTokenizerBase

from app.pairs import Pair

Messages = Sequence[dict[str, str]]


def encode_turn(
    tokenizer: PreTrainedTokenizerBase, messages: Messages, answer: str, *, max_length: int
) -> tuple[list[int], list[int]]:
    """(prompt ids, answer ids) of `messages` followed by the assistant's `answer`, cut to
    `max_length` tokens by dropping the prompt's start first, then the answer's end."""
    prompt = _template(tokenizer, list(messages), add_generation_prompt=True)
    full = _template(
        tokenizer,
        [*messages, {"role": "assistant", "content": answer}],
        add_generation_prompt=False,
    )
    if full[: len(prompt)] != prompt:  # a template that rewrites earlier turns: split by length
        prompt = full[: len(prompt)]
    answer_ids = full[len(prompt) :]
    answer_ids = (
        answer_ids[: max(1, max_length // 2)] if len(answer_ids) > max_length else answer_ids
    )
    room = max_length - len(answer_ids)
    return prompt[-room:] if room > 0 else prompt[-1:], answer_ids


def _template(tokenizer: PreTrainedTokenizerBase, messages: list, **kwargs) -> list[int]:
    return list(tokenizer.apply_chat_template(messages, tokenize=True, return_dict=False, **kwargs))


@dataclass
class PreferenceBatch:
    """Distinct prompts and responses of a set of pairs, and which pairs compare which."""

    prompt_ids: list[list[int]]
    response_ids: list[list[int]]
    response_prompt: list[int]  # index into prompt_ids for each response
    chosen: list[int]  # index into response_ids
    rejected: list[int]
    target: list[float]
    margin: list[float]
    weight: list[float]
    agreement: list[float | None]
    rewrite: list[bool]
    """Whether each pair's chosen answer was written by a rater (not sampled)."""

    @classmethod
    def empty(cls) -> PreferenceBatch:
        """A batch with no prompts, answers or pairs yet, to be filled in."""
        return cls(*([] for _ in fields(cls)))

    @property
    def size(self) -> int:
        return len(self.chosen)

    def micro_batches(self, max_tokens: int) -> list[PreferenceBatch]:
        """The batch cut into runs of pairs whose padded prompts and answers hold at most
        `max_tokens` tokens (a pair alone may hold more): the activations a backward pass
        keeps grow with the tokens of one forward pass, so this bounds a step's memory. An
        answer shared by pairs in two runs is run in both."""
        runs: list[list[int]] = [[]]
        for index in range(self.size):
            if runs[-1] and self._padded_tokens([*runs[-1], index]) > max_tokens:
                runs.append([])
            runs[-1].append(index)
        if not self.size:
            return []
        return [self._of_pairs(run) for run in runs] if len(runs) > 1 else [self]

    def subset(self, pairs: range) -> PreferenceBatch:
        """These pairs alone (a process's part of the batch); the batch itself for all of them."""
        return self if pairs == range(self.size) else self._of_pairs(pairs)

    def _padded_tokens(self, pairs: Sequence[int]) -> int:
        responses = {self.chosen[i] for i in pairs} | {self.rejected[i] for i in pairs}
        prompt = max(len(self.prompt_ids[self.response_prompt[r]]) for r in responses)
        answer = max(len(self.response_ids[r]) for r in responses)
        return len(responses) * (prompt + answer)

    def _of_pairs(self, pairs: Sequence[int]) -> PreferenceBatch:
        """These pairs alone, with only the prompts and answers they compare."""
        responses = sorted({self.chosen[i] for i in pairs} | {self.rejected[i] for i in pairs})
        prompts = sorted({self.response_prompt[r] for r in responses})
        new_response = {old: new for new, old in enumerate(responses)}
        new_prompt = {old: new for new, old in enumerate(prompts)}
        return PreferenceBatch(
            prompt_ids=[self.prompt_ids[p] for p in prompts],
            response_ids=[self.response_ids[r] for r in responses],
            response_prompt=[new_prompt[self.response_prompt[r]] for r in responses],
            chosen=[new_response[self.chosen[i]] for i in pairs],
            rejected=[new_response[self.rejected[i]] for i in pairs],
            target=[self.target[i] for i in pairs],
            margin=[self.margin[i] for i in pairs],
            weight=[self.weight[i] for i in pairs],
            agreement=[self.agreement[i] for i in pairs],
            rewrite=[self.rewrite[i] for i in pairs],
        )

    def tensors(self, pad_id: int, device: torch.device) -> dict[str, torch.Tensor]:
        """Left-padded prompts and right-padded responses, ready for a shared-prefix forward."""
        prompts, prompt_mask = pad_rows(self.prompt_ids, pad_id, left=True)
        responses, response_mask = pad_rows(self.response_ids, pad_id, left=False)
        floats = {
            name: torch.tensor(getattr(self, name), dtype=torch.float32)
            for name in ("target", "margin", "weight")
        }
        longs = {
            name: torch.tensor(getattr(self, name), dtype=torch.long)
            for name in ("response_prompt", "chosen", "rejected")
        }
        tensors = {
            "prompt_ids": prompts,
            "prompt_mask": prompt_mask,
            "response_ids": responses,
            "response_mask": response_mask,
            **floats,
            **longs,
        }
        return {name: tensor.to(device) for name, tensor in tensors.items()}


def pad_rows(
    rows: list[list[int]], pad_id: int, *, left: bool
) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(len(row) for row in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for index, row in enumerate(rows):
        span = slice(width - len(row), width) if left else slice(0, len(row))
        ids[index, span] = torch.tensor(row, dtype=torch.long)
        mask[index, span] = 1
    return ids, mask


class PreferenceBatcher:
    """Encodes pairs once, then deals them out in batches of about `batch_pairs` pairs."""

    def __init__(
        self, pairs: Sequence[Pair], tokenizer: PreTrainedTokenizerBase, *, max_length: int
    ) -> None:
        self.pairs = list(pairs)
        self._prompts: dict[tuple, list[int]] = {}
        self._responses: dict[tuple, list[int]] = {}
        for pair in self.pairs:
            for text in (pair.chosen, pair.rejected):
                key = (_prompt_key(pair), text)
                if key not in self._responses:
                    prompt, answer = encode_turn(
                        tokenizer, pair.messages, text, max_length=max_length
                    )
                    self._prompts.setdefault(_prompt_key(pair), prompt)
                    self._responses[key] = answer

    def batches(
        self, batch_pairs: int, *, shuffle: bool, seed: int = 0
    ) -> Iterator[PreferenceBatch]:
        """All the pairs of one prompt together (every ranking of it, by every rater),
        shuffled (or in order), cut into batches of ~`batch_pairs`; prompts of similar length
        go together, which keeps padding low.

        Keeping a prompt's pairs together means each distinct answer is run once for all of
        them: with three raters judging the same answers, a third of the work, and exactly the
        same loss as taking the pairs one at a time."""
        groups: dict[tuple, list[Pair]] = {}
        for pair in self.pairs:
            groups.setdefault(_prompt_key(pair), []).append(pair)
        ordered = list(groups.values())
        if shuffle:
            random.Random(seed).shuffle(ordered)
            # Sort by length inside windows of a few batches: random order, little padding.
            window = batch_pairs * 4
            ordered = [
                group
                for start in range(0, len(ordered), window)
                for group in sorted(ordered[start : start + window], key=self._length)
            ]
        batch: list[Pair] = []
        for group in ordered:
            if batch and len(batch) + len(group) > batch_pairs:
                yield self._batch(batch)
                batch = []
            batch += group
        if batch:
            yield self._batch(batch)

    def _length(self, group: list[Pair]) -> int:
        pair = group[0]
        return len(self._prompts[_prompt_key(pair)]) + len(
            self._responses[(_prompt_key(pair), pair.chosen)]
        )

    def _batch(self, pairs: list[Pair]) -> PreferenceBatch:
        prompt_index: dict[tuple, int] = {}
        response_index: dict[tuple, int] = {}
        batch = PreferenceBatch.empty()
        for pair in pairs:
            prompt_key = _prompt_key(pair)
            if prompt_key not in prompt_index:
                prompt_index[prompt_key] = len(batch.prompt_ids)
                batch.prompt_ids.append(self._prompts[prompt_key])
            ends = []
            for text in (pair.chosen, pair.rejected):
                key = (prompt_key, text)
                if key not in response_index:
                    response_index[key] = len(batch.response_ids)
                    batch.response_ids.append(self._responses[key])
                    batch.response_prompt.append(prompt_index[prompt_key])
                ends.append(response_index[key])
            batch.chosen.append(ends[0])
            batch.rejected.append(ends[1])
            batch.target.append(pair.target)
            batch.margin.append(pair.margin)
            batch.weight.append(pair.weight)
            batch.agreement.append(pair.agreement)
            batch.rewrite.append(pair.source == "rewrite")
        return batch


def _prompt_key(pair: Pair) -> tuple:
    return tuple((message["role"], message["content"]) for message in pair.messages)


@dataclass(frozen=True)
class Demonstration:
    """A conversation and the answer a person wrote for it."""

    messages: list[dict[str, str]]
    answer: str


def demonstration_batches(
    demonstrations: Sequence[Demonstration],
    tokenizer: PreTrainedTokenizerBase,
    *,
    batch_size: int,
    max_length: int,
    pad_id: int,
    shuffle: bool,
    seed: int = 0,
) -> Iterator[dict[str, torch.Tensor]]:
    """Right-padded `input_ids`, `attention_mask` and `labels` in which only the answer's
    tokens count (the prompt and the padding are -100)."""
    encoded = [
        encode_turn(tokenizer, demo.messages, demo.answer, max_length=max_length)
        for demo in demonstrations
    ]
    order = list(range(len(encoded)))
    if shuffle:
        random.Random(seed).shuffle(order)
    for start in range(0, len(order), batch_size):
        rows = [encoded[index] for index in order[start : start + batch_size]]
        ids, mask = pad_rows([prompt + answer for prompt, answer in rows], pad_id, left=False)
        labels = ids.masked_fill(mask == 0, -100)
        for row, (prompt, _) in enumerate(rows):
            labels[row, : len(prompt)] = -100
        yield {"input_ids": ids, "attention_mask": mask, "labels": labels}
