"""A Bradley-Terry leaderboard of policy versions, from raters' blind comparisons.

Every current judgement of an A/B task (candidate generation makes one whenever it samples
answers from two versions) that ranked answers written by two different versions counts as one
or more comparisons between them (ties as half a win each). Strengths are fitted with Hunter's
minorisation-maximisation updates (Hunter 2004), with one tied pseudo-comparison between every
pair of versions that met, so that a version that never won keeps a finite rating. Ratings are
on the Elo scale (400 log10 strength) around 1000, with percentile bootstrap confidence
intervals from resampling whole judgements.

`head_to_head` reads the same comparisons for two versions only (a round's new policy against
its parent): the raters' win rate with a Wilson interval, which the round page shows and the
human promotion gate reads.

`GET /api/models/leaderboard` fits it on request; the models page shows the one stored by
`store` (with the quality figures, in the background), so that it renders in constant time
however many comparisons there are.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
from sqlalchemy import select
from sqlalchemy.orm import Session

from app.domain.preferences import expand_ranking, is_current
from app.models import (
    Judgement,
    ModelVersion,
    Response,
    StoredLeaderboard,
    Task,
    TaskKind,
    TaskResponse,
    utcnow,
)

ELO_SCALE = 400 / np.log(10)
PRIOR_TIES = 1.0
ITERATIONS = 200


@dataclass
class Standing:
    version: str
    rating: float
    ci_low: float
    ci_high: float
    comparisons: float
    win_rate: float


@dataclass
class Comparisons:
    """One row per (judgement, pair of versions): who won, who lost, by how much."""

    versions: list[str]
    winner: np.ndarray
    loser: np.ndarray
    amount: np.ndarray  # 1 for a win, 0.5 for each side of a tie
    judgement: np.ndarray  # index of the judgement the row came from, for resampling


def collect(db: Session) -> Comparisons:
    """The comparisons between versions that the current judgements make."""
    rankings = db.scalars(
        select(Judgement.ranking)
        .join(Task, Task.id == Judgement.task_id)
        .where(Task.kind == TaskKind.AB_EVAL, is_current())
        .order_by(Judgement.id)
    ).all()
    version_of = dict(
        db.execute(
            select(Response.id, ModelVersion.name)
            .join(TaskResponse, TaskResponse.response_id == Response.id)
            .join(Task, Task.id == TaskResponse.task_id)
            .join(ModelVersion, ModelVersion.id == Response.model_version_id)
            .where(Task.kind == TaskKind.AB_EVAL)
        ).all()
    )
    names = sorted(set(version_of.values()))
    index = {name: number for number, name in enumerate(names)}
    rows: list[tuple[int, int, float, int]] = []
    for number, ranking in enumerate(rankings):
        for better, worse, target in expand_ranking(ranking, ties="half"):
            first, second = version_of.get(better), version_of.get(worse)
            if first is None or second is None or first == second:
                continue
            if target == 1.0:
                rows.append((index[first], index[second], 1.0, number))
            else:
                rows += [(index[first], index[second], 0.5, number)]
                rows += [(index[second], index[first], 0.5, number)]
    columns = np.array(rows, dtype=float).reshape(-1, 4)
    return Comparisons(
        versions=names,
        winner=columns[:, 0].astype(int),
        loser=columns[:, 1].astype(int),
        amount=columns[:, 2],
        judgement=columns[:, 3].astype(int),
    )


def fit(wins: np.ndarray) -> np.ndarray:
    """Bradley-Terry log-strengths from a wins matrix (`wins[..., i, j]`: i beat j), centred;
    a stack of matrices (such as bootstrap samples) is fitted all at once."""
    met = (wins + np.swapaxes(wins, -1, -2)) > 0
    wins = wins + PRIOR_TIES / 2 * met
    games = wins + np.swapaxes(wins, -1, -2)
    total_wins = wins.sum(-1)
    strength = np.ones(wins.shape[:-1])
    for _ in range(ITERATIONS):
        denominator = (games / (strength[..., :, None] + strength[..., None, :])).sum(-1)
        updated = np.where(denominator > 0, total_wins / np.maximum(denominator, 1e-12), 1.0)
        updated /= np.exp(np.log(updated).mean(-1, keepdims=True))
        if np.allclose(updated, strength, rtol=1e-9):
            break
        strength = updated
    return np.log(strength)


def leaderboard(db: Session, *, bootstrap: int = 200, seed: int = 0) -> list[Standing]:
    """Versions ranked by rating, best first, with 95% bootstrap intervals."""
    comparisons = collect(db)
    count = len(comparisons.versions)
    if count < 2 or not len(comparisons.amount):
        return []
    # What each judgement adds to the wins matrix. Judgements that add the same are one kind:
    # drawing judgements with replacement is drawing kinds in proportion to their counts, so a
    # bootstrap sample is one multinomial draw over the few kinds, however many judgements.
    judgements = comparisons.judgement.max() + 1
    per_judgement = np.zeros((judgements, count * count))
    cell = comparisons.winner * count + comparisons.loser
    np.add.at(per_judgement, (comparisons.judgement, cell), comparisons.amount)
    kinds, sizes = np.unique(per_judgement, axis=0, return_counts=True)
    rng = np.random.default_rng(seed)
    draws = rng.multinomial(judgements, sizes / judgements, size=bootstrap)
    point = 1000 + ELO_SCALE * fit((sizes @ kinds).reshape(count, count))
    samples = 1000 + ELO_SCALE * fit((draws @ kinds).reshape(-1, count, count))
    low, high = np.percentile(samples, [2.5, 97.5], axis=0)
    played = np.bincount(comparisons.winner, comparisons.amount, count) + np.bincount(
        comparisons.loser, comparisons.amount, count
    )
    won = np.bincount(comparisons.winner, comparisons.amount, count)
    standings = [
        Standing(
            version=name,
            rating=round(float(point[i]), 1),
            ci_low=round(float(low[i]), 1),
            ci_high=round(float(high[i]), 1),
            comparisons=float(played[i]),
            win_rate=float(won[i] / played[i]) if played[i] else 0.0,
        )
        for i, name in enumerate(comparisons.versions)
    ]
    return sorted(standings, key=lambda standing: -standing.rating)


@dataclass
class HeadToHead:
    """How often raters preferred `version` over `opponent` (ties count one half)."""

    win_rate: float | None
    low: float | None
    high: float | None
    n: float
    """Comparisons between the two (a tie counts once, as two halves)."""


def head_to_head(db: Session, version: str, opponent: str) -> HeadToHead:
    """The raters' blind verdicts between two versions, with a 95% Wilson interval."""
    comparisons = collect(db)
    if version not in comparisons.versions or opponent not in comparisons.versions:
        return HeadToHead(None, None, None, 0.0)
    mine, theirs = comparisons.versions.index(version), comparisons.versions.index(opponent)
    won = comparisons.amount[(comparisons.winner == mine) & (comparisons.loser == theirs)].sum()
    lost = comparisons.amount[(comparisons.winner == theirs) & (comparisons.loser == mine)].sum()
    n = float(won + lost)
    if not n:
        return HeadToHead(None, None, None, 0.0)
    low, high = wilson_interval(float(won), n)
    return HeadToHead(float(won) / n, low, high, n)


def wilson_interval(successes: float, n: float, *, z: float = 1.96) -> tuple[float, float]:
    """The Wilson score interval of a proportion (Wilson 1927), 95% by default: unlike the
    normal approximation it stays inside 0..1 and is honest for small n. Half successes (ties)
    are allowed."""
    if n <= 0:
        return 0.0, 1.0
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    spread = z * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return float(max(0.0, centre - spread)), float(min(1.0, centre + spread))


def store(db: Session, *, bootstrap: int = 200) -> StoredLeaderboard:
    """Fit the leaderboard now and keep it for the models page."""
    standings = [asdict(standing) for standing in leaderboard(db, bootstrap=bootstrap)]
    stored = StoredLeaderboard(standings=standings, computed_at=utcnow())
    db.add(stored)
    return stored


def latest(db: Session) -> StoredLeaderboard | None:
    query = select(StoredLeaderboard).order_by(StoredLeaderboard.id.desc()).limit(1)
    return db.scalar(query)
