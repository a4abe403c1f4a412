"""Quality-control API (admins): gold tasks with their known answers, and pausing raters.

The paths sit under the resources they act on (`/api/tasks/{id}/gold`, `/api/users/{id}/pause`)
while the code lives with the rest of quality control.
"""

from __future__ import annotations

from fastapi import APIRouter

from app.domain import crud, quality
from app.schemas import GoldIn, GoldOut, PauseIn, PauseOut, RowId
from app.web.deps import AdminUser, DbSession

router = APIRouter(prefix="/api", tags=["quality"])


@router.post("/tasks/{task_id}/gold")
def mark_gold(task_id: RowId, body: GoldIn, db: DbSession, admin: AdminUser) -> GoldOut:
    """Make the task a gold task whose known answer is `ranking`; raters get it at the
    configured gold rate, and it stays out of snapshots."""
    task = quality.mark_gold(db, task_id=task_id, ranking=body.ranking)
    db.commit()
    return GoldOut.model_validate(task)


@router.delete("/tasks/{task_id}/gold")
def unmark_gold(task_id: RowId, db: DbSession, admin: AdminUser) -> GoldOut:
    task = quality.unmark_gold(db, task_id=task_id)
    db.commit()
    return GoldOut.model_validate(task)


@router.post("/users/{user_id}/pause")
def pause(user_id: RowId, db: DbSession, admin: AdminUser, body: PauseIn | None = None) -> PauseOut:
    """Stop giving the rater tasks (their held tasks go back to the pool) until resumed."""
    rater = crud.get_user(db, user_id=user_id)
    reason = (body.reason if body else "") or f"paused by {admin.username}"
    quality.pause_rater(db, rater, reason=reason)
    db.commit()
    return PauseOut.model_validate(rater)


@router.post("/users/{user_id}/resume")
def resume(user_id: RowId, db: DbSession, admin: AdminUser) -> PauseOut:
    rater = crud.get_user(db, user_id=user_id)
    quality.resume_rater(rater)
    db.commit()
    return PauseOut.model_validate(rater)
