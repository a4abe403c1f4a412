"""Data-parallel training across processes: the one place the trainers meet torch.distributed.

A trainer launched by `torchrun --nproc-per-node N -m worker.training.<name> ...` (or
`accelerate launch --multi_gpu --num_processes N`, which runs torchrun) finds `WORLD_SIZE`
= N in its environment and joins the others here, over gloo. Every process builds the same
batches from the same seed and loads the same weights; each backpropagates only its share of a
step's pairs (`part`), whose losses are already normalised by the whole step's totals, so
adding the processes' gradients (`sum_gradients`) gives the gradient one process would have:
clipping, AdamW and the schedule then see the same numbers on every process, and the weights
stay identical without being sent. The optimisers that sample (PPO, RLOO) share out each step's
prompts instead: each process samples answers to its part with its own copy of the weights, and
the statistics of the whole step (token counts, whitening, KL, metrics) are sums over the
processes (`sums`, `summed`). Only the main process (rank 0) writes models, reports and
logs. Run alone (no `WORLD_SIZE`, or 1), nothing here calls torch.distributed and each function
gives back what it was given.
"""

from __future__ import annotations

import atexit
import os
from functools import cache
from typing import TypeVar

import torch
import torch.distributed as dist

Item = TypeVar("Item")


@cache
def world_size() -> int:
    """The processes training together; the first call joins their group and leaves it at
    exit. Tensors on the CPU travel over gloo, tensors on a GPU over NCCL (each process on
    the GPU of its `local_rank`)."""
    size = int(os.environ.get("WORLD_SIZE", "1"))
    if size > 1 and not dist.is_initialized():
        if torch.cuda.is_available():
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
            dist.init_process_group("cpu:gloo,cuda:nccl")
        else:
            dist.init_process_group("gloo")
        atexit.register(dist.destroy_process_group)
    return size


def rank() -> int:
    return dist.get_rank() if world_size() > 1 else 0


def local_rank() -> int | None:
    """This process's index among those on its machine (torchrun's `LOCAL_RANK`), which picks
    its GPU; None when it trains alone. Joins no group."""
    if int(os.environ.get("WORLD_SIZE", "1")) == 1:
        return None
    return int(os.environ.get("LOCAL_RANK", "0"))


def is_main() -> bool:
    """Whether this process writes the model, the report, the logs and the step bar."""
    return rank() == 0


def part(count: int) -> range:
    """This process's part of `count` items: a contiguous run, the runs of processes 0, 1, ...
    in order making up all of them (a process gets none when there are fewer items than
    processes)."""
    size, index = world_size(), rank()
    return range(index * count // size, (index + 1) * count // size)


def sum_gradients(parameters: list[torch.nn.Parameter]) -> None:
    """Replace each parameter's gradient by the sum of all processes' (before clipping and the
    optimiser step). A parameter no process gave a gradient keeps none, as alone, so that AdamW
    skips it rather than decaying it."""
    if world_size() == 1:
        return
    given = torch.tensor([parameter.grad is not None for parameter in parameters], dtype=torch.int)
    dist.all_reduce(given)
    for parameter, anyone in zip(parameters, given.tolist(), strict=True):
        if not anyone:
            continue
        if parameter.grad is None:
            parameter.grad = torch.zeros_like(parameter)
        dist.all_reduce(parameter.grad)


def sum_of(value: float) -> float:
    """The sum of `value` over the processes (a step's loss from each one's share)."""
    return sums({"value": value})["value"]


def sums(values: dict[str, float]) -> dict[str, float]:
    """Each of `values` summed over the processes, in one exchange (a step's metrics)."""
    if world_size() == 1:
        return values
    totals = torch.tensor(list(values.values()), dtype=torch.float64)
    dist.all_reduce(totals)
    return dict(zip(values, totals.tolist(), strict=True))


def summed(tensor: torch.Tensor) -> torch.Tensor:
    """`tensor` summed over the processes, on its device (`tensor` itself alone)."""
    if world_size() == 1:
        return tensor
    total = tensor.detach().clone()
    dist.all_reduce(total)
    return total


def gathered(items: list[Item]) -> list[Item]:
    """Every process's `items` (picklable), those of process 0 first, then 1, ...: with
    `part`, the items of all parts in their order."""
    if world_size() == 1:
        return items
    everyone: list[list[Item] | None] = [None] * world_size()
    dist.all_gather_object(everyone, items)
    return [item for theirs in everyone for item in theirs or []]
