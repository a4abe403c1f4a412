"""`/api/rounds`: start, follow and cancel training rounds (admins)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Request
from sqlalchemy import select

from app.domain import rounds
from app.models import Round, RoundMetric
from app.schemas import (
    INT64_MAX,
    QUEUED,
    LogLine,
    MetricPoint,
    RoundAccepted,
    RoundOut,
    RoundRequest,
    RowId,
    documented,
)
from app.web.deps import AdminUser, DbSession, SettingsDep

router = APIRouter(prefix="/api/rounds", tags=["rounds"])


@router.post(
    "",
    status_code=202,
    responses=documented(
        {
            202: QUEUED,
            409: "The line has a round queued or running, no model is ready, or too few "
            "pairs are judged",
        }
    ),
)
def start_round(
    request: Request, body: RoundRequest, db: DbSession, settings: SettingsDep, admin: AdminUser
) -> RoundAccepted:
    """Queue a training round on its model line, with the algorithm, the preset and any
    overrides of its settings; answers 202 with the round's id, also while the broker is down.
    409 while another round is queued or running on the line, while no model is ready, or with
    fewer judged pairs than the preset's `snapshot.min_pairs` (the message gives both numbers);
    422 for unknown or invalid settings."""
    round_ = rounds.start_round(
        db,
        algorithm=body.algorithm,
        preset=body.preset,
        overrides=body.overrides,
        created_by=admin,
        settings=settings,
        line=body.line,
    )
    db.commit()
    rounds.send(db, request.app.state.celery, round_.id)
    return RoundAccepted(round_id=round_.id)


@router.get("")
def list_rounds(
    db: DbSession, admin: AdminUser, limit: Annotated[int, Query(ge=1, le=200)] = 20
) -> list[RoundOut]:
    """The newest `limit` rounds, newest first, each as `GET /api/rounds/{id}` shows it but
    without the raters' verdict."""
    found = db.scalars(select(Round).order_by(Round.id.desc()).limit(limit))
    return [RoundOut.of(round_) for round_ in found]


@router.get("/{round_id}")
def get_round(round_id: RowId, db: DbSession, admin: AdminUser) -> RoundOut:
    """One round: its status, stage and progress with an estimate of the time left, settings,
    metrics and timings, the model versions it registered, the raters' blind verdict on its new
    policy against its parent (once there is one), and its error."""
    round_ = rounds.get_round(db, round_id)
    return RoundOut.of(round_, human=rounds.human_verdict(db, round_))


@router.get("/{round_id}/metrics")
def round_metrics(
    round_id: RowId,
    db: DbSession,
    admin: AdminUser,
    name: Annotated[str | None, Query(max_length=64)] = None,
) -> list[MetricPoint]:
    """The round's curves: one point per stage, step and metric name (`name` for one metric
    only), in that order."""
    rounds.get_round(db, round_id)
    query = select(RoundMetric).where(RoundMetric.round_id == round_id)
    if name is not None:
        query = query.where(RoundMetric.name == name)
    points = db.scalars(query.order_by(RoundMetric.stage, RoundMetric.name, RoundMetric.step))
    return [
        MetricPoint(stage=p.stage.value, step=p.step, name=p.name, value=p.value) for p in points
    ]


@router.get("/{round_id}/log")
def round_log(
    round_id: RowId,
    db: DbSession,
    admin: AdminUser,
    after: Annotated[int, Query(ge=0, le=INT64_MAX)] = 0,
    limit: Annotated[int, Query(ge=1, le=1000)] = 500,
) -> list[LogLine]:
    """The round's log lines after line id `after`, oldest first, `limit` at most: stage starts
    and ends, the trainers' messages, errors with their tracebacks."""
    rounds.get_round(db, round_id)
    return [
        LogLine.model_validate(line)
        for line in rounds.read_log(db, round_id=round_id, after_id=after, limit=limit)
    ]


@router.post("/{round_id}/cancel")
def cancel_round(round_id: RowId, db: DbSession, admin: AdminUser) -> RoundOut:
    """Stop the round: at once when it waits, at the next training step when it runs; answers
    the round. 409 when it has ended already."""
    round_ = rounds.cancel_round(db, round_id=round_id)
    db.commit()
    return RoundOut.of(round_)
