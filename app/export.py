"""Exports of the collected preferences, streamed as JSON Lines in the formats other tools read.

Pairwise formats come from a snapshot (`app.preferences`), so an export of a round is exactly
the data that round trained on, byte for byte. Ties (0.5 targets) have no place in a chosen /
rejected format and are left out there.

- `trl`: TRL's conversational preference format (`prompt` messages, `chosen` and `rejected`
  assistant turns), what `RewardTrainer` and `DPOTrainer` take.
- `trl-standard`: TRL's standard format, the same as plain text.
- `kto`: TRL's unpaired format (`prompt`, `completion`, `label`), two rows per pair.
- `hh`: Anthropic HH-RLHF transcripts (`chosen`, `rejected`).
- `pairs`: alignloop's own pairs, ties, margins, weights and split included: the snapshot file
  itself, what `python -m worker.reward_model --data` reads.
- `raw`: every judgement as stored, one row each, corrections included.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.orm import Session

from app.errors import InvalidInput, NotFound
from app.models import (
    Assignment,
    GuidelineVersion,
    Judgement,
    ModelVersion,
    Prompt,
    Response,
    Round,
    Task,
)
from app.preferences import Pair, build_snapshot, canonical_line, pair_line, read_pairs

FORMATS = ("trl", "trl-standard", "kto", "hh", "pairs", "raw")
ROLE_NAMES = {"system": "System", "user": "Human", "assistant": "Assistant"}


def export_lines(
    db: Session, *, file_format: str, round_id: int | None, snapshots_dir: Path
) -> Iterator[bytes]:
    """The export's lines, reading the round's snapshot or, without a round, the live data."""
    if file_format not in FORMATS:
        raise InvalidInput(
            f"Unknown export format {file_format!r}; use one of {', '.join(FORMATS)}"
        )
    cutoff = None
    pairs: list[Pair] | None = None
    if round_id is not None:
        round_ = db.get(Round, round_id)
        if round_ is None or not round_.snapshot_sha256:
            raise NotFound("No round with a snapshot has this id")
        cutoff = round_.config.get("snapshot", {}).get("up_to_judgement_id")
        path = snapshots_dir / f"{round_.snapshot_sha256}.jsonl"
        if file_format != "raw":
            if not path.is_file():
                raise NotFound("This round's snapshot file is missing from the data folder")
            pairs = read_pairs(path)
    if file_format == "raw":
        return raw_lines(db, up_to_judgement_id=cutoff)
    return pair_lines(pairs if pairs is not None else build_snapshot(db).pairs, file_format)


def pair_lines(pairs: Iterable[Pair], file_format: str) -> Iterator[bytes]:
    if file_format == "pairs":
        yield from map(pair_line, pairs)
        return
    for pair in pairs:
        if pair.target != 1.0:
            continue
        yield from (canonical_line(record) for record in FORMATTERS[file_format](pair))


def _trl(pair: Pair) -> list[dict]:
    return [
        {
            "prompt": pair.messages,
            "chosen": [{"role": "assistant", "content": pair.chosen}],
            "rejected": [{"role": "assistant", "content": pair.rejected}],
        }
    ]


def _trl_standard(pair: Pair) -> list[dict]:
    return [{"prompt": _plain(pair.messages), "chosen": pair.chosen, "rejected": pair.rejected}]


def _kto(pair: Pair) -> list[dict]:
    return [
        {
            "prompt": pair.messages,
            "completion": [{"role": "assistant", "content": text}],
            "label": label,
        }
        for text, label in ((pair.chosen, True), (pair.rejected, False))
    ]


def _hh(pair: Pair) -> list[dict]:
    def transcript(answer: str) -> str:
        turns = [*pair.messages, {"role": "assistant", "content": answer}]
        return "".join(f"\n\n{ROLE_NAMES[turn['role']]}: {turn['content']}" for turn in turns)

    return [{"chosen": transcript(pair.chosen), "rejected": transcript(pair.rejected)}]


FORMATTERS = {"trl": _trl, "trl-standard": _trl_standard, "kto": _kto, "hh": _hh}


def _plain(messages: list[dict[str, str]]) -> str:
    """A conversation as plain text: a lone user turn as is, longer ones with speakers."""
    if len(messages) == 1:
        return messages[0]["content"]
    return "\n\n".join(f"{ROLE_NAMES[m['role']]}: {m['content']}" for m in messages)


def raw_lines(db: Session, *, up_to_judgement_id: int | None = None) -> Iterator[bytes]:
    """Every judgement with what its rater saw and said, oldest first."""
    query = select(Judgement).order_by(Judgement.id)
    if up_to_judgement_id is not None:
        query = query.where(Judgement.id <= up_to_judgement_id)
    versions = dict(db.execute(select(ModelVersion.id, ModelVersion.name)).all())
    guidelines = dict(db.execute(select(GuidelineVersion.id, GuidelineVersion.version)).all())
    for judgement in db.scalars(query):
        task = db.get(Task, judgement.task_id)
        assignment = (
            db.get(Assignment, judgement.assignment_id) if judgement.assignment_id else None
        )
        responses = [db.get(Response, link.response_id) for link in task.responses]
        rewrite = (
            db.get(Response, judgement.rewrite_response_id)
            if judgement.rewrite_response_id
            else None
        )
        yield canonical_line(
            {
                "judgement_id": judgement.id,
                "supersedes_id": judgement.supersedes_id,
                "task_id": task.id,
                "task_kind": task.kind.value,
                "rater_id": judgement.rater_id,
                "prompt": db.get(Prompt, task.prompt_id).messages,
                "responses": [
                    {
                        "id": response.id,
                        "text": response.text,
                        "model_version": versions.get(response.model_version_id),
                        "human": response.author_id is not None,
                    }
                    for response in responses
                ],
                "shown_order": assignment.response_order if assignment else None,
                "ranking": judgement.ranking,
                "strength": judgement.strength,
                "all_bad": judgement.all_bad,
                "ratings": judgement.ratings,
                "flags": judgement.flags,
                "critique": judgement.critique,
                "rewrite": rewrite.text if rewrite else None,
                "time_spent_ms": judgement.time_spent_ms,
                "guideline_version": guidelines.get(judgement.guideline_version_id),
                "created_at": judgement.created_at.isoformat(),
            }
        )
