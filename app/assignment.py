"""Who rates what: leasing task slots to raters, safely under concurrency, and reclaiming them.

A task needs `required_judgements` judgements from different raters. A slot is taken by a
judgement or by a live lease (active and not expired). Every change to a task's slots happens
while holding that task's row lock: `SELECT ... FOR UPDATE` on PostgreSQL; on SQLite, which
ignores it, the `BEGIN IMMEDIATE` transactions of `app.db` serialise writers instead. Under the
lock the slots are counted again with a fresh statement, so no slot is ever leased twice.
"""

from __future__ import annotations

import random
from datetime import datetime, timedelta

from sqlalchemy import and_, exists, func, or_, select, update
from sqlalchemy.orm import Session, selectinload

from app.errors import RateLimited
from app.models import (
    Assignment,
    AssignmentStatus,
    Judgement,
    Prompt,
    Response,
    Task,
    TaskStatus,
    User,
    utcnow,
)
from app.schemas import MessageOut, PromptOut, ResponseOut, TaskOut

CANDIDATE_BATCH = 32
MAX_CANDIDATE_BATCHES = 8
FINISHED = (AssignmentStatus.SUBMITTED, AssignmentStatus.SKIPPED)


def _is_live(now: datetime):
    return and_(Assignment.status == AssignmentStatus.ACTIVE, Assignment.expires_at > now)


def lock_task(db: Session, task_id: int, *, skip_locked: bool = False) -> Task | None:
    """The task with its row lock held until the transaction ends (None if missing or, with
    `skip_locked`, if another transaction holds it)."""
    return db.scalar(
        select(Task)
        .where(Task.id == task_id)
        .options(selectinload(Task.responses))
        .with_for_update(skip_locked=skip_locked, of=Task)
    )


def slots_taken(db: Session, task_id: int, now: datetime) -> int:
    judged = db.scalar(
        select(func.count())
        .select_from(Judgement)
        .where(Judgement.task_id == task_id, Judgement.supersedes_id.is_(None))
    )
    leased = db.scalar(
        select(func.count())
        .select_from(Assignment)
        .where(Assignment.task_id == task_id, _is_live(now))
    )
    return (judged or 0) + (leased or 0)


def live_assignment(db: Session, *, task_id: int, rater_id: int) -> Assignment | None:
    return db.scalar(
        select(Assignment).where(
            Assignment.task_id == task_id, Assignment.rater_id == rater_id, _is_live(utcnow())
        )
    )


def open_leases(db: Session, *, rater_id: int) -> list[Assignment]:
    """The rater's live leases, oldest first."""
    return list(
        db.scalars(
            select(Assignment)
            .where(Assignment.rater_id == rater_id, _is_live(utcnow()))
            .order_by(Assignment.leased_at, Assignment.id)
        )
    )


def assign_next_task(
    db: Session,
    *,
    rater: User,
    lease_minutes: float,
    max_open_leases: int,
    rng: random.Random | None = None,
) -> Assignment | None:
    """Lease the open task closest to completion that this rater may judge, or None.

    Raises RateLimited when the rater already holds `max_open_leases` live leases.
    """
    now = utcnow()
    held = open_leases(db, rater_id=rater.id)
    if len(held) >= max_open_leases:
        retry_after = (held[0].expires_at - now).total_seconds()
        raise RateLimited("Finish or skip the tasks you hold before taking more.", int(retry_after))
    seen: set[int] = set()
    for _ in range(MAX_CANDIDATE_BATCHES):
        candidates = _candidate_task_ids(db, rater_id=rater.id, now=now, exclude=seen)
        if not candidates:
            return None
        seen.update(candidates)
        for task_id in candidates:
            task = lock_task(db, task_id, skip_locked=True)
            if task is not None and _may_lease(db, task, rater_id=rater.id, now=now):
                return _lease(db, task, rater_id=rater.id, now=now, minutes=lease_minutes, rng=rng)
    return None


def _candidate_task_ids(
    db: Session, *, rater_id: int, now: datetime, exclude: set[int]
) -> list[int]:
    """The next batch of candidates, closest to completion first. Read without locks:
    `_may_lease` checks again under the task's lock."""
    query = _candidates_query(rater_id=rater_id, now=now).limit(CANDIDATE_BATCH)
    if exclude:
        query = query.where(Task.id.not_in(exclude))
    return list(db.scalars(query))


def _candidates_query(*, rater_id: int, now: datetime):
    """Open tasks with a free slot that the rater has not judged, skipped or leased."""
    judged = (
        select(func.count())
        .where(Judgement.task_id == Task.id, Judgement.supersedes_id.is_(None))
        .correlate(Task)
        .scalar_subquery()
    )
    leased = (
        select(func.count())
        .where(Assignment.task_id == Task.id, _is_live(now))
        .correlate(Task)
        .scalar_subquery()
    )
    remaining = Task.required_judgements - judged - leased
    return (
        select(Task.id)
        .where(
            Task.status == TaskStatus.OPEN,
            remaining > 0,
            ~_touched_by_rater(Task.id, rater_id=rater_id, now=now),
        )
        .order_by(remaining, Task.id)
    )


def _touched_by_rater(task_id, *, rater_id: int, now: datetime):
    """Whether the rater judged or skipped the task, or holds a live lease on it."""
    return or_(
        exists().where(
            Assignment.task_id == task_id,
            Assignment.rater_id == rater_id,
            or_(Assignment.status.in_(FINISHED), _is_live(now)),
        ),
        exists().where(Judgement.task_id == task_id, Judgement.rater_id == rater_id),
    )


def _may_lease(db: Session, task: Task, *, rater_id: int, now: datetime) -> bool:
    if task.status != TaskStatus.OPEN:
        return False
    if slots_taken(db, task.id, now) >= task.required_judgements:
        return False
    touched = db.scalar(select(_touched_by_rater(task.id, rater_id=rater_id, now=now)))
    return not touched


def _lease(
    db: Session,
    task: Task,
    *,
    rater_id: int,
    now: datetime,
    minutes: float,
    rng: random.Random | None,
) -> Assignment:
    # A lease of this rater's that ran out still counts as "active" in the table until
    # reclaimed; close it so that the one-live-lease-per-rater index admits the new one.
    db.execute(
        update(Assignment)
        .where(
            Assignment.task_id == task.id,
            Assignment.rater_id == rater_id,
            Assignment.status == AssignmentStatus.ACTIVE,
        )
        .values(status=AssignmentStatus.EXPIRED, finished_at=now)
    )
    order = [link.response_id for link in task.responses]
    (rng or random).shuffle(order)  # position bias is measured against this recorded order
    assignment = Assignment(
        task_id=task.id,
        rater_id=rater_id,
        response_order=order,
        leased_at=now,
        expires_at=now + timedelta(minutes=minutes),
    )
    db.add(assignment)
    db.flush()
    return assignment


def expire_stale_leases(db: Session) -> int:
    """Mark run-out leases as expired (their slots are already free); returns how many."""
    result = db.execute(
        update(Assignment)
        .where(Assignment.status == AssignmentStatus.ACTIVE, Assignment.expires_at <= utcnow())
        .values(status=AssignmentStatus.EXPIRED, finished_at=utcnow())
    )
    return result.rowcount or 0


def task_view(db: Session, assignment: Assignment) -> TaskOut:
    """The leased task as its rater sees it, responses in the order recorded on the lease."""
    task = db.get(Task, assignment.task_id)
    prompt = db.get(Prompt, task.prompt_id)
    responses = {
        response.id: response
        for response in db.scalars(
            select(Response).where(Response.id.in_(assignment.response_order))
        )
    }
    return TaskOut(
        task_id=task.id,
        prompt=PromptOut(
            id=prompt.id, messages=[MessageOut(**message) for message in prompt.messages]
        ),
        responses=[
            ResponseOut(id=response_id, text=responses[response_id].text)
            for response_id in assignment.response_order
        ],
        lease_expires_at=assignment.expires_at,
    )


def current_or_next(
    db: Session, *, rater: User, lease_minutes: float, max_open_leases: int
) -> Assignment | None:
    """The rater's oldest live lease (a reload shows the same task), else a new one."""
    if held := open_leases(db, rater_id=rater.id):
        return held[0]
    return assign_next_task(
        db, rater=rater, lease_minutes=lease_minutes, max_open_leases=max_open_leases
    )


def rating_progress(db: Session, *, rater_id: int) -> dict[str, int]:
    """What the rater's home page shows: their judgements, today's, skips, and tasks waiting."""
    today = utcnow().replace(hour=0, minute=0, second=0, microsecond=0)
    judged = select(func.count()).select_from(Judgement).where(Judgement.rater_id == rater_id)
    skipped = (
        select(func.count())
        .select_from(Assignment)
        .where(Assignment.rater_id == rater_id, Assignment.status == AssignmentStatus.SKIPPED)
    )
    available = select(func.count()).select_from(
        _candidates_query(rater_id=rater_id, now=utcnow()).subquery()
    )
    return {
        "judged": db.scalar(judged) or 0,
        "today": db.scalar(judged.where(Judgement.created_at >= today)) or 0,
        "skipped": db.scalar(skipped) or 0,
        "available": db.scalar(available) or 0,
    }
