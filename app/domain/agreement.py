"""Inter-rater agreement: Krippendorff's alpha on preferences and on per-aspect ratings.

Alpha (Krippendorff 2011, "Computing Krippendorff's alpha-reliability") compares the
disagreement observed among raters of the same unit with the disagreement expected by chance;
1 is perfect agreement, 0 is chance, below 0 is systematic disagreement. Units judged by one
rater only say nothing about agreement and are left out.

- Preferences: a unit is one pair of answers of a task; each rater's current judgement says
  which of the two is better or that they tie (-1, 0, 1; ordinal, ties between).
- Ratings: a unit is one answer's score on one aspect (1-7; interval).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from itertools import combinations
from typing import Literal

import numpy as np
from sqlalchemy import select
from sqlalchemy.orm import Session

from app.domain.preferences import current_judgements
from app.models import Prompt, Task

Level = Literal["nominal", "ordinal", "interval"]
Units = dict[tuple, list[float]]


def krippendorff_alpha(units: Iterable[Sequence[float]], level: Level = "nominal") -> float:
    """Alpha over `units`, each the values its raters gave (nan when no unit is pairable or
    all values are the same)."""
    pairable = [list(values) for values in units if len(values) >= 2]
    domain = sorted({value for values in pairable for value in values})
    if len(domain) < 2:
        return float("nan")
    index = {value: number for number, value in enumerate(domain)}
    coincidences = np.zeros((len(domain), len(domain)))
    for values in pairable:
        counts = np.bincount([index[value] for value in values], minlength=len(domain))
        coincidences += (np.outer(counts, counts) - np.diag(counts)) / (len(values) - 1)
    totals = coincidences.sum(1)
    delta = _distances(np.array(domain, dtype=float), totals, level)
    observed = (coincidences * delta).sum()
    expected = (np.outer(totals, totals) * delta).sum() / (totals.sum() - 1)
    return float(1 - observed / expected)


def _distances(domain: np.ndarray, totals: np.ndarray, level: Level) -> np.ndarray:
    """Squared distance between every two values of the domain, for the level of measurement."""
    if level == "nominal":
        return 1.0 - np.eye(len(domain))
    if level == "interval":
        return (domain[:, None] - domain[None, :]) ** 2
    cumulative = np.concatenate([[0.0], np.cumsum(totals)])  # ordinal: ranks by frequency
    low = np.minimum.outer(np.arange(len(domain)), np.arange(len(domain)))
    high = np.maximum.outer(np.arange(len(domain)), np.arange(len(domain)))
    between = cumulative[high + 1] - cumulative[low]
    return (between - (totals[:, None] + totals[None, :]) / 2) ** 2


def judgement_units(db: Session) -> tuple[Units, dict[str, Units], dict[int, list[str]]]:
    """Preference units, rating units per aspect (both keyed by task first), and the tags of
    each task's prompt, from the current judgements."""
    judgements = list(current_judgements(db))
    task_ids = {judgement.task_id for judgement in judgements}
    tags = dict(
        db.execute(
            select(Task.id, Prompt.tags)
            .join(Prompt, Prompt.id == Task.prompt_id)
            .where(Task.id.in_(task_ids))
        ).all()
    )
    preferences: Units = {}
    aspects: dict[str, Units] = {}
    for judgement in judgements:
        rank = _ranks(judgement.ranking)
        for first, second in combinations(sorted(rank), 2):
            value = float(np.sign(rank[second] - rank[first]))  # 1: first is better
            preferences.setdefault((judgement.task_id, first, second), []).append(value)
        for response_id, scores in (judgement.ratings or {}).items():
            for aspect, score in scores.items():
                unit = (judgement.task_id, int(response_id))
                aspects.setdefault(aspect, {}).setdefault(unit, []).append(float(score))
    return preferences, aspects, {task: task_tags or [] for task, task_tags in tags.items()}


def _ranks(ranking: list) -> dict[int, int]:
    """Response id -> place in a best-first ranking (tied answers share a place)."""
    return {
        response_id: place
        for place, entry in enumerate(ranking)
        for response_id in (entry if isinstance(entry, list) else [entry])
    }


def agreement_report(db: Session) -> dict:
    """Alpha on preferences and per aspect, overall, and on preferences per prompt tag, with
    the number of units that more than one rater judged."""
    preferences, aspects, tags = judgement_units(db)
    by_tag: dict[str, Units] = {}
    for unit, values in preferences.items():
        for tag in tags.get(unit[0], []):
            by_tag.setdefault(tag, {})[unit] = values
    return {
        "preferences": _summary(preferences, "ordinal"),
        "aspects": {
            aspect: _summary(units, "interval") for aspect, units in sorted(aspects.items())
        },
        "by_tag": {tag: _summary(units, "ordinal") for tag, units in sorted(by_tag.items())},
    }


def _summary(units: Units, level: Level) -> dict:
    pairable = [values for values in units.values() if len(values) >= 2]
    alpha = krippendorff_alpha(pairable, level)
    return {"alpha": None if alpha != alpha else round(alpha, 4), "units": len(pairable)}
