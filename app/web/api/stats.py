"""`/api/stats`: what has been collected, how much the raters agree, and each rater's quality
(admins). Agreement and quality are read from the figures `app.domain.quality` stores in the
background, so the answer stays fast however many judgements there are."""

from __future__ import annotations

from datetime import timedelta

from fastapi import APIRouter
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from app.domain import prompt_store, quality
from app.models import Judgement, Task, TaskStatus, utcnow
from app.schemas import RaterQualityOut
from app.web.deps import AdminUser, DbSession

router = APIRouter(prefix="/api/stats", tags=["stats"])

ACTIVE_WINDOW = timedelta(days=7)


@router.get("")
def stats(db: DbSession, admin: AdminUser) -> dict:
    """What has been collected (prompts, open and complete tasks, judgements), the raters who
    judged in the last 7 days, the last agreement report (Krippendorff's alpha overall, per
    prompt tag and per rating aspect, with `computed_at`; null before the first computation)
    and each rater's quality figures."""
    by_status = dict(db.execute(select(Task.status, func.count()).group_by(Task.status)).all())
    active = db.scalar(
        select(func.count(func.distinct(Judgement.rater_id))).where(
            Judgement.created_at >= utcnow() - ACTIVE_WINDOW
        )
    )
    return {
        "prompts": prompt_store.count_prompts(db),
        "tasks": {
            "open": by_status.get(TaskStatus.OPEN, 0),
            "complete": by_status.get(TaskStatus.COMPLETE, 0),
        },
        "judgements": db.scalar(select(func.count()).select_from(Judgement)),
        "active_raters": active,
        "agreement": _stored_agreement(db),
        "raters": [
            RaterQualityOut.of(rater, figures).model_dump(mode="json")
            for rater, figures in quality.rater_rows(db)
            if figures is not None
        ],
    }


def _stored_agreement(db: Session) -> dict | None:
    report = quality.latest_report(db)
    if report is None:
        return None
    return {**report.report, "computed_at": report.computed_at.isoformat()}
