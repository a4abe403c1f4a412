"""A Bradley-Terry leaderboard of policy versions, from raters' blind comparisons.

Every current judgement that ranked answers written by two different versions counts as one
or more comparisons between them (ties as half a win each). Strengths are fitted with Hunter's
minorisation-maximisation updates (Hunter 2004), with one tied pseudo-comparison between every
pair of versions that met, so that a version that never won keeps a finite rating. Ratings are
on the Elo scale (400 log10 strength) around 1000, with percentile bootstrap confidence
intervals from resampling whole judgements.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from sqlalchemy import select
from sqlalchemy.orm import Session

from app.models import ModelVersion, Response, TaskResponse
from app.preferences import current_judgements, expand_ranking

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
    judgements = list(current_judgements(db))
    task_ids = {judgement.task_id for judgement in judgements}
    version_of = dict(
        db.execute(
            select(Response.id, ModelVersion.name)
            .join(TaskResponse, TaskResponse.response_id == Response.id)
            .join(ModelVersion, ModelVersion.id == Response.model_version_id)
            .where(TaskResponse.task_id.in_(task_ids))
        ).all()
    )
    names = sorted(set(version_of.values()))
    index = {name: number for number, name in enumerate(names)}
    rows: list[tuple[int, int, float, int]] = []
    for number, judgement in enumerate(judgements):
        for better, worse, target in expand_ranking(judgement.ranking, ties="half"):
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
    """Bradley-Terry log-strengths from a wins matrix (`wins[i, j]`: i beat j), centred."""
    met = (wins + wins.T) > 0
    wins = wins + PRIOR_TIES / 2 * met
    games = wins + wins.T
    total_wins = wins.sum(1)
    strength = np.ones(len(wins))
    for _ in range(ITERATIONS):
        denominator = (games / (strength[:, None] + strength[None, :])).sum(1)
        updated = np.where(denominator > 0, total_wins / np.maximum(denominator, 1e-12), 1.0)
        updated /= np.exp(np.log(updated).mean())
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

    def ratings(weight: np.ndarray) -> np.ndarray:
        wins = np.zeros((count, count))
        np.add.at(wins, (comparisons.winner, comparisons.loser), comparisons.amount * weight)
        return 1000 + ELO_SCALE * fit(wins)

    judgements = comparisons.judgement.max() + 1
    point = ratings(np.ones(len(comparisons.amount)))
    rng = np.random.default_rng(seed)
    samples = np.array(
        [
            ratings(
                np.bincount(rng.integers(0, judgements, judgements), minlength=judgements)[
                    comparisons.judgement
                ]
            )
            for _ in range(bootstrap)
        ]
    )
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
