"""Who rates what: leasing task slots to raters, safely under concurrency, and reclaiming them.

A task needs `required_judgements` judgements from different raters. Its slots are counted on
the task row itself (`judgement_count + lease_count`), and every change to them happens while
holding that row's lock. On PostgreSQL the next task is picked, locked, leased and returned by
one data-modifying CTE around `SELECT ... FOR UPDATE SKIP LOCKED`: concurrent raters skip each
other's rows instead of queueing. SQLite ignores row locks; there the `BEGIN IMMEDIATE`
transactions of `app.db` serialise writers, and the same steps run one by one.

The rater API's hot path (`lease_next`) is Core statements on a connection: no ORM objects are
loaded. `assign_next_task` wraps it for code that works in an ORM session. `held_leases` shows a
rater what they hold, so a client that lost its task (a crash, a retry) gets it back.
"""

from __future__ import annotations

import random
from collections import Counter
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import (
    Connection,
    Float,
    Integer,
    and_,
    bindparam,
    exists,
    func,
    insert,
    literal,
    literal_column,
    or_,
    select,
    update,
)
from sqlalchemy.dialects.postgresql import ARRAY, aggregate_order_by
from sqlalchemy.orm import Session
from sqlalchemy.orm.util import identity_key
from sqlalchemy.sql.elements import Grouping

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
    UTCDateTime,
    utcnow,
)
from app.schemas import MAX_RESPONSES_PER_TASK, MessageOut, PromptOut, ResponseOut, TaskOut

FINISHED = (AssignmentStatus.SUBMITTED, AssignmentStatus.SKIPPED)
REMAINING = Task.required_judgements - Task.judgement_count - Task.lease_count
IS_OPEN = Task.status == literal_column(f"'{TaskStatus.OPEN.value}'")
"""Literals rather than parameters where a partial index depends on them: the plan PostgreSQL
caches for a prepared statement (after five executions) must be able to use the index of open
tasks by free slots, or each `next` sorts every open task."""


class TooManyLeases(RateLimited):
    """The rater holds as many live leases as they may; the answer names their tasks, so a
    client that lost track of them can finish, skip or release them."""

    def __init__(self, held_task_ids: list[int], retry_after_s: int) -> None:
        named = ", ".join(str(task_id) for task_id in held_task_ids)
        super().__init__(
            f"Finish, skip or release the tasks you hold ({named}) before taking more.",
            retry_after_s,
        )
        self.fields = {"held_task_ids": held_task_ids}


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


@dataclass(frozen=True)
class Lease:
    """A task slot leased to a rater, with what the rater is shown."""

    assignment_id: int
    task_id: int
    response_order: list[int]
    expires_at: datetime
    prompt_id: int
    messages: list[dict]
    texts: dict[int, str]

    def view(self) -> TaskOut:
        """The task as its rater sees it, responses in the order recorded on the lease."""
        return TaskOut(
            task_id=self.task_id,
            prompt=PromptOut(
                id=self.prompt_id, messages=[MessageOut(**message) for message in self.messages]
            ),
            responses=[
                ResponseOut(id=response_id, text=self.texts[response_id])
                for response_id in self.response_order
            ],
            lease_expires_at=self.expires_at,
        )


def lease_next(
    connection: Connection,
    *,
    rater_id: int,
    lease_minutes: float,
    max_open_leases: int,
    gold_rate: float = 0.0,
    rng: random.Random | None = None,
    held_first: bool = False,
) -> Lease | None:
    """Lease the open task closest to completion that this rater may judge, or None.

    With `held_first`, the rater's oldest live lease comes back instead while they hold one:
    asking again is safe for a client that crashed or timed out. With probability `gold_rate`
    it is a gold task the rater has not done yet (while one is left), otherwise an ordinary
    task. Raises RaterPaused for a paused rater, and TooManyLeases when the rater already holds
    `max_open_leases` live leases. On PostgreSQL: two statements, the rater's state and then
    one CTE that picks, leases and returns the task (or reads the held one).
    """
    rng = rng or random
    now = utcnow()
    held, first_expiry, stale = _rater_state_of(connection, rater_id=rater_id, now=now)
    # (a lease can end between the two reads, judged or reclaimed meanwhile: then lease anew)
    if held and held_first and (mine := held_leases(connection, rater_id=rater_id, now=now)):
        return mine[0]
    if held >= max_open_leases:
        held_ids = [lease.task_id for lease in held_leases(connection, rater_id=rater_id, now=now)]
        raise TooManyLeases(held_ids, int((first_expiry - now).total_seconds()))
    if stale:
        _end_leases_that_ran_out(connection, rater_id=rater_id, now=now)
    take = _take_in_one_statement if connection.dialect.name == "postgresql" else _take_in_steps
    slot = {
        "rater": rater_id,
        "at": now,
        "until": now + timedelta(minutes=lease_minutes),
        # a sort key per response position: position bias is measured against this order
        "shuffle": [rng.random() for _ in range(MAX_RESPONSES_PER_TASK)],
    }
    lease = None
    if gold_rate > 0 and rng.random() < gold_rate:
        lease = take(connection, slot, gold=True)
    return lease or take(connection, slot, gold=False)


def held_leases(
    connection: Connection, *, rater_id: int, now: datetime | None = None
) -> list[Lease]:
    """The rater's leases live at `now` (default: now), oldest first, each with what the rater
    is shown."""
    rows = connection.execute(_HELD_ROWS, {"rater": rater_id, "at": now or utcnow()}).all()
    by_lease: dict[int, list] = {}
    for row in rows:
        by_lease.setdefault(row.assignment_id, []).append(row)
    return [
        _lease_of(lease_id, rows[0].task_id, rows[0].response_order, rows[0].expires_at, rows)
        for lease_id, rows in by_lease.items()
    ]


def assign_next_task(
    db: Session,
    *,
    rater: User,
    lease_minutes: float,
    max_open_leases: int,
    gold_rate: float = 0.0,
    rng: random.Random | None = None,
) -> Assignment | None:
    """`lease_next` in an ORM session, returning the lease's row."""
    db.flush()
    lease = lease_next(
        db.connection(),
        rater_id=rater.id,
        lease_minutes=lease_minutes,
        max_open_leases=max_open_leases,
        gold_rate=gold_rate,
        rng=rng,
    )
    if lease is None:
        return None
    forget_loaded(db, Task, lease.task_id)
    return db.get(Assignment, lease.assignment_id)


def forget_loaded(db: Session, entity: type, *ids: int) -> None:
    """Expire the session's copies of rows that Core statements changed beneath it."""
    for row_id in ids:
        if (loaded := db.identity_map.get(identity_key(entity, row_id))) is not None:
            db.expire(loaded)


def _rater_state_of(
    connection: Connection, *, rater_id: int, now: datetime
) -> tuple[int, datetime | None, int]:
    """The rater's live leases (how many, the first to end) and leases that ran out; raises
    RaterPaused for a paused rater. Leases that ran out stay "active" until reclaimed; leasing
    ends them first, so that the one-live-lease index admits a new one."""
    paused_at, reason, held, first_expiry, stale = connection.execute(
        _RATER_STATE, {"rater": rater_id, "at": now}
    ).one()
    if paused_at is not None:
        raise RaterPaused(reason)
    return held, first_expiry, stale


def _end_leases_that_ran_out(connection: Connection, *, rater_id: int, now: datetime) -> None:
    """End the rater's leases that ran out, freeing their slots. Their tasks are locked first,
    in id order, as every path locks them (the task, then its leases): no deadlock."""
    ran_out = and_(
        Assignment.rater_id == rater_id,
        Assignment.status == AssignmentStatus.ACTIVE,
        Assignment.expires_at <= now,
    )
    tasks = select(Assignment.task_id).where(ran_out)
    connection.execute(
        select(Task.id).where(Task.id.in_(tasks)).order_by(Task.id).with_for_update()
    ).all()
    ended = connection.execute(
        update(Assignment)
        .where(ran_out)
        .values(status=AssignmentStatus.EXPIRED, finished_at=now)
        .returning(Assignment.task_id)
    ).scalars()
    for task_id, count in Counter(ended).items():
        connection.execute(
            update(Task).where(Task.id == task_id).values(lease_count=Task.lease_count - count)
        )


def _take_in_one_statement(connection: Connection, slot: dict, *, gold: bool) -> Lease | None:
    """PostgreSQL: lock the first free candidate (skipping rows that other raters are leasing
    right now), insert the lease with its shuffled response order, count it on the task, and
    return the task's prompt and responses: one round trip."""
    rows = connection.execute(_LEASE_IN_ONE_STATEMENT[gold], slot).all()
    if not rows:
        return None
    assignment_id, task_id, order, prompt_id, messages = rows[0][:5]
    texts = {response_id: text for *_, response_id, text in rows}
    return Lease(assignment_id, task_id, order, slot["until"], prompt_id, messages, texts)


def _take_in_steps(connection: Connection, slot: dict, *, gold: bool) -> Lease | None:
    """The steps of `_take_in_one_statement` in turn, for SQLite, whose `BEGIN IMMEDIATE`
    (`app.db`) already holds the database's one write lock."""
    task_id = connection.scalar(_FIRST_CANDIDATE[gold], slot)
    if task_id is None:
        return None
    rows = connection.execute(_SHOWN_ROWS, {"task": task_id}).all()
    shuffle = slot["shuffle"]
    keyed = sorted(rows, key=lambda row: (shuffle[row.position % len(shuffle)], row.position))
    order = [row.response_id for row in keyed]
    lease = {**slot, "task": task_id, "order": order}
    assignment_id = connection.scalar(_INSERT_LEASE, lease)
    connection.execute(_COUNT_LEASE, {"task": task_id})
    return _lease_of(assignment_id, task_id, order, slot["until"], rows)


def _lease_of(assignment_id, task_id, order, expires_at, rows) -> Lease:
    texts = {row.response_id: row.text for row in rows}
    return Lease(
        assignment_id, task_id, order, expires_at, rows[0].prompt_id, rows[0].messages, texts
    )


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


def _candidates():
    """Open tasks with a free slot that the rater has not judged, skipped or leased, the ones
    closest to completion first (gold tasks apart)."""
    return (
        select(Task)
        .where(IS_OPEN, ~Task.is_gold, literal_column("0") < REMAINING, ~_touched_by_rater())
        .order_by(REMAINING, Task.id)
    )


def _gold_candidates():
    """Gold tasks the rater has not judged, skipped or leased. Every rater may do each one, so
    their slots are not counted."""
    return select(Task).where(IS_OPEN, Task.is_gold, ~_touched_by_rater()).order_by(Task.id)


def _touched_by_rater():
    """Whether the rater judged or skipped the task, or holds a live lease on it."""
    return or_(
        exists().where(
            Assignment.task_id == Task.id,
            Assignment.rater_id == _RATER_ID,
            # `or` rather than `in_`: an IN list is rendered into the SQL on every execution
            or_(*(Assignment.status == status for status in FINISHED), _is_live(_NOW)),
        ),
        exists().where(Judgement.task_id == Task.id, Judgement.rater_id == _RATER_ID),
    )


def _rater_state():
    """Whether the rater is paused, and their live leases (how many, the first to end) and
    leases that ran out."""
    mine = and_(Assignment.rater_id == _RATER_ID, Assignment.status == AssignmentStatus.ACTIVE)

    def of_mine(column, *, live: bool):
        alive = Assignment.expires_at > _NOW if live else Assignment.expires_at <= _NOW
        return select(column).select_from(Assignment).where(mine, alive).scalar_subquery()

    return select(
        User.paused_at,
        User.pause_reason,
        of_mine(func.count(), live=True),
        of_mine(func.min(Assignment.expires_at), live=True),
        of_mine(func.count(), live=False),
    ).where(User.id == _RATER_ID)


def _lease_in_one_statement(candidates):
    picked = (
        candidates.with_only_columns(Task.id, Task.prompt_id)
        .limit(literal_column("1"))
        .with_for_update(skip_locked=True, of=Task)
        .cte("picked")
    )
    shuffle = Grouping(bindparam("shuffle", type_=ARRAY(Float)))  # (...)[i] needs parentheses
    order = (
        select(
            func.jsonb_agg(
                aggregate_order_by(
                    TaskResponse.response_id,
                    shuffle[TaskResponse.position + 1].nulls_last(),
                    TaskResponse.position,
                )
            )
        )
        .where(TaskResponse.task_id == picked.c.id)
        .scalar_subquery()
    )
    leased = (
        insert(Assignment)
        .from_select(
            ["task_id", "rater_id", "response_order", "status", "leased_at", "expires_at"],
            select(
                picked.c.id,
                _RATER_ID,
                order,
                literal(AssignmentStatus.ACTIVE.value),
                _NOW,
                bindparam("until", type_=UTCDateTime()),
            ),
        )
        .returning(Assignment.id, Assignment.task_id, Assignment.response_order)
        .cte("leased")
    )
    counted = (
        update(Task)
        .where(Task.id == picked.c.id)
        .values(lease_count=Task.lease_count + 1)
        .cte("counted")
    )
    return (
        select(leased, picked.c.prompt_id, Prompt.messages, Response.id, Response.text)
        .add_cte(counted)
        .join(picked, picked.c.id == leased.c.task_id)
        .join(Prompt, Prompt.id == picked.c.prompt_id)
        .join(TaskResponse, TaskResponse.task_id == leased.c.task_id)
        .join(Response, Response.id == TaskResponse.response_id)
    )


# Built once: a statement object reused with new parameters skips SQLAlchemy's per-statement
# work (building, cache keys), most of this path's CPU when it was built per request. Parameter
# names are no column's: Core would add a parameter named like a column to an INSERT or UPDATE.
_RATER_ID = bindparam("rater", type_=Integer())
_NOW = bindparam("at", type_=UTCDateTime())
_RATER_STATE = _rater_state()
_CANDIDATES = {False: _candidates(), True: _gold_candidates()}
_LEASE_IN_ONE_STATEMENT = {gold: _lease_in_one_statement(c) for gold, c in _CANDIDATES.items()}
_FIRST_CANDIDATE = {gold: c.with_only_columns(Task.id).limit(1) for gold, c in _CANDIDATES.items()}
_TASK_ROWS = (
    select(
        Prompt.id.label("prompt_id"),
        Prompt.messages,
        TaskResponse.position,
        TaskResponse.response_id,
        Response.text,
    )
    .select_from(Task)
    .join(Prompt, Prompt.id == Task.prompt_id)
    .join(TaskResponse, TaskResponse.task_id == Task.id)
    .join(Response, Response.id == TaskResponse.response_id)
)
_SHOWN_ROWS = _TASK_ROWS.where(Task.id == bindparam("task"))
"""The task's prompt and responses, one row per response."""
_HELD_ROWS = (
    _TASK_ROWS.add_columns(
        Assignment.id.label("assignment_id"),
        Assignment.task_id,
        Assignment.response_order,
        Assignment.expires_at,
    )
    .join(Assignment, Assignment.task_id == Task.id)
    .where(Assignment.rater_id == _RATER_ID, _is_live(_NOW))
    .order_by(Assignment.leased_at, Assignment.id, TaskResponse.position)
)
"""The rater's live leases with their tasks' prompts and responses, one row per response."""
_INSERT_LEASE = (
    insert(Assignment)
    .values(
        task_id=bindparam("task"),
        rater_id=_RATER_ID,
        response_order=bindparam("order"),
        status=AssignmentStatus.ACTIVE,
        leased_at=_NOW,
        expires_at=bindparam("until"),
    )
    .returning(Assignment.id)
)
_COUNT_LEASE = (
    update(Task).where(Task.id == bindparam("task")).values(lease_count=Task.lease_count + 1)
)


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
    available = select(func.count()).select_from(_CANDIDATES[False].order_by(None).subquery())
    return {
        "judged": db.scalar(judged) or 0,
        "today": db.scalar(judged.where(Judgement.created_at >= today)) or 0,
        "skipped": db.scalar(skipped) or 0,
        "available": db.scalar(available, {"rater": rater_id, "at": utcnow()}) or 0,
    }


def task_view(db: Session, assignment: Assignment) -> TaskOut:
    """The leased task as its rater sees it, responses in the order recorded on the lease."""
    rows = db.execute(_SHOWN_ROWS, {"task": assignment.task_id}).all()
    order, expires_at = assignment.response_order, assignment.expires_at
    return _lease_of(assignment.id, assignment.task_id, order, expires_at, rows).view()
