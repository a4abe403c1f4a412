"""Supervised fine-tuning of the policy on raters' rewritten answers.

The loss counts the answer's tokens only: the prompt is context, not something to imitate
(InstructGPT's SFT stage, on the demonstrations raters wrote while rating). Processes training
together each take their part of a batch's demonstrations (`worker.training.distributed`).

    python -m worker.training.sft --data demonstrations.jsonl --base models/base --out models/sft-1
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from transformers import (
    AutoModelForCausalLM,
    AutoTokenizer,
    PreTrainedModel,
    PreTrainedTokenizerBase,
    get_linear_schedule_with_warmup,
)

from app.round_config import SFTConfig
from worker.training import distributed
from worker.training.checkpoints import (
    atomic_directory,
    from_folder,
    resolve_device,
    training_dtype,
    with_lora,
    write_pretrained,
)
from worker.training.cli import (
    parse_settings,
    read_demonstrations,
    step_bar,
    trainer_parser,
)
from worker.training.data import Demonstration, demonstration_batches
from worker.training.optimisation import autocast, optimiser_step, planned_steps, record_step

log = logging.getLogger(__name__)


@dataclass
class SFTReport:
    examples: int
    steps: int = 0
    seconds: float = 0.0
    final_loss: float | None = None
    curve: list[dict[str, float]] = field(default_factory=list)


def train_sft(
    demonstrations: Sequence[Demonstration],
    base: str | Path,
    config: SFTConfig,
    *,
    on_step: Callable[[dict[str, float]], None] | None = None,
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase, SFTReport]:
    if not demonstrations:
        raise ValueError("no demonstrations to learn from")
    torch.manual_seed(config.seed)
    device = resolve_device(config.device)
    tokenizer = from_folder(AutoTokenizer, base)
    model = from_folder(
        AutoModelForCausalLM, base, dtype=training_dtype(device, lora=config.lora)
    ).to(device)
    if config.lora:
        model = with_lora(
            model, task_type="CAUSAL_LM", rank=config.lora_rank, top_layers=config.lora_layers
        )
    pad_id = (
        tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    )
    steps_per_epoch = math.ceil(len(demonstrations) / config.batch_size)
    trainable = [parameter for parameter in model.parameters() if parameter.requires_grad]
    optimizer = torch.optim.AdamW(
        trainable, lr=config.learning_rate, weight_decay=config.weight_decay
    )
    total = steps_per_epoch * config.epochs
    scheduler = get_linear_schedule_with_warmup(optimizer, int(config.warmup_ratio * total), total)
    report = SFTReport(examples=len(demonstrations))
    started = time.perf_counter()
    model.train()
    for epoch in range(config.epochs):
        for batch in demonstration_batches(
            demonstrations,
            tokenizer,
            batch_size=config.batch_size,
            max_length=config.max_length,
            pad_id=pad_id,
            shuffle=True,
            seed=config.seed + epoch,
        ):
            loss = _backward_part(model, batch, device)
            distributed.sum_gradients(trainable)
            optimiser_step(
                trainable, optimizer, max_grad_norm=config.max_grad_norm, scheduler=scheduler
            )
            point = record_step(
                report.curve, loss=distributed.sum_of(loss), scheduler=scheduler, on_step=on_step
            )
            report.steps = point["step"]
    report.seconds = time.perf_counter() - started
    report.final_loss = report.curve[-1]["loss"]
    if config.lora:
        model = model.merge_and_unload()
    model.eval()
    return model, tokenizer, report


def _backward_part(
    model: PreTrainedModel, batch: dict[str, torch.Tensor], device: torch.device
) -> float:
    """Backpropagate this process's part of `batch`'s loss, the mean over all the batch's
    answer tokens (labels other than -100, each predicted from the token before it); that
    part."""
    rows = distributed.part(len(batch["labels"]))
    mine = {name: tensor[rows.start : rows.stop].to(device) for name, tensor in batch.items()}
    tokens = (mine["labels"][:, 1:] != -100).sum().item()
    share = tokens / max(1, distributed.sum_of(tokens))
    if not tokens:
        return 0.0
    with autocast(device):
        loss = model(**mine).loss * share  # labels are -100 outside the answers
    loss.backward()
    return loss.item()


def save_policy(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, path: Path) -> Path:
    with atomic_directory(path) as tmp:
        write_pretrained(tmp, model, tokenizer)
    return path


def main(argv: list[str] | None = None) -> int:
    parser = trainer_parser(
        __spec__.name,
        "Fine-tune a policy on demonstrations.",
        data='demonstrations: JSON Lines of {"messages": [...], "answer": "..."}',
    )
    args, config = parse_settings(parser, SFTConfig, argv)
    examples = read_demonstrations(args.data)
    steps = planned_steps(config.epochs, len(examples), config.batch_size)
    with step_bar(steps, "SFT", lines=args.step_lines) as step:
        model, tokenizer, report = train_sft(examples, args.base, config, on_step=step)
    if distributed.is_main():
        save_policy(model, tokenizer, args.out)
        print(json.dumps(asdict(report)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
