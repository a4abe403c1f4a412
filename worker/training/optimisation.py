"""What every trainer does the same way: mixed precision on CUDA, and the optimiser step (clip
the gradients, step, move the schedule on, clear the gradients) that all five take."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
from torch.optim.lr_scheduler import LRScheduler


def planned_steps(epochs: int, items: int, batch: int) -> int:
    """Optimiser steps over `items` in batches of `batch` for `epochs` (at least one): what a
    progress bar counts to (a reward model's batches keep a prompt's pairs together, so its
    real count may differ a little)."""
    return max(1, epochs * math.ceil(items / batch))


def autocast(device: torch.device) -> torch.autocast:
    """bf16 autocast on CUDA; plain fp32 elsewhere (bf16 is slower on CPUs without AMX)."""
    return torch.autocast("cuda", dtype=torch.bfloat16, enabled=device.type == "cuda")


def optimiser_step(
    parameters: Sequence[torch.nn.Parameter],
    optimizer: torch.optim.Optimizer,
    *,
    max_grad_norm: float,
    scheduler: LRScheduler | None = None,
) -> None:
    """Clip the gradients of `parameters` to `max_grad_norm`, step, move the schedule on (the
    trainers with a warm-up have one), and clear the gradients (to None: no zero tensors kept
    between steps)."""
    torch.nn.utils.clip_grad_norm_(parameters, max_grad_norm)
    optimizer.step()
    if scheduler is not None:
        scheduler.step()
    optimizer.zero_grad(set_to_none=True)


def record_step(
    curve: list[dict[str, float]],
    *,
    loss: float,
    scheduler: LRScheduler,
    on_step: Callable[[dict[str, float]], None] | None,
) -> dict[str, float]:
    """Append `{step, loss, lr}` for the step just taken to `curve` (whose evaluation points,
    without a `loss`, are not steps) and tell `on_step`; the point."""
    steps = sum(1 for point in curve if "loss" in point) + 1
    point = {"step": steps, "loss": loss, "lr": scheduler.get_last_lr()[0]}
    curve.append(point)
    if on_step is not None:
        on_step(point)
    return point
