"""The training pair: one comparison of two answers, as a snapshot file holds it (one canonical
JSON line each).

The contract between the app, which builds snapshots from the raters' judgements
(`app.domain.preferences`) and exports them, and the trainers, which read them
(`python -m worker.training.reward_model --data pairs.jsonl`). Plain dataclasses and JSON, so
either side reads it without the other's libraries.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal


@dataclass(frozen=True)
class Pair:
    """One training comparison: `chosen` over `rejected` with probability `target`."""

    prompt_id: int
    messages: list[dict[str, str]]
    chosen_id: int
    chosen: str
    rejected_id: int
    rejected: str
    target: float = 1.0
    margin: float = 0.0
    weight: float = 1.0
    source: Literal["ranking", "rewrite"] = "ranking"
    task_id: int | None = None
    judgement_id: int | None = None
    rater_id: int | None = None
    group: str = ""
    """Pairs from one ranking share a group, so that they go into the same batch."""
    split: Literal["train", "eval"] = "train"
    agreement: float | None = None
    """Share of this task's raters who ordered these two responses the same way."""


def canonical_line(record: dict[str, Any]) -> bytes:
    """One JSON line with sorted keys and no optional whitespace: equal data, equal bytes."""
    text = json.dumps(record, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return (text + "\n").encode()


def pair_line(pair: Pair) -> bytes:
    """A pair as one line of a snapshot file."""
    return canonical_line(asdict(pair))


def read_pairs(path: Path) -> list[Pair]:
    with path.open("rb") as lines:
        return [Pair(**json.loads(line)) for line in lines if line.strip()]
