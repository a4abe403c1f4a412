"""Rater quality: each rater's figures and trust score, gold tasks, and pausing raters.

The figures are recomputed in bulk (`refresh_quality`, a Celery task every 10 minutes and on
request) into one `RaterQuality` row per rater and a `QualityReport`, so that pages read a few
stored rows however many judgements there are. Only each correction chain's current judgement
counts. Per rater:

- consensus tau: Kendall's tau-b between the rater's ranking of a task and the consensus of
  the task's other raters (their mean rank per response; leave-one-out), averaged over the
  tasks where both sides order something. 1: always the consensus order, 0: unrelated, -1:
  always the reverse.
- gold accuracy: the share of the gold tasks the rater judged where their ranking orders every
  pair that the gold ranking orders strictly the same way (pairs tied in the gold answer are
  free). On a pairwise task that means picking the gold winner.
- first-shown rate: among the judgements with a single top choice, the share where the top
  choice was the response the rater was shown first. Responses are shuffled per lease, so an
  unbiased rater scores 1/n on n-response tasks (0.5 on pairs).
- median seconds per task, from the time the rating page measured.

The trust score, in [0, 1], multiplies three factors:

    accuracy  = mean of the known of (consensus tau + 1) / 2 and gold accuracy
    position  = 1 - max(0, first-shown rate - chance) / (1 - chance)
    speed     = min(1, median seconds / PLAUSIBLE_SECONDS)
    trust     = accuracy * position * speed

Coin-flipping earns an accuracy of about 0.5 on pairwise tasks; always picking the response
shown first zeroes the position factor; a missing figure leaves its factor at 1. A rater with
neither a consensus nor a gold answer has no trust score. Trust counts (for snapshot weights
and automatic pausing) once the rater has `trust_min_judgements` judgements.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from datetime import datetime
from itertools import combinations
from statistics import fmean, median

from celery import Celery
from sqlalchemy import delete, func, or_, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session, selectinload

from app import broker
from app.config import Settings
from app.domain.agreement import agreement_report
from app.domain.assignment import lock_task, release_rater_leases
from app.domain.judgements import canonical_ranking
from app.domain.preferences import is_current
from app.errors import Conflict, NotFound, ServiceUnavailable
from app.models import (
    Assignment,
    Judgement,
    QualityReport,
    RaterQuality,
    Role,
    Task,
    TaskStatus,
    User,
    utcnow,
)
from app.schemas import RankingEntry
from app.tasks_contract import REFRESH_QUALITY

"""The Celery task that runs `refresh_quality` (the contract between web and worker)."""
PLAUSIBLE_SECONDS = 5.0
"""A median under this many seconds per task means the responses were not read."""
UPSERT_BATCH = 500


@dataclass(frozen=True)
class Verdict:
    """One current judgement, as the figures need it."""

    task_id: int
    rater_id: int
    ranking: list
    shown_order: list[int] | None
    """The response ids in the order the rater saw them (None without a lease)."""
    time_spent_ms: int | None
    gold_ranking: list | None
    """The task's known answer, for gold tasks."""


@dataclass(frozen=True)
class RaterFigures:
    """One rater's figures: the columns of their `RaterQuality` row."""

    judgements: int
    consensus_tau: float | None
    consensus_tasks: int
    gold_answered: int
    gold_correct: int
    first_shown_rate: float | None
    median_seconds: float | None
    trust: float | None = None


# --- the figures ---------------------------------------------------------------------------------


def fractional_ranks(ranking: list) -> dict[int, float]:
    """Response id -> rank from 1 (best) in a best-first ranking; tied responses share the mean
    of the places they take: `[3, [1, 2]]` gives {3: 1, 1: 2.5, 2: 2.5}."""
    ranks: dict[int, float] = {}
    place = 1
    for entry in ranking:
        group = entry if isinstance(entry, list) else [entry]
        for response_id in group:
            ranks[response_id] = place + (len(group) - 1) / 2
        place += len(group)
    return ranks


def kendall_tau_b(x: Sequence[float], y: Sequence[float]) -> float | None:
    """Kendall's tau-b (Kendall 1945): concordant minus discordant pairs, over the geometric
    mean of the pairs untied in `x` and the pairs untied in `y`. None when either side is all
    ties (the statistic is undefined there)."""
    products = untied_x = untied_y = 0
    for i, j in combinations(range(len(x)), 2):
        dx, dy = _sign(x[i] - x[j]), _sign(y[i] - y[j])
        products += dx * dy
        untied_x += dx != 0
        untied_y += dy != 0
    if not untied_x or not untied_y:
        return None
    return products / math.sqrt(untied_x * untied_y)


def _sign(value: float) -> int:
    return (value > 0) - (value < 0)


def matches_gold(ranking: list, gold: list) -> bool:
    """Whether `ranking` orders every pair that `gold` orders strictly the same way."""
    mine, truth = fractional_ranks(ranking), fractional_ranks(gold)
    return all(
        _sign(mine[a] - mine[b]) == _sign(truth[a] - truth[b])
        for a, b in combinations(truth, 2)
        if truth[a] != truth[b]
    )


def consensus_taus(verdicts: Sequence[Verdict]) -> dict[int, list[float]]:
    """Rater id -> tau-b of each of their rankings against the other raters of the same task
    (their rank sums, which order the responses as their mean ranks do)."""
    by_task: dict[int, list[Verdict]] = defaultdict(list)
    for verdict in verdicts:
        by_task[verdict.task_id].append(verdict)
    taus: dict[int, list[float]] = defaultdict(list)
    for task_verdicts in by_task.values():
        if len(task_verdicts) < 2:
            continue
        ranks = [fractional_ranks(verdict.ranking) for verdict in task_verdicts]
        responses = sorted(ranks[0])
        totals = [sum(rank[response] for rank in ranks) for response in responses]
        for verdict, own in zip(task_verdicts, ranks, strict=True):
            mine = [own[response] for response in responses]
            others = [total - rank for total, rank in zip(totals, mine, strict=True)]
            if (tau := kendall_tau_b(mine, others)) is not None:
                taus[verdict.rater_id].append(tau)
    return taus


def trust_score(
    *,
    consensus_tau: float | None,
    gold_accuracy: float | None,
    first_shown_rate: float | None,
    chance_first_rate: float | None,
    median_seconds: float | None,
) -> float | None:
    """accuracy x position x speed (see the module docstring); None without an accuracy."""
    agreement = None if consensus_tau is None else (consensus_tau + 1) / 2
    accuracy = [score for score in (agreement, gold_accuracy) if score is not None]
    if not accuracy:
        return None
    position = 1.0
    if first_shown_rate is not None and chance_first_rate is not None:
        excess = max(0.0, first_shown_rate - chance_first_rate)
        position = 1 - excess / (1 - chance_first_rate)
    speed = 1.0 if median_seconds is None else min(1.0, median_seconds / PLAUSIBLE_SECONDS)
    return fmean(accuracy) * position * speed


def rater_figures(verdicts: Sequence[Verdict]) -> dict[int, RaterFigures]:
    """Every rater's figures and trust, from all current judgements."""
    by_rater: dict[int, list[Verdict]] = defaultdict(list)
    for verdict in verdicts:
        by_rater[verdict.rater_id].append(verdict)
    taus = consensus_taus(verdicts)
    return {rater: _figures(own, taus.get(rater, [])) for rater, own in by_rater.items()}


def _figures(own: list[Verdict], taus: list[float]) -> RaterFigures:
    gold = [matches_gold(v.ranking, v.gold_ranking) for v in own if v.gold_ranking is not None]
    single_top = [v for v in own if v.shown_order and not isinstance(v.ranking[0], list)]
    seconds = [v.time_spent_ms / 1000 for v in own if v.time_spent_ms is not None]
    figures = RaterFigures(
        judgements=len(own),
        consensus_tau=_mean(taus),
        consensus_tasks=len(taus),
        gold_answered=len(gold),
        gold_correct=sum(gold),
        first_shown_rate=_mean([v.ranking[0] == v.shown_order[0] for v in single_top]),
        median_seconds=median(seconds) if seconds else None,
    )
    trust = trust_score(
        consensus_tau=figures.consensus_tau,
        gold_accuracy=_mean(gold),
        first_shown_rate=figures.first_shown_rate,
        chance_first_rate=_mean([1 / len(v.shown_order) for v in single_top]),
        median_seconds=figures.median_seconds,
    )
    return replace(figures, trust=trust)


def _mean(values: Sequence[float]) -> float | None:
    return fmean(values) if values else None


# --- refreshing the stored figures ---------------------------------------------------------------


def load_verdicts(db: Session) -> list[Verdict]:
    """Every current judgement with what the figures need, in one query."""
    rows = db.execute(
        select(
            Judgement.task_id,
            Judgement.rater_id,
            Judgement.ranking,
            Assignment.response_order,
            Judgement.time_spent_ms,
            Task.is_gold,
            Task.gold_ranking,
        )
        .join(Task, Task.id == Judgement.task_id)
        .outerjoin(Assignment, Assignment.id == Judgement.assignment_id)
        .where(is_current())
        .order_by(Judgement.id)
    )
    return [
        Verdict(task_id, rater_id, ranking, shown, spent, gold_ranking if is_gold else None)
        for task_id, rater_id, ranking, shown, spent, is_gold, gold_ranking in rows
    ]


def refresh_quality(db: Session, settings: Settings) -> dict[str, int]:
    """Recompute every rater's figures and the agreement report, store them, and pause raters
    whose trust fell below `trust_pause_below`; returns how many raters and pauses."""
    figures = rater_figures(load_verdicts(db))
    counted_before = dict(db.execute(select(RaterQuality.rater_id, RaterQuality.judgements)).all())
    now = utcnow()
    _store_figures(db, figures, now)
    paused = _pause_low_trust(db, settings, figures, counted_before)
    db.add(QualityReport(report=agreement_report(db), computed_at=now))
    db.flush()
    return {"raters": len(figures), "paused": paused}


def _store_figures(db: Session, figures: dict[int, RaterFigures], now: datetime) -> None:
    """Replace the stored rows. An upsert, so that two refreshes at once cannot collide."""
    db.execute(delete(RaterQuality).where(RaterQuality.rater_id.not_in(list(figures))))
    rows = [
        {"rater_id": rater, **asdict(own), "computed_at": now}
        for rater, own in sorted(figures.items())
    ]
    dialect = postgresql if db.get_bind().dialect.name == "postgresql" else sqlite
    for start in range(0, len(rows), UPSERT_BATCH):
        statement = dialect.insert(RaterQuality).values(rows[start : start + UPSERT_BATCH])
        updated = {column: statement.excluded[column] for column in rows[0] if column != "rater_id"}
        db.execute(statement.on_conflict_do_update(index_elements=["rater_id"], set_=updated))
    db.flush()
    db.expire_all()  # rows loaded earlier in this session hold the old figures


def trust_counts(figures: RaterFigures | RaterQuality, settings: Settings) -> bool:
    """Whether the trust score is backed by enough judgements to act on."""
    return figures.trust is not None and figures.judgements >= settings.trust_min_judgements


def _pause_low_trust(
    db: Session, settings: Settings, figures: dict[int, RaterFigures], counted_before: dict
) -> int:
    """Pause raters whose counted trust is below the threshold and who judged something since
    the last refresh: a rater an admin resumed stays resumed until new work still scores low."""
    threshold = settings.trust_pause_below
    if threshold <= 0:
        return 0
    low = {
        rater: own.trust
        for rater, own in figures.items()
        if trust_counts(own, settings)
        and own.trust < threshold
        and counted_before.get(rater) != own.judgements
    }
    raters = db.scalars(select(User).where(User.id.in_(list(low)), User.paused_at.is_(None)))
    paused = 0
    for rater in raters.all():
        reason = f"trust score {low[rater.id]:.2f} is below {threshold:.2f} (automatic)"
        pause_rater(db, rater, reason=reason)
        paused += 1
    return paused


def request_refresh(celery: Celery) -> None:
    """Ask a worker to recompute the figures now rather than at the next scheduled refresh."""
    if not broker.send_task(celery, REFRESH_QUALITY):
        raise ServiceUnavailable(
            "The task queue is unavailable; the figures refresh on schedule once it is back."
        )


# --- reading the stored figures ------------------------------------------------------------------


def snapshot_weights(db: Session, settings: Settings) -> dict[int, float]:
    """Rater id -> trust, for the raters whose trust counts; snapshots weigh the others 1.0."""
    rows = db.scalars(select(RaterQuality).where(RaterQuality.trust.is_not(None)))
    return {row.rater_id: row.trust for row in rows if trust_counts(row, settings)}


def latest_report(db: Session) -> QualityReport | None:
    return db.scalar(select(QualityReport).order_by(QualityReport.id.desc()).limit(1))


def consensus_agreement(db: Session, *, rater_id: int) -> float | None:
    """The rater's agreement with the other raters' consensus as a share in [0, 1], which the
    rating page shows them: (consensus tau + 1) / 2, the same scale as the trust score's
    accuracy. None until the figures are computed with a task shared with others."""
    tau = db.scalar(select(RaterQuality.consensus_tau).where(RaterQuality.rater_id == rater_id))
    return None if tau is None else (tau + 1) / 2


def rater_rows(db: Session) -> list[tuple[User, RaterQuality | None]]:
    """Every rater (and every admin who has judged), with their stored figures if any."""
    rows = db.execute(
        select(User, RaterQuality)
        .outerjoin(RaterQuality, RaterQuality.rater_id == User.id)
        .where(or_(User.role == Role.RATER, RaterQuality.rater_id.is_not(None)))
        .order_by(User.username)
    )
    return [(user, figures) for user, figures in rows]


def gold_tasks(db: Session) -> list[Task]:
    """The gold tasks, with their responses (whose ids their rankings name)."""
    query = select(Task).where(Task.is_gold).options(selectinload(Task.responses))
    return list(db.scalars(query.order_by(Task.id)))


def escalated_task_count(db: Session) -> int:
    """Tasks that got extra raters because their first raters disagreed."""
    return db.scalar(select(func.count()).select_from(Task).where(Task.extra_judgements > 0))


# --- acting on raters and tasks ------------------------------------------------------------------


def pause_rater(db: Session, rater: User, *, reason: str) -> None:
    """Stop handing the rater tasks and free the slots they hold; their judgements stay."""
    rater.paused_at = rater.paused_at or utcnow()
    rater.pause_reason = reason
    release_rater_leases(db, rater_id=rater.id)


def resume_rater(rater: User) -> None:
    rater.paused_at = rater.pause_reason = None


def mark_gold(db: Session, *, task_id: int, ranking: list[RankingEntry]) -> Task:
    """Make the task a gold task with this known answer. It opens to every rater, and its
    judgements then measure raters instead of entering snapshots."""
    task = _locked_task(db, task_id)
    if task.status == TaskStatus.RETIRED:
        raise Conflict("A retired task cannot be a gold task.")
    response_ids = [link.response_id for link in task.responses]
    task.gold_ranking = canonical_ranking(ranking, response_ids)
    task.is_gold, task.status, task.completed_at = True, TaskStatus.OPEN, None
    return task


def unmark_gold(db: Session, *, task_id: int) -> Task:
    """Make a gold task an ordinary one again: complete if it has its judgements already."""
    task = _locked_task(db, task_id)
    task.is_gold, task.gold_ranking = False, None
    if task.status == TaskStatus.OPEN and task.judgement_count >= task.required_judgements:
        task.status, task.completed_at = TaskStatus.COMPLETE, utcnow()
    return task


def _locked_task(db: Session, task_id: int) -> Task:
    task = lock_task(db, task_id)
    if task is None:
        raise NotFound("Task not found")
    return task
