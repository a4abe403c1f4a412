"""The admin dashboard's figures: what has been collected, how fast, and whether the queue and
the workers keep up.

Every figure is one indexed aggregate query, so the dashboard stays fast with hundreds of
thousands of judgements; nothing here reads rows one by one.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any, NamedTuple

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from app.models import Job, Judgement, Prompt, Round, RunStatus, Task, utcnow

ACTIVE_WINDOW = timedelta(days=7)
HISTORY_DAYS = 30
STALLED_QUEUE = timedelta(minutes=10)
"""Work queued longer than this, while nothing runs, means no worker is taking it."""


@dataclass(frozen=True)
class Day:
    day: date
    judgements: int
    raters: int


@dataclass(frozen=True)
class Collection:
    prompts: int
    tasks: dict[str, int]
    judgements: int
    active_raters: int
    last_24h: int
    days: list[Day]

    def series(self, name: str) -> list[tuple[str, int]]:
        """One daily figure (`judgements` or `raters`) as (ISO day, value) points for a chart."""
        return [(day.day.isoformat(), getattr(day, name)) for day in self.days]

    @property
    def per_hour(self) -> float:
        """The collection rate over the last 24 hours."""
        return self.last_24h / 24


class Problem(NamedTuple):
    """Something wrong with the queue or the workers: `kind` names it (`lost_worker`,
    `stalled_queue`; pages word it from the catalogue, `admin.problem.<kind>`), `count` says
    how many runs or minutes."""

    kind: str
    count: int


@dataclass(frozen=True)
class QueueHealth:
    jobs: dict[str, int]
    rounds: dict[str, int]
    lost_leases: int
    """Running jobs and rounds whose worker stopped renewing its lease."""
    oldest_queued: datetime | None

    @property
    def problems(self) -> list[Problem]:
        found = []
        if self.lost_leases:
            found.append(Problem("lost_worker", self.lost_leases))
        running = self.jobs.get("running", 0) + self.rounds.get("running", 0)
        if self.oldest_queued and not running and utcnow() - self.oldest_queued > STALLED_QUEUE:
            found.append(Problem("stalled_queue", STALLED_QUEUE.seconds // 60))
        return found


def status_counts(db: Session, column) -> dict[str, int]:
    """Rows per status value of `column` (a table's `status`)."""
    return {
        status.value: count
        for status, count in db.execute(select(column, func.count()).group_by(column))
    }


def collection(db: Session, *, days: int = HISTORY_DAYS) -> Collection:
    now = utcnow()
    return Collection(
        prompts=db.scalar(select(func.count()).select_from(Prompt)) or 0,
        tasks=status_counts(db, Task.status),
        judgements=db.scalar(select(func.count()).select_from(Judgement)) or 0,
        active_raters=_raters_since(db, now - ACTIVE_WINDOW),
        last_24h=db.scalar(
            select(func.count()).where(Judgement.created_at >= now - timedelta(hours=24))
        )
        or 0,
        days=_per_day(db, since=(now - timedelta(days=days - 1)).date(), until=now.date()),
    )


def _raters_since(db: Session, since: datetime) -> int:
    query = select(func.count(func.distinct(Judgement.rater_id)))
    return db.scalar(query.where(Judgement.created_at >= since)) or 0


def _per_day(db: Session, *, since: date, until: date) -> list[Day]:
    """Judgements and distinct raters per UTC day, with the days without any filled in."""
    day = func.date(Judgement.created_at)
    start = datetime(since.year, since.month, since.day, tzinfo=utcnow().tzinfo)
    rows = db.execute(
        select(day, func.count(), func.count(func.distinct(Judgement.rater_id)))
        .where(Judgement.created_at >= start)
        .group_by(day)
    )
    found = {_as_date(value): (count, raters) for value, count, raters in rows}
    span = (until - since).days + 1
    return [
        Day(current, *found.get(current, (0, 0)))
        for current in (since + timedelta(days=offset) for offset in range(span))
    ]


def _as_date(value: Any) -> date:
    """SQLite's `date()` gives text, PostgreSQL's a date."""
    return value if isinstance(value, date) else date.fromisoformat(value)


def queue_health(db: Session) -> QueueHealth:
    now = utcnow()
    lost = sum(
        db.scalar(
            select(func.count()).where(
                table.status == RunStatus.RUNNING,
                table.lease_owner.is_not(None),
                table.lease_expires_at < now,
            )
        )
        or 0
        for table in (Job, Round)
    )
    oldest = [
        db.scalar(select(func.min(table.created_at)).where(table.status == RunStatus.QUEUED))
        for table in (Job, Round)
    ]
    return QueueHealth(
        jobs=status_counts(db, Job.status),
        rounds=status_counts(db, Round.status),
        lost_leases=lost,
        oldest_queued=min((when for when in oldest if when is not None), default=None),
    )
