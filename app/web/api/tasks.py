"""`/api/tasks`: the rating workflow for scripts and the rater page's JavaScript, and gold
tasks for admins.

The rating routes are the busiest of a rating platform: each is async, authenticates from memory
when it can (`app.domain.credentials`), and makes one thread hop with one connection for its few
Core statements (`app.domain.assignment.lease_next`, `app.domain.judgements.record_judgement`).
`next` gives back a task the caller holds before leasing another, `mine` lists them and
`DELETE .../lease` releases one, so a client that crashed never waits out its leases.
Marking gold tasks is an admin's occasional write, documented under quality control."""

from __future__ import annotations

from functools import partial
from typing import Annotated

from fastapi import APIRouter, Header, Query, Request, Response
from pydantic import BaseModel, TypeAdapter

from app.db import in_transaction
from app.domain import quality
from app.domain.assignment import held_leases, lease_next
from app.domain.escalation import Escalation
from app.domain.judgements import record_judgement, record_release, record_skip
from app.schemas import (
    GoldIn,
    GoldOut,
    JudgementIn,
    JudgementOut,
    RowId,
    SkipIn,
    SkipOut,
    TaskOut,
    TooManyLeasesOut,
    documented,
)
from app.web.deps import AdminUser, DbSession, RaterCredential, SettingsDep

router = APIRouter(prefix="/api/tasks")
TASKS, QUALITY = ["tasks"], ["quality"]  # the documentation's sections
TASK_LIST = TypeAdapter(list[TaskOut])

IdempotencyKey = Annotated[
    str | None,
    Header(
        alias="Idempotency-Key",
        min_length=1,
        max_length=128,
        description="Any unique string (a UUID, say); a retry sends the same key and body",
    ),
]


NEXT_RESPONSES = documented(
    {
        204: "No task for you",
        429: "With `another`: you hold as many tasks as you may (`ALIGNLOOP_MAX_OPEN_LEASES`), "
        "named in `held_task_ids`; or too many failed attempts from this address",
    }
)
NEXT_RESPONSES[429]["model"] = TooManyLeasesOut

Another = Annotated[
    bool,
    Query(
        description="Lease one more task beside those you hold (for clients that work on "
        "several at once) instead of getting your oldest one back"
    ),
]


@router.get("/next", tags=TASKS, response_model=TaskOut, responses=NEXT_RESPONSES)
async def next_task(
    request: Request, settings: SettingsDep, rater: RaterCredential, another: Another = False
) -> Response:
    """The task to judge next (raters and admins): its prompt, its responses in the order to
    show them, and when the lease ends. While the caller holds a live lease, that task comes
    back (the oldest first), so asking again after a crash or a timeout loses nothing; only
    then is a new one leased. 204 when no task is left for the caller, 403 while they are
    paused; with `another=true`, 429 while they hold as many leases as they may, naming them in
    `held_task_ids`."""
    lease = await in_transaction(
        request.app.state.session_factory,
        partial(
            lease_next,
            rater_id=rater.user_id,
            lease_minutes=settings.lease_minutes,
            max_open_leases=settings.max_open_leases,
            gold_rate=settings.gold_rate,
            held_first=not another,
        ),
    )
    if lease is None:
        return Response(status_code=204)
    return _json(lease.view())


@router.get("/mine", tags=TASKS, response_model=list[TaskOut])
async def my_tasks(request: Request, rater: RaterCredential) -> Response:
    """The tasks the caller holds a live lease on, oldest lease first, each as `next` shows it:
    a client that lost track of its tasks finds them here."""
    leases = await in_transaction(
        request.app.state.session_factory, partial(held_leases, rater_id=rater.user_id)
    )
    body = TASK_LIST.dump_json([lease.view() for lease in leases])
    return Response(body, media_type="application/json")


@router.post(
    "/{task_id}/judgement",
    tags=TASKS,
    status_code=201,
    response_model=JudgementOut,
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
async def judge(
    task_id: RowId,
    body: JudgementIn,
    request: Request,
    settings: SettingsDep,
    rater: RaterCredential,
    idempotency_key: IdempotencyKey = None,
) -> Response:
    """Record the caller's judgement of a task they hold a live lease on: a `ranking` of all its
    responses best first (ties as inner lists), with optional strength, ratings, critique,
    rewrite and flags. Answers 201 with the judgement's id; a retry with the same
    `Idempotency-Key` and body gets the same answer. Refused with 409 when the task is judged
    already or the lease is gone, 422 when the ranking is not of the task's responses."""
    recorded = await in_transaction(
        request.app.state.session_factory,
        partial(
            record_judgement,
            rater_id=rater.user_id,
            task_id=task_id,
            body=body,
            aspects=settings.aspects,
            idempotency_key=idempotency_key,
            escalation=Escalation.from_settings(settings),
        ),
    )
    stored = JudgementOut(id=recorded.judgement_id, task_id=task_id, created_at=recorded.created_at)
    return _json(stored, status_code=201)


@router.post("/{task_id}/skip", tags=TASKS, response_model=SkipOut)
async def skip(task_id: RowId, body: SkipIn, request: Request, rater: RaterCredential) -> Response:
    """Give a leased task back unjudged, with an optional reason; the caller is not offered it
    again. Refused with 409 when the caller holds no live lease on it."""
    await in_transaction(
        request.app.state.session_factory,
        partial(record_skip, rater_id=rater.user_id, task_id=task_id, reason=body.reason),
    )
    return _json(SkipOut(task_id=task_id))


@router.delete(
    "/{task_id}/lease",
    tags=TASKS,
    status_code=204,
    responses=documented({404: "No such task, or you hold no live lease on it"}),
)
async def release(task_id: RowId, request: Request, rater: RaterCredential) -> Response:
    """Give back a task the caller holds, unjudged and without a skip: its slot returns to the
    pool and the caller may be offered it again later. Another rater's lease on the same task
    stays as it is. 404 when the caller holds no live lease on it."""
    await in_transaction(
        request.app.state.session_factory,
        partial(record_release, rater_id=rater.user_id, task_id=task_id),
    )
    return Response(status_code=204)


@router.post("/{task_id}/gold", tags=QUALITY)
def mark_gold(task_id: RowId, body: GoldIn, db: DbSession, admin: AdminUser) -> GoldOut:
    """Make the task a gold task whose known answer is `ranking` (admins): raters get it at the
    configured gold rate, their judgements of it measure them, and it stays out of training
    data. Answers the task's gold state; 409 for a retired task, 422 when the ranking is not of
    the task's responses."""
    task = quality.mark_gold(db, task_id=task_id, ranking=body.ranking)
    db.commit()
    return GoldOut.model_validate(task)


@router.delete("/{task_id}/gold", tags=QUALITY)
def unmark_gold(task_id: RowId, db: DbSession, admin: AdminUser) -> GoldOut:
    """Make a gold task an ordinary one again (admins); it counts as complete if it has its
    judgements already. Answers the task's gold state."""
    task = quality.unmark_gold(db, task_id=task_id)
    db.commit()
    return GoldOut.model_validate(task)


def _json(model: BaseModel, *, status_code: int = 200) -> Response:
    """The model's JSON, as the declared response model has it: FastAPI would validate it
    again before serialising."""
    return Response(model.model_dump_json(), status_code=status_code, media_type="application/json")
