"""Recording raters' verdicts: judgements, skips and releases, checked against the rater's live
lease.

Submissions are idempotent per `Idempotency-Key`: a retry returns the judgement the first
attempt stored, and the same key with a different body is refused (that is no retry, but
another judgement under a reused key). Everything happens under the task's row lock (see
`app.domain.assignment`), so a replay, a second judgement and a late submission are told apart
reliably under concurrency.

The rater API's hot path (`record_judgement`, `record_skip`) is Core statements on a
connection: one that reads the task, the rater's lease and any earlier judgement under the
lock, and one that writes (a data-modifying CTE on PostgreSQL). `submit_judgement` and
`skip_task` wrap them for code that works in an ORM session.
"""

from __future__ import annotations

import functools
import hashlib
import json
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import (
    Connection,
    Integer,
    Row,
    Select,
    String,
    Update,
    and_,
    bindparam,
    insert,
    or_,
    select,
    update,
)
from sqlalchemy.orm import Session

from app.db import execute_together
from app.domain.assignment import forget_loaded
from app.domain.escalation import Escalation, needs_another_rater
from app.errors import Conflict, InvalidInput, NotFound
from app.models import (
    Assignment,
    AssignmentStatus,
    GuidelineVersion,
    Judgement,
    Response,
    Task,
    TaskStatus,
    User,
    UTCDateTime,
    utcnow,
)
from app.schemas import JudgementIn, RankingEntry

NO_LEASE = "You hold no live lease on this task (it expired, or was never yours); fetch a new task."


@dataclass(frozen=True)
class Recorded:
    """A stored judgement, and whether this request stored it (False for a replay)."""

    judgement_id: int
    created_at: datetime
    new: bool


def record_judgement(
    connection: Connection,
    *,
    rater_id: int,
    task_id: int,
    body: JudgementIn,
    aspects: list[str],
    idempotency_key: str | None = None,
    escalation: Escalation | None = None,
) -> Recorded:
    """Store a judgement, or find the one an earlier attempt with this key stored.

    With `escalation`, a task whose raters disagree gets one more slot instead of completing.
    """
    now = utcnow()
    where = {"task": task_id, "rater": rater_id, "at": now}
    found = _under_lock(
        connection, where, key=idempotency_key, guideline_version=body.guideline_version
    )
    request_sha256 = _request_sha256(body)
    if found.previous_id is not None:
        if idempotency_key and found.previous_key == idempotency_key:
            _check_replay(found, task_id=task_id, request_sha256=request_sha256)
            return Recorded(found.previous_id, found.previous_created_at, new=False)
        if found.previous_task_id == task_id:
            raise Conflict("You have already judged this task.")
    if found.assignment_id is None:
        raise Conflict(NO_LEASE)
    ranking = canonical_ranking(body.ranking, found.response_order)
    _check_details(body, found.response_order, aspects, ranking)
    if body.guideline_version is not None and found.guideline_id is None:
        raise InvalidInput(f"Unknown guideline version {body.guideline_version}.")
    rewrite_id = _store_rewrite(connection, found, rater_id, task_id, body, ranking)
    judgement = _judgement_values(body, ranking, found, rewrite_id=rewrite_id, **where)
    judgement |= {"j_idempotency_key": idempotency_key, "j_request_sha256": request_sha256}
    outcome = _outcome(connection, found, task_id=task_id, ranking=ranking, escalation=escalation)
    stored = execute_together(
        connection,
        {**where, **judgement, "lease": found.assignment_id, "ended": AssignmentStatus.SUBMITTED},
        _INSERT_JUDGEMENT,
        _END_LEASE,
        _COUNT[outcome],
    )
    return Recorded(stored.id, stored.created_at, new=True)


def record_skip(connection: Connection, *, rater_id: int, task_id: int, reason: str | None) -> int:
    """Give a leased task back with a reason (the rater will not be offered it again);
    returns the lease's id."""
    where = {"task": task_id, "rater": rater_id, "at": utcnow()}
    found = _under_lock(connection, where)
    if found.assignment_id is None:
        raise Conflict(NO_LEASE)
    ended = {"lease": found.assignment_id, "ended": AssignmentStatus.SKIPPED}
    reason = (reason or "").strip() or None
    execute_together(connection, {**where, **ended, "reason": reason}, _SKIP_LEASE, _FREE_SLOT)
    return found.assignment_id


def record_release(connection: Connection, *, rater_id: int, task_id: int) -> None:
    """Give a leased task back unjudged and without a verdict on it: its slot returns to the
    pool, and the rater may be offered it again later (unlike a skip). Only the rater's own
    live lease ends; another rater's lease on the task is not theirs to touch."""
    where = {"task": task_id, "rater": rater_id, "at": utcnow()}
    found = _under_lock(connection, where)
    if found.assignment_id is None:
        raise NotFound(
            f"You hold no lease on task {task_id} (it ended, or was never yours); "
            "GET /api/tasks/mine lists the tasks you hold."
        )
    ended = {"lease": found.assignment_id, "ended": AssignmentStatus.EXPIRED}
    execute_together(connection, {**where, **ended}, _RELEASE_LEASE, _FREE_SLOT)


def submit_judgement(
    db: Session,
    *,
    rater: User,
    task_id: int,
    body: JudgementIn,
    aspects: list[str],
    idempotency_key: str | None = None,
    escalation: Escalation | None = None,
) -> tuple[Judgement, bool]:
    """`record_judgement` in an ORM session: the judgement's row, and whether it is new."""
    db.flush()
    recorded = record_judgement(
        db.connection(),
        rater_id=rater.id,
        task_id=task_id,
        body=body,
        aspects=aspects,
        idempotency_key=idempotency_key,
        escalation=escalation,
    )
    judgement = db.get(Judgement, recorded.judgement_id)
    forget_loaded(db, Task, task_id)
    forget_loaded(db, Assignment, judgement.assignment_id)
    return judgement, recorded.new


def skip_task(db: Session, *, rater: User, task_id: int, reason: str | None) -> Assignment:
    """`record_skip` in an ORM session, returning the lease's row."""
    db.flush()
    assignment_id = record_skip(db.connection(), rater_id=rater.id, task_id=task_id, reason=reason)
    forget_loaded(db, Task, task_id)
    forget_loaded(db, Assignment, assignment_id)
    return db.get(Assignment, assignment_id)


def canonical_ranking(ranking: list[RankingEntry], response_ids: list[int]) -> list:
    """The ranking with ties sorted, after checking it orders exactly the task's responses."""
    flat = [item for entry in ranking for item in (entry if isinstance(entry, list) else [entry])]
    if sorted(flat) != sorted(response_ids):
        raise InvalidInput(
            "The ranking must list each of the task's responses exactly once "
            f"(responses {sorted(response_ids)}, got {flat})."
        )
    return [sorted(entry) if isinstance(entry, list) else entry for entry in ranking]


def _under_lock(
    connection: Connection,
    where: dict,
    *,
    key: str | None = None,
    guideline_version: int | None = None,
) -> Row:
    """Lock the task, then read in one statement what a submission is checked against: the
    task's counts, the rater's live lease on it, the rater's earlier judgement of it (or the
    one stored under `key`), and the guideline version's id.

    The lock is a statement of its own: on PostgreSQL a statement that waited for a row lock
    sees the locked row's new version but the other tables as they were when it began, so a
    duplicate submit that waited would miss the judgement it waited for."""
    if connection.scalar(_LOCK_TASK, where) is None:
        raise NotFound("Task not found")
    read = _submission_context(key is not None, guideline_version is not None)
    return connection.execute(read, {**where, "key": key, "version": guideline_version}).one()


def _outcome(
    connection: Connection,
    found: Row,
    *,
    task_id: int,
    ranking: list,
    escalation: Escalation | None,
) -> str:
    """What this judgement does to the task: the one that fills the last slot completes it,
    unless its raters disagree and `escalation` gives it one more slot; gold tasks stay open
    for every rater."""
    if found.is_gold or found.judgement_count + 1 < found.required_judgements:
        return "counted"
    if escalation is not None and needs_another_rater(
        connection,
        task_id=task_id,
        extra_judgements=found.extra_judgements,
        new_ranking=ranking,
        escalation=escalation,
    ):
        return "escalated"
    return "completed"


def _judgement_values(
    body: JudgementIn, ranking: list, found: Row, *, rewrite_id: int | None, **where
) -> dict:
    values = {
        "task_id": where["task"],
        "rater_id": where["rater"],
        "assignment_id": found.assignment_id,
        "ranking": ranking,
        "strength": body.strength,
        "all_bad": body.all_bad,
        "ratings": {str(key): value for key, value in (body.ratings or {}).items()} or None,
        "critique": (body.critique or "").strip() or None,
        "rewrite_response_id": rewrite_id,
        "flags": {
            str(key): sorted(set(flags)) for key, flags in (body.flags or {}).items() if flags
        },
        "time_spent_ms": body.time_spent_ms,
        "guideline_version_id": found.guideline_id,
        "created_at": where["at"],
    }
    return {f"j_{column}": value for column, value in values.items()}


def _check_details(body: JudgementIn, response_ids: list[int], aspects: list[str], ranking) -> None:
    known = set(response_ids)
    if body.rewrite_of is not None and body.rewrite_of not in known:
        raise InvalidInput("rewrite_of must name one of the task's responses.")
    for field, keys in (("ratings", body.ratings or {}), ("flags", body.flags or {})):
        if unknown := set(keys) - known:
            raise InvalidInput(f"{field} name responses outside this task: {sorted(unknown)}")
    for scores in (body.ratings or {}).values():
        if unknown := set(scores) - set(aspects):
            raise InvalidInput(f"Unknown rating aspects {sorted(unknown)}; use {aspects}.")
    if body.strength is not None and isinstance(ranking[0], list):
        raise InvalidInput("A preference strength needs a single best response, not a tie.")


def _request_sha256(body: JudgementIn) -> str:
    """The body as parsed, hashed: key order and spacing do not make two requests differ."""
    fields = json.dumps(body.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(fields.encode()).hexdigest()


def _check_replay(found: Row, *, task_id: int, request_sha256: str) -> None:
    """A key used before must come with its request again (rows stored before requests were
    hashed have no hash to compare, and count as repeated)."""
    if found.previous_task_id != task_id:
        raise Conflict("This Idempotency-Key was already used for another task.")
    if found.previous_sha256 not in (None, request_sha256):
        raise InvalidInput(
            "This Idempotency-Key was already used with a different body. A retry must repeat "
            "the request exactly; send a new key with a new judgement."
        )


def _store_rewrite(
    connection: Connection,
    found: Row,
    rater_id: int,
    task_id: int,
    body: JudgementIn,
    ranking: list,
) -> int | None:
    """Keep a rater's better answer as a human-written response (a demonstration for SFT).

    It replaces the response it started from (`rewrite_of`, else the top-ranked one); a text
    left empty or unchanged is not a rewrite.
    """
    if not body.rewrite or not body.rewrite.strip():
        return None
    replaces = body.rewrite_of or (ranking[0][0] if isinstance(ranking[0], list) else ranking[0])
    replaced = connection.scalar(select(Response.text).where(Response.id == replaces))
    if body.rewrite.strip() == replaced.strip():
        return None
    return connection.scalar(
        insert(Response)
        .values(
            prompt_id=found.prompt_id,
            author_id=rater_id,
            text=body.rewrite.strip(),
            generation_params={
                "kind": "rewrite",
                "replaces_response_id": replaces,
                "task_id": task_id,
            },
            created_at=utcnow(),
        )
        .returning(Response.id)
    )


@functools.cache
def _submission_context(with_key: bool, with_version: bool) -> Select:
    """The statement `_under_lock` reads with (one of four: with or without an idempotency key
    and a guideline version)."""
    live_lease = and_(
        Assignment.task_id == Task.id,
        Assignment.rater_id == _RATER,
        Assignment.status == AssignmentStatus.ACTIVE,
        Assignment.expires_at > _AT,
    )
    same = Judgement.task_id == Task.id
    key = bindparam("key", type_=String())
    earlier = and_(
        Judgement.rater_id == _RATER,
        or_(same, Judgement.idempotency_key == key) if with_key else same,
    )
    guideline = select(GuidelineVersion.id)
    if with_version:
        guideline = guideline.where(
            GuidelineVersion.version == bindparam("version", type_=Integer())
        )
    else:
        guideline = guideline.order_by(GuidelineVersion.version.desc()).limit(1)
    return (
        select(
            Task.prompt_id,
            Task.is_gold,
            Task.required_judgements,
            Task.judgement_count,
            Task.extra_judgements,
            Assignment.id.label("assignment_id"),
            Assignment.response_order,
            Judgement.id.label("previous_id"),
            Judgement.task_id.label("previous_task_id"),
            Judgement.idempotency_key.label("previous_key"),
            Judgement.request_sha256.label("previous_sha256"),
            Judgement.created_at.label("previous_created_at"),
            guideline.scalar_subquery().label("guideline_id"),
        )
        .select_from(Task)
        .outerjoin(Assignment, live_lease)
        .outerjoin(Judgement, earlier)
        .where(Task.id == _TASK)
        .order_by(Judgement.id)
        .limit(1)
    )


def _counted(**changes) -> Update:
    return (
        update(Task)
        .where(Task.id == _TASK)
        .values(
            lease_count=Task.lease_count - 1, judgement_count=Task.judgement_count + 1, **changes
        )
    )


# Built once (see `app.domain.assignment`); parameter names are no column's.
_TASK = bindparam("task", type_=Integer())
_RATER = bindparam("rater", type_=Integer())
_AT = bindparam("at", type_=UTCDateTime())
_LOCK_TASK = select(Task.id).where(Task.id == _TASK).with_for_update()
_JUDGEMENT_COLUMNS = (
    "task_id",
    "rater_id",
    "assignment_id",
    "ranking",
    "strength",
    "all_bad",
    "ratings",
    "critique",
    "rewrite_response_id",
    "flags",
    "time_spent_ms",
    "guideline_version_id",
    "idempotency_key",
    "request_sha256",
    "created_at",
)
_INSERT_JUDGEMENT = (
    insert(Judgement)
    .values({column: bindparam(f"j_{column}") for column in _JUDGEMENT_COLUMNS})
    .returning(Judgement.id, Judgement.created_at)
)
_END_LEASE = (
    update(Assignment)
    .where(Assignment.id == bindparam("lease"))
    .values(status=bindparam("ended"), finished_at=_AT)
)
_SKIP_LEASE = _END_LEASE.values(skip_reason=bindparam("reason")).returning(Assignment.id)
_RELEASE_LEASE = _END_LEASE.returning(Assignment.id)
_FREE_SLOT = update(Task).where(Task.id == _TASK).values(lease_count=Task.lease_count - 1)
_COUNT = {
    "counted": _counted(),
    "completed": _counted(status=TaskStatus.COMPLETE, completed_at=_AT),
    "escalated": _counted(
        required_judgements=Task.required_judgements + 1,
        extra_judgements=Task.extra_judgements + 1,
    ),
}
