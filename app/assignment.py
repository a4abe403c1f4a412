"""Who rates what: leasing task slots to raters, safely under concurrency, and reclaiming them.

A task needs `required_judgements` judgements from different raters. Its slots are counted on
the task row itself (`judgement_count + lease_count`), and every change to them happens while
holding that row's lock. On PostgreSQL the next task is picked and locked by one
`SELECT ... FOR UPDATE SKIP LOCKED`: concurrent raters skip each other's rows instead of
queueing, and a row that changed meanwhile is re-checked against its new counts. SQLite ignores
row locks; there the `BEGIN IMMEDIATE` transactions of `app.db` serialise writers instead.
"""

from __future__ import annotations

import random
from datetime import datetime, timedelta

from sqlalchemy import and_, exists, func, or_, select, update
from sqlalchemy.orm import Session

from app.errors import PermissionDenied, RateLimited
from app.models import (
    Assignment,
    AssignmentStatus,
    Judgement,
    Prompt,
    Response,
    Task,
    TaskResponse,
    TaskStatus,
    User,
    utcnow,
)
from app.schemas import MessageOut, PromptOut, ResponseOut, TaskOut

FINISHED = (AssignmentStatus.SUBMITTED, AssignmentStatus.SKIPPED)
REMAINING = Task.required_judgements - Task.judgement_count - Task.lease_count


class RaterPaused(PermissionDenied):
    """The rater is paused (by an admin or by their trust score) and gets no tasks."""

    def __init__(self, reason: str | None) -> None:
        self.reason = reason
        because = f": {reason}" if reason else ""
        super().__init__(f"Your rating is paused{because}. An admin can resume it.")


def _is_live(now: datetime):
    return and_(Assignment.status == AssignmentStatus.ACTIVE, Assignment.expires_at > now)


def lock_task(db: Session, task_id: int) -> Task | None:
    """The task, with its row lock held until the transaction ends."""
    return db.scalar(select(Task).where(Task.id == task_id).with_for_update())


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
    gold_rate: float = 0.0,
    rng: random.Random | None = None,
) -> Assignment | None:
    """Lease the open task closest to completion that this rater may judge, or None.

    With probability `gold_rate` it is a gold task the rater has not done yet (while one is
    left), otherwise an ordinary task.
    Raises RaterPaused for a paused rater, and RateLimited when the rater already holds
    `max_open_leases` live leases.
    """
    if rater.paused_at is not None:
        raise RaterPaused(rater.pause_reason)
    now = utcnow()
    active = _active_assignments(db, rater_id=rater.id)
    held = [assignment for assignment in active if assignment.expires_at > now]
    if len(held) >= max_open_leases:
        retry_after = (held[0].expires_at - now).total_seconds()
        raise RateLimited("Finish or skip the tasks you hold before taking more.", int(retry_after))
    task = None
    if gold_rate > 0 and (rng or random).random() < gold_rate:
        task = _first_unlocked(db, _gold_candidates(rater_id=rater.id, now=now))
    task = task or _first_unlocked(db, _candidates(rater_id=rater.id, now=now))
    if task is None:
        return None
    # A lease of this rater's on this task that ran out is still "active" until reclaimed;
    # close it, so that the one-live-lease-per-rater index admits the new one.
    for stale in (assignment for assignment in active if assignment.task_id == task.id):
        stale.status, stale.finished_at = AssignmentStatus.EXPIRED, now
        task.lease_count -= 1
    db.flush()
    return _lease(db, task, rater_id=rater.id, now=now, minutes=lease_minutes, rng=rng)


def _active_assignments(
    db: Session, *, rater_id: int, task_id: int | None = None
) -> list[Assignment]:
    """The rater's assignments marked active, live or run out (on one task, if given), oldest
    first, as the database holds them now."""
    query = select(Assignment).where(
        Assignment.rater_id == rater_id, Assignment.status == AssignmentStatus.ACTIVE
    )
    if task_id is not None:
        query = query.where(Assignment.task_id == task_id)
    query = query.order_by(Assignment.leased_at, Assignment.id)
    return list(db.scalars(query.execution_options(populate_existing=True)))


def _first_unlocked(db: Session, candidates) -> Task | None:
    """The first of the candidate tasks that nobody else is leasing right now, locked."""
    return db.scalar(candidates.limit(1).with_for_update(skip_locked=True, of=Task))


def _candidates(*, rater_id: int, now: datetime):
    """Open tasks with a free slot that the rater has not judged, skipped or leased, the ones
    closest to completion first (gold tasks apart)."""
    return (
        select(Task)
        .where(
            Task.status == TaskStatus.OPEN,
            ~Task.is_gold,
            REMAINING > 0,
            ~_touched_by_rater(Task.id, rater_id=rater_id, now=now),
        )
        .order_by(REMAINING, Task.id)
    )


def _gold_candidates(*, rater_id: int, now: datetime):
    """Gold tasks the rater has not judged, skipped or leased. Every rater may do each one, so
    their slots are not counted."""
    return (
        select(Task)
        .where(
            Task.status == TaskStatus.OPEN,
            Task.is_gold,
            ~_touched_by_rater(Task.id, rater_id=rater_id, now=now),
        )
        .order_by(Task.id)
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


def _lease(
    db: Session,
    task: Task,
    *,
    rater_id: int,
    now: datetime,
    minutes: float,
    rng: random.Random | None,
) -> Assignment:
    order = list(
        db.scalars(
            select(TaskResponse.response_id)
            .where(TaskResponse.task_id == task.id)
            .order_by(TaskResponse.position)
        )
    )
    (rng or random).shuffle(order)  # position bias is measured against this recorded order
    assignment = Assignment(
        task_id=task.id,
        rater_id=rater_id,
        response_order=order,
        leased_at=now,
        expires_at=now + timedelta(minutes=minutes),
    )
    db.add(assignment)
    task.lease_count += 1
    db.flush()
    return assignment


def release_lease(task: Task, assignment: Assignment, status: AssignmentStatus) -> None:
    """End a lease as submitted, skipped or expired; the caller holds the task's lock."""
    assignment.status, assignment.finished_at = status, utcnow()
    task.lease_count -= 1


def release_rater_leases(db: Session, *, rater_id: int) -> int:
    """End every lease the rater holds, freeing the slots for others; returns how many.

    Tasks are locked in id order (the same order for every caller, so no deadlock), and each
    lease is re-read under its task's lock: it may have been submitted meanwhile.
    """
    task_ids = db.scalars(
        select(Assignment.task_id)
        .where(Assignment.rater_id == rater_id, Assignment.status == AssignmentStatus.ACTIVE)
        .distinct()
        .order_by(Assignment.task_id)
    ).all()
    released = 0
    for task_id in task_ids:
        task = lock_task(db, task_id)
        for assignment in _active_assignments(db, rater_id=rater_id, task_id=task_id):
            release_lease(task, assignment, AssignmentStatus.EXPIRED)
            released += 1
    db.flush()
    return released


def expire_stale_leases(db: Session) -> int:
    """Reclaim leases whose time ran out, freeing their slots; returns how many.

    One task at a time, each under its lock; a task that is busy right now is left for the
    next run rather than waited for.
    """
    now = utcnow()
    stale_tasks = db.scalars(
        select(Assignment.task_id)
        .where(Assignment.status == AssignmentStatus.ACTIVE, Assignment.expires_at <= now)
        .distinct()
    ).all()
    reclaimed = 0
    for task_id in stale_tasks:
        task = db.scalar(select(Task).where(Task.id == task_id).with_for_update(skip_locked=True))
        if task is None:
            continue
        expired = db.execute(
            update(Assignment)
            .where(
                Assignment.task_id == task_id,
                Assignment.status == AssignmentStatus.ACTIVE,
                Assignment.expires_at <= now,
            )
            .values(status=AssignmentStatus.EXPIRED, finished_at=now)
        ).rowcount
        task.lease_count -= expired or 0
        reclaimed += expired or 0
    db.flush()
    return reclaimed


def current_or_next(
    db: Session, *, rater: User, lease_minutes: float, max_open_leases: int, gold_rate: float = 0.0
) -> Assignment | None:
    """The rater's oldest live lease (a reload shows the same task), else a new one."""
    if held := open_leases(db, rater_id=rater.id):
        return held[0]
    return assign_next_task(
        db,
        rater=rater,
        lease_minutes=lease_minutes,
        max_open_leases=max_open_leases,
        gold_rate=gold_rate,
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
        _candidates(rater_id=rater_id, now=utcnow()).order_by(None).subquery()
    )
    return {
        "judged": db.scalar(judged) or 0,
        "today": db.scalar(judged.where(Judgement.created_at >= today)) or 0,
        "skipped": db.scalar(skipped) or 0,
        "available": db.scalar(available) or 0,
    }


def task_view(db: Session, assignment: Assignment) -> TaskOut:
    """The leased task as its rater sees it, responses in the order recorded on the lease."""
    prompt = db.scalar(
        select(Prompt).join(Task, Task.prompt_id == Prompt.id).where(Task.id == assignment.task_id)
    )
    rows = db.execute(
        select(Response.id, Response.text).where(Response.id.in_(assignment.response_order))
    )
    texts = {response_id: text for response_id, text in rows}
    return TaskOut(
        task_id=assignment.task_id,
        prompt=PromptOut(
            id=prompt.id, messages=[MessageOut(**message) for message in prompt.messages]
        ),
        responses=[
            ResponseOut(id=response_id, text=texts[response_id])
            for response_id in assignment.response_order
        ],
        lease_expires_at=assignment.expires_at,
    )
