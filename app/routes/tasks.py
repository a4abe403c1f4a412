"""`/api/tasks`: the rating workflow for scripts and the rater page's JavaScript."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Header, Response

from app.assignment import assign_next_task, task_view
from app.deps import DbSession, RaterUser, SettingsDep
from app.escalation import Escalation
from app.judgements import skip_task, submit_judgement
from app.schemas import (
    JudgementIn,
    JudgementOut,
    RowId,
    SkipIn,
    SkipOut,
    TaskOut,
    documented,
)

router = APIRouter(prefix="/api/tasks", tags=["tasks"])

IdempotencyKey = Annotated[
    str | None,
    Header(
        alias="Idempotency-Key",
        min_length=1,
        max_length=128,
        description="Any unique string (a UUID, say); a retry sends the same key and body",
    ),
]


@router.get("/next", response_model=TaskOut, responses={204: {"description": "No task for you"}})
def next_task(db: DbSession, settings: SettingsDep, rater: RaterUser) -> TaskOut | Response:
    """Lease the next task to judge; 204 when there is none, 429 when holding too many, 403
    when the rater is paused."""
    assignment = assign_next_task(
        db,
        rater=rater,
        lease_minutes=settings.lease_minutes,
        max_open_leases=settings.max_open_leases,
        gold_rate=settings.gold_rate,
    )
    if assignment is None:
        return Response(status_code=204)
    view = task_view(db, assignment)
    db.commit()
    return view


@router.post(
    "/{task_id}/judgement",
    status_code=201,
    responses=documented(
        {
            201: "Stored; a retry with the same Idempotency-Key and body gets the same answer",
            404: "No such task",
            409: "Judged already, no live lease on the task, or the Idempotency-Key was used "
            "for another task",
            422: "Invalid fields, a ranking that is not of the task's responses, an empty "
            "Idempotency-Key, or one used before with a different body",
        }
    ),
)
def judge(
    task_id: RowId,
    body: JudgementIn,
    db: DbSession,
    settings: SettingsDep,
    rater: RaterUser,
    idempotency_key: IdempotencyKey = None,
) -> JudgementOut:
    judgement, _ = submit_judgement(
        db,
        rater=rater,
        task_id=task_id,
        body=body,
        aspects=settings.aspects,
        idempotency_key=idempotency_key,
        escalation=Escalation.from_settings(settings),
    )
    db.commit()
    return JudgementOut(id=judgement.id, task_id=task_id, created_at=judgement.created_at)


@router.post("/{task_id}/skip")
def skip(task_id: RowId, body: SkipIn, db: DbSession, rater: RaterUser) -> SkipOut:
    skip_task(db, rater=rater, task_id=task_id, reason=body.reason)
    db.commit()
    return SkipOut(task_id=task_id)
