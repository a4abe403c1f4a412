"""`/api/feedback`: thumbs up or down, or a better answer, on a completion served by `/v1`."""

from __future__ import annotations

from fastapi import APIRouter

from app.domain.feedback import give_feedback
from app.schemas import FeedbackIn, FeedbackOut, error_responses
from app.web.deps import CurrentUser, DbSession, SettingsDep

router = APIRouter(prefix="/api/feedback", tags=["feedback"])


@router.post("", status_code=201, responses=error_responses(404))
def post_feedback(
    body: FeedbackIn, db: DbSession, settings: SettingsDep, user: CurrentUser
) -> FeedbackOut:
    feedback = give_feedback(db, user=user, body=body, overlap=settings.default_overlap)
    db.commit()
    return FeedbackOut(id=feedback.id, prompt_id=feedback.prompt_id, task_id=feedback.task_id)
