"""`/api/stats`: what has been collected, and how much the raters agree (admins)."""

from __future__ import annotations

from datetime import timedelta

from fastapi import APIRouter
from sqlalchemy import func, select

from app import crud
from app.agreement import agreement_report
from app.deps import AdminUser, DbSession
from app.models import Judgement, Task, TaskStatus, utcnow

router = APIRouter(prefix="/api/stats", tags=["stats"])

ACTIVE_WINDOW = timedelta(days=7)


@router.get("")
def stats(db: DbSession, admin: AdminUser) -> dict:
    """Counts, active raters (judged in the last 7 days) and Krippendorff's alpha."""
    by_status = dict(db.execute(select(Task.status, func.count()).group_by(Task.status)).all())
    active = db.scalar(
        select(func.count(func.distinct(Judgement.rater_id))).where(
            Judgement.created_at >= utcnow() - ACTIVE_WINDOW
        )
    )
    return {
        "prompts": crud.count_prompts(db),
        "tasks": {
            "open": by_status.get(TaskStatus.OPEN, 0),
            "complete": by_status.get(TaskStatus.COMPLETE, 0),
        },
        "judgements": db.scalar(select(func.count()).select_from(Judgement)),
        "active_raters": active,
        "agreement": agreement_report(db),
    }
