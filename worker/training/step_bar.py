"""A progress bar for the trainers' command lines (`python -m worker.training.sft`,
`python -m worker.training.reward_model`): steps done of the total, the loss and the time left."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from tqdm import tqdm


@contextmanager
def step_bar(total: int, what: str) -> Iterator[Callable[[dict[str, Any]], None]]:
    """Yields an `on_step` for a trainer; the bar is on stderr, and only on a terminal."""
    with tqdm(total=total, desc=what, unit=" steps", disable=None) as bar:

        def on_step(point: dict[str, Any]) -> None:
            bar.update(point["step"] - bar.n)
            bar.set_postfix_str(f"loss {point['loss']:.4f}")

        yield on_step
