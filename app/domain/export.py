"""Exports of the collected preferences, streamed as JSON Lines in the formats other tools read.

Pairwise formats come from a snapshot (`app.domain.preferences`), so an export of a round is exactly
the data that round trained on, byte for byte. Ties (0.5 targets) have no place in a chosen /
rejected format and are left out there.

- `trl`: TRL's conversational preference format (`prompt` messages, `chosen` and `rejected`
  assistant turns), what `RewardTrainer` and `DPOTrainer` take.
- `trl-standard`: TRL's standard format, the same as plain text.
- `kto`: TRL's unpaired format (`prompt`, `completion`, `label`): one row per completion per
  prompt, labelled by its net preference over all of that prompt's pairs (`_kto_rows`).
- `hh`: Anthropic HH-RLHF transcripts (`chosen`, `rejected`).
- `pairs`: alignloop's own pairs, ties, margins, weights and split included: the snapshot file
  itself, what `python -m worker.training.reward_model --data` reads.
- `raw`: every judgement as stored, one row each, corrections included.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import Row, select
from sqlalchemy.orm import Session

from app.domain.preferences import build_snapshot, latest_judgement_id
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
    TaskResponse,
)
from app.pairs import Pair, canonical_line, pair_line, read_pairs

FORMATS = ("trl", "trl-standard", "kto", "hh", "pairs", "raw")
ROLE_NAMES = {"system": "System", "user": "Human", "assistant": "Assistant"}


def export_lines(
    db: Session, *, file_format: str, round_id: int | None, snapshots_dir: Path
) -> Iterator[bytes]:
    """The export's lines: the round's snapshot, or without a round the data committed when
    the export starts (the judgements up to the highest id then), however long it streams and
    whatever raters submit meanwhile.

    The read transaction ends before the lines are returned, and a raw export reads its
    batches in short transactions of their own: on SQLite a transaction holds the write lock,
    and raters could not submit while the export streams. (On PostgreSQL a judgement whose id
    was drawn just before the start and committed just after it comes in too: ids are drawn
    before commits, a window of one submission's few milliseconds.)"""
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
            if file_format == "pairs":
                db.commit()  # end the read
                return _stored_lines(path)
            pairs = read_pairs(path)
    cutoff = latest_judgement_id(db) if cutoff is None else cutoff
    if file_format == "raw":
        lines = raw_lines(db, up_to_judgement_id=cutoff)
    else:
        pairs = build_snapshot(db, up_to_judgement_id=cutoff).pairs if pairs is None else pairs
        lines = pair_lines(pairs, file_format)
    db.commit()  # end the read
    return lines


def _stored_lines(path: Path) -> Iterator[bytes]:
    """A round's `pairs` export: its snapshot file byte for byte, so that its sha256 is the
    round's, whatever an older version named in it (`"split": "eval"` before `held_out`)."""
    with path.open("rb") as stored:
        yield from stored


def exportable_rounds(db: Session, *, limit: int = 100) -> list[Round]:
    """The latest rounds that took a snapshot, the ones `export_lines` accepts as `round_id`."""
    query = select(Round).where(Round.snapshot_sha256.is_not(None)).order_by(Round.id.desc())
    return list(db.scalars(query.limit(limit)))


def pair_lines(pairs: Iterable[Pair], file_format: str) -> Iterator[bytes]:
    if file_format == "pairs":
        yield from map(pair_line, pairs)
        return
    if file_format == "kto":
        yield from map(canonical_line, _kto_rows(pairs))
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


@dataclass
class _Completions:
    """One prompt's completions as the KTO export sees them: text and net preference."""

    messages: list[dict[str, str]]
    texts: dict[int, str]
    net: Counter[int]


def _kto_rows(pairs: Iterable[Pair]) -> Iterator[dict]:
    """KTO's unpaired rows: each completion of a prompt once, desirable if it won more of its
    comparisons (over every judgement of that prompt) than it lost, undesirable if it lost
    more, and left out when they balance. Labelling each pair's two sides instead, as a paired
    dataset is usually unpaired, gives a completion that won one comparison and lost another
    both labels, and repeats it once per comparison. Tied pairs (0.5 targets) count for
    neither side. Rows follow the pairs' order: the same snapshot gives the same bytes."""
    prompts: dict[int, _Completions] = {}
    for pair in pairs:
        if pair.target != 1.0:
            continue
        seen = prompts.setdefault(pair.prompt_id, _Completions(pair.messages, {}, Counter()))
        seen.texts.setdefault(pair.chosen_id, pair.chosen)
        seen.texts.setdefault(pair.rejected_id, pair.rejected)
        seen.net[pair.chosen_id] += 1
        seen.net[pair.rejected_id] -= 1
    for seen in prompts.values():
        for response_id, text in seen.texts.items():
            if net := seen.net[response_id]:
                completion = [{"role": "assistant", "content": text}]
                yield {"prompt": seen.messages, "completion": completion, "label": net > 0}


def _hh(pair: Pair) -> list[dict]:
    def transcript(answer: str) -> str:
        turns = [*pair.messages, {"role": "assistant", "content": answer}]
        return "".join(f"\n\n{ROLE_NAMES[turn['role']]}: {turn['content']}" for turn in turns)

    return [{"chosen": transcript(pair.chosen), "rejected": transcript(pair.rejected)}]


FORMATTERS = {"trl": _trl, "trl-standard": _trl_standard, "hh": _hh}


def _plain(messages: list[dict[str, str]]) -> str:
    """A conversation as plain text: a lone user turn as is, longer ones with speakers."""
    if len(messages) == 1:
        return messages[0]["content"]
    return "\n\n".join(f"{ROLE_NAMES[m['role']]}: {m['content']}" for m in messages)


RAW_BATCH_SIZE = 500
"""Judgements read at a time by `raw_lines`, with what they refer to in four more queries."""


def raw_lines(db: Session, *, up_to_judgement_id: int | None = None) -> Iterator[bytes]:
    """Every judgement with what its rater saw and said, oldest first, up to the cut-off
    (default: the latest when it starts). It reads in batches, so the number of queries grows
    with the batches, not with the judgements, and ends the read after each batch (on SQLite
    a transaction holds the write lock): call it with nothing to commit."""
    cutoff = latest_judgement_id(db) if up_to_judgement_id is None else up_to_judgement_id
    versions = dict(db.execute(select(ModelVersion.id, ModelVersion.name)).all())
    guidelines = dict(db.execute(select(GuidelineVersion.id, GuidelineVersion.version)).all())
    query = select(Judgement).where(Judgement.id <= cutoff).order_by(Judgement.id)
    last_id = 0
    while batch := db.scalars(query.where(Judgement.id > last_id).limit(RAW_BATCH_SIZE)).all():
        seen = _RawContext.load(db, batch, versions)
        records = [seen.record(judgement, guidelines) for judgement in batch]
        last_id = batch[-1].id
        db.commit()  # end the read before the lines go out, however slowly they are taken
        yield from map(canonical_line, records)


@dataclass(frozen=True)
class _RawContext:
    """What a batch of judgements refers to: tasks with their prompts and responses, the
    orders raters were shown, and the raters' rewrites."""

    tasks: dict[int, Row]
    responses: dict[int, list[dict]]
    shown_orders: dict[int, list]
    rewrites: dict[int, str]

    @classmethod
    def load(cls, db: Session, batch: Sequence[Judgement], versions: dict[int, str]) -> _RawContext:
        task_ids = {judgement.task_id for judgement in batch}
        tasks = db.execute(
            select(Task.id, Task.kind, Prompt.messages)
            .join(Prompt, Prompt.id == Task.prompt_id)
            .where(Task.id.in_(task_ids))
        )
        linked = db.execute(
            select(
                TaskResponse.task_id,
                Response.id,
                Response.text,
                Response.model_version_id,
                Response.author_id,
            )
            .join(Response, Response.id == TaskResponse.response_id)
            .where(TaskResponse.task_id.in_(task_ids))
            .order_by(TaskResponse.task_id, TaskResponse.position)
        )
        responses: dict[int, list[dict]] = {}
        for task_id, response_id, text, version_id, author_id in linked:
            responses.setdefault(task_id, []).append(
                {
                    "id": response_id,
                    "text": text,
                    "model_version": versions.get(version_id),
                    "human": author_id is not None,
                }
            )
        assignment_ids = {j.assignment_id for j in batch if j.assignment_id}
        rewrite_ids = {j.rewrite_response_id for j in batch if j.rewrite_response_id}
        shown = select(Assignment.id, Assignment.response_order)
        rewrites = select(Response.id, Response.text)
        return cls(
            tasks={row.id: row for row in tasks},
            responses=responses,
            shown_orders=dict(db.execute(shown.where(Assignment.id.in_(assignment_ids))).all()),
            rewrites=dict(db.execute(rewrites.where(Response.id.in_(rewrite_ids))).all()),
        )

    def record(self, judgement: Judgement, guidelines: dict[int, int]) -> dict:
        task = self.tasks[judgement.task_id]
        return {
            "judgement_id": judgement.id,
            "supersedes_id": judgement.supersedes_id,
            "task_id": task.id,
            "task_kind": task.kind.value,
            "rater_id": judgement.rater_id,
            "prompt": task.messages,
            "responses": self.responses.get(task.id, []),
            "shown_order": self.shown_orders.get(judgement.assignment_id),
            "ranking": judgement.ranking,
            "strength": judgement.strength,
            "all_bad": judgement.all_bad,
            "ratings": judgement.ratings,
            "flags": judgement.flags,
            "critique": judgement.critique,
            "rewrite": self.rewrites.get(judgement.rewrite_response_id),
            "time_spent_ms": judgement.time_spent_ms,
            "guideline_version": guidelines.get(judgement.guideline_version_id),
            "created_at": judgement.created_at.isoformat(),
        }
