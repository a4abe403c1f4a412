"""Preference snapshots: judgements frozen into training pairs, canonical and content-addressed.

A snapshot takes every current judgement (the last of each correction chain) up to a cut-off
and expands it into pairs: a k-way ranking gives k(k-1)/2 pairs (InstructGPT), tied responses
are left out or kept as 0.5 targets, and a rewritten answer gives a pair "rewrite over the
response it replaced". Pairs are split into train and held-out by prompt, deterministically,
and written as canonical JSON Lines whose sha256 names the snapshot: the same judgements give
byte-identical files, so a round's data can always be rebuilt and checked. Exports
(`app.domain.export`) read the same pairs.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from itertools import combinations
from pathlib import Path
from typing import Any, Literal

from sqlalchemy import ColumnElement, and_, exists, func, select
from sqlalchemy.orm import Session, aliased

from app.models import Judgement, Prompt, Response, Task
from app.pairs import HELD_OUT, Pair, PairSplit, pair_line

Ties = Literal["skip", "half"]
EVAL_FRACTION = 0.1
SPLIT_SALT = "alignloop-split-v1"
STRENGTH_MARGIN = {1: 0.5, 2: 1.0, 3: 2.0}
"""Bradley-Terry margins for the two-response strength scale (slightly, clearly, much)."""


@dataclass
class Snapshot:
    pairs: list[Pair]
    judgement_count: int
    rater_count: int
    up_to_judgement_id: int
    options: dict[str, Any] = field(default_factory=dict)

    @property
    def lines(self) -> list[bytes]:
        return [pair_line(pair) for pair in self.pairs]

    @property
    def sha256(self) -> str:
        digest = hashlib.sha256()
        for line in self.lines:
            digest.update(line)
        return digest.hexdigest()

    def split(self, name: PairSplit) -> list[Pair]:
        return [pair for pair in self.pairs if pair.split == name]


def expand_ranking(
    ranking: Sequence[int | Sequence[int]], *, ties: Ties = "skip"
) -> list[tuple[int, int, float]]:
    """All pairs `(better, worse, target)` that a best-first ranking with ties implies.

    `[3, [1, 2]]` gives `(3, 1, 1.0)` and `(3, 2, 1.0)`, plus `(1, 2, 0.5)` when ties count.
    """
    groups = [sorted(entry) if isinstance(entry, list) else [entry] for entry in ranking]
    pairs = [
        (better, worse, 1.0)
        for upper, lower in combinations(range(len(groups)), 2)
        for better in groups[upper]
        for worse in groups[lower]
    ]
    if ties == "half":
        pairs += [(a, b, 0.5) for group in groups for a, b in combinations(group, 2)]
    return pairs


def split_of(prompt_key: str, *, eval_fraction: float = EVAL_FRACTION) -> PairSplit:
    """Train or held-out for a prompt's pairs, from a hash of its dedup key: stable as data
    grows."""
    digest = hashlib.sha256(f"{SPLIT_SALT}:{prompt_key}".encode()).digest()
    return HELD_OUT if int.from_bytes(digest[:8], "big") / 2**64 < eval_fraction else "train"


def build_snapshot(
    db: Session,
    *,
    ties: Ties = "skip",
    eval_fraction: float = EVAL_FRACTION,
    up_to_judgement_id: int | None = None,
    margins: bool = True,
    rater_weights: dict[int, float] | None = None,
    train_after_judgement_id: int = 0,
) -> Snapshot:
    """Freeze the current judgements (ids up to the cut-off, by default all) into pairs,
    leaving out gold tasks.

    `rater_weights` (a trust score per rater id; 1.0 when absent) becomes each pair's weight.
    `train_after_judgement_id` keeps only newer judgements' training pairs (a round that
    trains on what came in since its parent's round); held-out pairs come from all of them.
    """
    cutoff = latest_judgement_id(db) if up_to_judgement_id is None else up_to_judgement_id
    gold = set(db.scalars(select(Task.id).where(Task.is_gold)))  # they measure raters
    judgements = [
        judgement for judgement in current_judgements(db, cutoff) if judgement.task_id not in gold
    ]
    context = _Context.load(db, judgements)
    judgements = [
        judgement
        for judgement in judgements
        if judgement.id > train_after_judgement_id
        or context.split_of(judgement, eval_fraction) == HELD_OUT
    ]
    pairs: list[Pair] = []
    for judgement in judgements:
        pairs += _pairs_of(judgement, context, ties=ties, margins=margins)
    weights = rater_weights or {}
    pairs = [
        _with_split_and_agreement(pair, context, eval_fraction, weights.get(pair.rater_id, 1.0))
        for pair in pairs
    ]
    pairs.sort(key=_canonical_order)
    return Snapshot(
        pairs=pairs,
        judgement_count=len(judgements),
        rater_count=len({judgement.rater_id for judgement in judgements}),
        up_to_judgement_id=cutoff,
        options={"ties": ties, "eval_fraction": eval_fraction, "margins": margins},
    )


def latest_judgement_id(db: Session) -> int:
    """The highest judgement id committed (0 for none): a cut-off that later judgements, with
    higher ids, stay out of."""
    return db.scalar(select(func.max(Judgement.id))) or 0


def current_judgements(db: Session, cutoff: int | None = None) -> Iterator[Judgement]:
    """The last judgement of every correction chain, with ids up to `cutoff` (default: all)."""
    cutoff = latest_judgement_id(db) if cutoff is None else cutoff
    yield from db.scalars(select(Judgement).where(is_current(cutoff)).order_by(Judgement.id))


def is_current(cutoff: int | None = None) -> ColumnElement[bool]:
    """SQL condition: the judgement is the last of its correction chain, counting only ids up
    to `cutoff` (default: all)."""
    newer = aliased(Judgement)
    if cutoff is None:
        return ~exists().where(newer.supersedes_id == Judgement.id)
    superseded = exists().where(newer.supersedes_id == Judgement.id, newer.id <= cutoff)
    return and_(Judgement.id <= cutoff, ~superseded)


@dataclass
class _Context:
    tasks: dict[int, Task]
    prompts: dict[int, Prompt]
    responses: dict[int, Response]
    orders: dict[tuple[int, int, int], list[int]]
    """(task, a, b) -> signs (+1 a over b, -1 b over a) from every rater of that task."""

    @classmethod
    def load(cls, db: Session, judgements: list[Judgement]) -> _Context:
        task_ids = {judgement.task_id for judgement in judgements}
        tasks = {task.id: task for task in db.scalars(select(Task).where(Task.id.in_(task_ids)))}
        prompts = {
            prompt.id: prompt
            for prompt in db.scalars(
                select(Prompt).where(Prompt.id.in_({task.prompt_id for task in tasks.values()}))
            )
        }
        response_ids = {
            response_id for judgement in judgements for response_id in _flatten(judgement.ranking)
        } | {
            judgement.rewrite_response_id
            for judgement in judgements
            if judgement.rewrite_response_id
        }
        responses = {
            response.id: response
            for response in db.scalars(select(Response).where(Response.id.in_(response_ids)))
        }
        orders: dict[tuple[int, int, int], list[int]] = {}
        for judgement in judgements:
            for better, worse, _ in expand_ranking(judgement.ranking, ties="skip"):
                low, high = sorted((better, worse))
                orders.setdefault((judgement.task_id, low, high), []).append(
                    1 if better == low else -1
                )
        return cls(tasks, prompts, responses, orders)

    def split_of(self, judgement: Judgement, eval_fraction: float) -> PairSplit:
        prompt = self.prompts[self.tasks[judgement.task_id].prompt_id]
        return split_of(prompt.dedup_hash, eval_fraction=eval_fraction)


def _pairs_of(judgement: Judgement, context: _Context, *, ties: Ties, margins: bool) -> list[Pair]:
    task = context.tasks[judgement.task_id]
    prompt = context.prompts[task.prompt_id]
    margin = STRENGTH_MARGIN.get(judgement.strength or 0, 0.0) if margins else 0.0
    group = f"judgement-{judgement.id}"
    common = {
        "prompt_id": prompt.id,
        "messages": prompt.messages,
        "task_id": task.id,
        "judgement_id": judgement.id,
        "rater_id": judgement.rater_id,
        "group": group,
    }
    pairs = [
        Pair(
            chosen_id=better,
            chosen=context.responses[better].text,
            rejected_id=worse,
            rejected=context.responses[worse].text,
            target=target,
            margin=margin if target == 1.0 else 0.0,
            **common,
        )
        for better, worse, target in expand_ranking(judgement.ranking, ties=ties)
    ]
    if judgement.rewrite_response_id:
        rewrite = context.responses[judgement.rewrite_response_id]
        replaced = rewrite.generation_params.get("replaces_response_id")
        if replaced in context.responses:
            pairs.append(
                Pair(
                    chosen_id=rewrite.id,
                    chosen=rewrite.text,
                    rejected_id=replaced,
                    rejected=context.responses[replaced].text,
                    source="rewrite",
                    **common,
                )
            )
    return pairs


def _with_split_and_agreement(
    pair: Pair, context: _Context, eval_fraction: float, weight: float
) -> Pair:
    prompt = context.prompts[pair.prompt_id]
    low, high = sorted((pair.chosen_id, pair.rejected_id))
    signs = context.orders.get((pair.task_id, low, high))
    agreement = None
    if signs and pair.target == 1.0 and pair.source == "ranking":
        mine = 1 if pair.chosen_id == low else -1
        agreement = signs.count(mine) / len(signs)
    return Pair(
        **{
            **asdict(pair),
            "split": split_of(prompt.dedup_hash, eval_fraction=eval_fraction),
            "agreement": agreement,
            "weight": weight,
        }
    )


def _canonical_order(pair: Pair) -> tuple:
    return (
        pair.prompt_id,
        pair.task_id or 0,
        pair.judgement_id or 0,
        pair.source,
        pair.chosen_id,
        pair.rejected_id,
    )


def _flatten(ranking: Iterable) -> Iterator[int]:
    for entry in ranking:
        yield from (entry if isinstance(entry, list) else [entry])


def write_snapshot(snapshot: Snapshot, folder: Path) -> Path:
    """Store the snapshot as `<sha256>.jsonl` in `folder` (atomically; kept if present)."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{snapshot.sha256}.jsonl"
    if not path.exists():
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".snapshot-", delete=False) as tmp:
            tmp.writelines(snapshot.lines)
            tmp.flush()
            os.fsync(tmp.fileno())
        os.replace(tmp.name, path)
    return path


def collect_demonstrations(db: Session, *, up_to_response_id: int | None = None) -> list[dict]:
    """Answers people wrote (rewrites and preferred answers from feedback) with their prompts,
    for supervised fine-tuning: `[{"messages", "answer", "response_id"}]`, in id order."""
    query = (
        select(Response, Prompt.messages)
        .join(Prompt, Prompt.id == Response.prompt_id)
        .where(Response.author_id.is_not(None))
        .order_by(Response.id)
    )
    if up_to_response_id is not None:
        query = query.where(Response.id <= up_to_response_id)
    return [
        {"messages": messages, "answer": response.text, "response_id": response.id}
        for response, messages in db.execute(query)
    ]
