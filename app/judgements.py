"""Recording raters' verdicts: judgements and skips, checked against the rater's live lease.

Submissions are idempotent per `Idempotency-Key`: a retry returns the judgement the first
attempt stored, and the same key with a different body is refused (that is no retry, but
another judgement under a reused key). Everything happens under the task's row lock (see
`app.assignment`), so a replay, a second judgement and a late submission are told apart
reliably under concurrency.
"""

from __future__ import annotations

import hashlib
import json

from sqlalchemy import or_, select
from sqlalchemy.orm import Session

from app import crud
from app.assignment import live_assignment, lock_task, release_lease
from app.errors import Conflict, InvalidInput, NotFound
from app.escalation import Escalation, escalate_if_disagreed
from app.models import (
    Assignment,
    AssignmentStatus,
    Judgement,
    Response,
    Task,
    TaskStatus,
    User,
    utcnow,
)
from app.schemas import JudgementIn, RankingEntry

NO_LEASE = "You hold no live lease on this task (it expired, or was never yours); fetch a new task."


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
    """Store a judgement; returns it and whether it is new (False for an idempotent replay).

    With `escalation`, a task whose raters disagree gets one more slot instead of completing.
    """
    task = _locked_task(db, task_id)
    previous = _previous_judgement(db, rater=rater, task_id=task_id, key=idempotency_key)
    request_sha256 = _request_sha256(body)
    if previous is not None:
        if idempotency_key and previous.idempotency_key == idempotency_key:
            return _replayed(previous, task_id=task_id, request_sha256=request_sha256), False
        if previous.task_id == task_id:
            raise Conflict("You have already judged this task.")
    assignment = live_assignment(db, task_id=task_id, rater_id=rater.id)
    if assignment is None:
        raise Conflict(NO_LEASE)
    ranking = canonical_ranking(body.ranking, assignment.response_order)
    _check_details(body, assignment.response_order, aspects, ranking)
    judgement = Judgement(
        task_id=task_id,
        rater_id=rater.id,
        assignment_id=assignment.id,
        ranking=ranking,
        strength=body.strength,
        all_bad=body.all_bad,
        ratings={str(key): value for key, value in (body.ratings or {}).items()} or None,
        critique=(body.critique or "").strip() or None,
        rewrite_response_id=_store_rewrite(db, task, rater, body, ranking),
        flags={str(key): sorted(set(value)) for key, value in (body.flags or {}).items() if value},
        time_spent_ms=body.time_spent_ms,
        guideline_version_id=_guideline_version_id(db, body.guideline_version),
        idempotency_key=idempotency_key,
        request_sha256=request_sha256,
    )
    db.add(judgement)
    release_lease(task, assignment, AssignmentStatus.SUBMITTED)
    task.judgement_count += 1
    if _completes(db, task, escalation):
        task.status, task.completed_at = TaskStatus.COMPLETE, utcnow()
    db.flush()
    return judgement, True


def _completes(db: Session, task: Task, escalation: Escalation | None) -> bool:
    """Whether the judgement just added completes the task: gold tasks stay open for every
    rater, and a full task whose raters disagree may get one more slot instead."""
    if task.is_gold or task.judgement_count < task.required_judgements:
        return False
    return escalation is None or not escalate_if_disagreed(db, task, escalation)


def skip_task(db: Session, *, rater: User, task_id: int, reason: str | None) -> Assignment:
    """Give a leased task back with a reason; the rater will not be offered it again."""
    task = _locked_task(db, task_id)
    assignment = live_assignment(db, task_id=task_id, rater_id=rater.id)
    if assignment is None:
        raise Conflict(NO_LEASE)
    assignment.skip_reason = (reason or "").strip() or None
    release_lease(task, assignment, AssignmentStatus.SKIPPED)
    db.flush()
    return assignment


def canonical_ranking(ranking: list[RankingEntry], response_ids: list[int]) -> list:
    """The ranking with ties sorted, after checking it orders exactly the task's responses."""
    flat = [item for entry in ranking for item in (entry if isinstance(entry, list) else [entry])]
    if sorted(flat) != sorted(response_ids):
        raise InvalidInput(
            "The ranking must list each of the task's responses exactly once "
            f"(responses {sorted(response_ids)}, got {flat})."
        )
    return [sorted(entry) if isinstance(entry, list) else entry for entry in ranking]


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


def _replayed(previous: Judgement, *, task_id: int, request_sha256: str) -> Judgement:
    """The judgement stored under a key, for a retry that repeats its request (rows stored
    before requests were hashed have no hash to compare, and count as repeated)."""
    if previous.task_id != task_id:
        raise Conflict("This Idempotency-Key was already used for another task.")
    if previous.request_sha256 not in (None, request_sha256):
        raise InvalidInput(
            "This Idempotency-Key was already used with a different body. A retry must repeat "
            "the request exactly; send a new key with a new judgement."
        )
    return previous


def _previous_judgement(
    db: Session, *, rater: User, task_id: int, key: str | None
) -> Judgement | None:
    """The rater's earlier judgement of this task, or the one stored under this key."""
    match = Judgement.task_id == task_id
    if key:
        match = or_(match, Judgement.idempotency_key == key)
    return db.scalar(
        select(Judgement).where(Judgement.rater_id == rater.id, match).order_by(Judgement.id)
    )


def _locked_task(db: Session, task_id: int) -> Task:
    task = lock_task(db, task_id)
    if task is None:
        raise NotFound("Task not found")
    return task


def _store_rewrite(
    db: Session, task: Task, rater: User, body: JudgementIn, ranking: list
) -> int | None:
    """Keep a rater's better answer as a human-written response (a demonstration for SFT).

    It replaces the response it started from (`rewrite_of`, else the top-ranked one); a text
    left empty or unchanged is not a rewrite.
    """
    if not body.rewrite or not body.rewrite.strip():
        return None
    replaces = body.rewrite_of or (ranking[0][0] if isinstance(ranking[0], list) else ranking[0])
    if body.rewrite.strip() == db.get(Response, replaces).text.strip():
        return None
    response = Response(
        prompt_id=task.prompt_id,
        author_id=rater.id,
        text=body.rewrite.strip(),
        generation_params={"kind": "rewrite", "replaces_response_id": replaces, "task_id": task.id},
    )
    db.add(response)
    db.flush()
    return response.id


def _guideline_version_id(db: Session, version: int | None) -> int | None:
    if version is None:
        current = crud.current_guidelines(db)
        return current.id if current else None
    guideline = crud.get_guidelines(db, version=version)
    if guideline is None:
        raise InvalidInput(f"Unknown guideline version {version}.")
    return guideline.id
