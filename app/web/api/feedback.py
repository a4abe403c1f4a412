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
    """Rate one of the caller's `/v1` completions (by its id) up or down, or give a better
    answer, or both. Its conversation joins the prompt pool, and a better answer becomes a
    rating task beside the served one; answers 201 with the feedback's id and those of the
    prompt and the task (null where none). 404 when no completion of the caller's has this id
    (admins may rate anyone's), 422 when `choice_index` is beyond the completion's choices."""
    feedback = give_feedback(db, user=user, body=body, overlap=settings.default_overlap)
    db.commit()
    return FeedbackOut(id=feedback.id, prompt_id=feedback.prompt_id, task_id=feedback.task_id)
