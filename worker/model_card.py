"""The model card: a `README.md` in each model store folder, saying what the version is, where
it came from (lineage), which judgements trained it (the snapshot's sha256) and how it scored,
for whoever finds the folder without the database.

Written when the version is registered, the moment all of that is known: a policy's
evaluation runs after its weights are saved.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import transformers

from app.models import ModelVersion

CARD_FILE = "README.md"
MIN_TRANSFORMERS = "4.57"
"""The oldest transformers that was seen to load these folders correctly (same tokens, same
logits as 5), thanks to the fields `worker.model_store.write_pretrained` adds for 4.x."""


def model_card(version: ModelVersion, *, base_model: str) -> str:
    """The card's Markdown (with the Hugging Face metadata header), from the registered row."""
    lineage = [
        f"- kind: {version.kind.value}",
        f"- parent version: {version.parent.name if version.parent else 'none (imported)'}",
        f"- base model: `{base_model}`",
    ]
    if version.round_id is not None:
        lineage.append(f"- round: {version.round_id}")
    if version.snapshot_sha256:
        lineage.append(f"- training data: judgement snapshot sha256 `{version.snapshot_sha256}`")
    if version.rater_count is not None:
        lineage.append(f"- raters in the snapshot: {version.rater_count}")
    metrics = json.dumps(version.metrics, indent=2, sort_keys=True, default=str)
    return "\n".join(
        [
            "---",
            "library_name: transformers",
            "tags: [alignloop, rlhf]",
            "---",
            "",
            f"# {version.name}",
            "",
            f"A {version.kind.value} model that alignloop trained and stored. Load it with "
            f"transformers>={MIN_TRANSFORMERS} (saved with {transformers.__version__}).",
            "",
            "## Lineage",
            "",
            *lineage,
            "",
            "## Metrics",
            "",
            "```json",
            metrics,
            "```",
            "",
        ]
    )


def write_model_card(folder: Path, version: ModelVersion, *, base_model: str) -> Path:
    """Write (or replace) the card in `folder` in one step: a reader sees the old card or the
    new one, never half of one."""
    card = folder / CARD_FILE
    partial = folder / f".{CARD_FILE}.{os.getpid()}.tmp"
    partial.write_text(model_card(version, base_model=base_model), encoding="utf-8")
    os.replace(partial, card)
    return card
