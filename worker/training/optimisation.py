"""What every trainer does the same way: mixed precision on CUDA, and the optimiser step that
clips gradients, moves the schedule on and records a point of the loss curve."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch.optim.lr_scheduler import LRScheduler


def autocast(device: torch.device) -> torch.autocast:
    """bf16 autocast on CUDA; plain fp32 elsewhere (bf16 is slower on CPUs without AMX)."""
    return torch.autocast("cuda", dtype=torch.bfloat16, enabled=device.type == "cuda")


def optimiser_step(
    parameters: list[torch.nn.Parameter],
    optimizer: torch.optim.Optimizer,
    scheduler: LRScheduler,
    *,
    max_grad_norm: float,
    loss: float,
    curve: list[dict[str, float]],
    on_step: Callable[[dict[str, float]], None] | None,
) -> dict[str, float]:
    """Clip, step, schedule, clear the gradients; append `{step, loss, lr}` to `curve` and
    tell `on_step`."""
    torch.nn.utils.clip_grad_norm_(parameters, max_grad_norm)
    optimizer.step()
    scheduler.step()
    optimizer.zero_grad(set_to_none=True)
    steps = sum(1 for point in curve if "loss" in point) + 1
    point = {"step": steps, "loss": loss, "lr": scheduler.get_last_lr()[0]}
    curve.append(point)
    if on_step is not None:
        on_step(point)
    return point
