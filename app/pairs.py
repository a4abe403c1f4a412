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

PairSplit = Literal["train", "held_out"]
HELD_OUT: PairSplit = "held_out"
LEGACY_SPLITS = {"eval": HELD_OUT}
"""Pair splits by the names older snapshot files use: they still load."""


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
    split: PairSplit = "train"
    """Whether trainers learn from the pair or measure on it (`held_out`), from a hash of its
    prompt: not the prompt's own train/eval split, which an admin sets at import."""
    agreement: float | None = None
    """Share of this task's raters who ordered these two responses the same way."""


def canonical_line(record: dict[str, Any]) -> bytes:
    """One JSON line with sorted keys and no optional whitespace: equal data, equal bytes."""
    text = json.dumps(record, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return (text + "\n").encode()


def pair_line(pair: Pair) -> bytes:
    """A pair as one line of a snapshot file."""
    return canonical_line(asdict(pair))


def pair_of(record: dict[str, Any]) -> Pair:
    """A pair from one line's record, in the file's format of any release."""
    split = record.get("split", "train")
    return Pair(**{**record, "split": LEGACY_SPLITS.get(split, split)})


def read_pairs(path: Path) -> list[Pair]:
    with path.open("rb") as lines:
        return [pair_of(json.loads(line)) for line in lines if line.strip()]
