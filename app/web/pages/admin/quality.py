"""Admin pages: quality control (`/admin/quality`): agreement, the raters' figures with pause
and resume, gold tasks, and a button that recomputes the figures now.

The page reads only stored rows (`RaterQuality`, the latest `QualityReport`, gold tasks), which
`app.domain.quality` refreshes in the background, so it renders as fast with a million judgements as
with ten.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from sqlalchemy.orm import Session

from app.config import Settings
from app.domain import accounts, quality
from app.errors import AppError, InvalidInput
from app.schemas import MAX_REASON_CHARS, RowId, documented
from app.web.deps import DbSession, PageAdmin, SettingsDep
from app.web.i18n import DEFAULT_LANGUAGE, translate
from app.web.templating import render

router = APIRouter(prefix="/admin/quality")

PAGE = "/admin/quality"
# The page shows it in the admin's language; the error that a bad ranking gets (from the page
# or the API) is in English, as the other errors are.
RANKING_HELP = translate(DEFAULT_LANGUAGE, "admin.quality.ranking_format")


@router.get("", response_class=HTMLResponse)
def quality_page(
    request: Request,
    db: DbSession,
    settings: SettingsDep,
    admin: PageAdmin,
    requested: bool = False,
) -> HTMLResponse:
    """The quality page (HTML): the raters' agreement and each rater's figures as last computed,
    with pause and resume buttons, and the gold tasks with the form to add one. With
    `requested`, a note that new figures are being computed."""
    return _render(request, db, settings, requested=requested)


@router.post("/refresh")
def recompute(request: Request, admin: PageAdmin) -> RedirectResponse:
    """Ask for the quality figures to be recomputed in the background, then back to the
    quality page, which says so (303)."""
    quality.request_refresh(request.app.state.celery)
    return RedirectResponse(f"{PAGE}?requested=true", status_code=303)


@router.post("/raters/{user_id}/pause")
def pause(
    user_id: RowId,
    db: DbSession,
    admin: PageAdmin,
    reason: Annotated[str, Form(max_length=MAX_REASON_CHARS)] = "",
) -> RedirectResponse:
    """Pause a rater as `POST /api/users/{id}/pause` does, then back to the quality page
    (303)."""
    rater = accounts.get_user(db, user_id=user_id)
    quality.pause_rater(db, rater, reason=reason.strip() or f"paused by {admin.username}")
    db.commit()
    return RedirectResponse(PAGE, status_code=303)


@router.post("/raters/{user_id}/resume")
def resume(user_id: RowId, db: DbSession, admin: PageAdmin) -> RedirectResponse:
    """Give a paused rater tasks again, then back to the quality page (303)."""
    quality.resume_rater(accounts.get_user(db, user_id=user_id))
    db.commit()
    return RedirectResponse(PAGE, status_code=303)


@router.post(
    "/gold",
    response_class=HTMLResponse,
    responses=documented({404: "No task has that id: the form is shown again, with the message"}),
)
def mark_gold(
    request: Request,
    db: DbSession,
    settings: SettingsDep,
    admin: PageAdmin,
    task_id: Annotated[RowId, Form()],
    ranking: Annotated[str, Form(max_length=200)],
) -> Response:
    """Make a task gold with its known answer, written as `12 > 10 = 11` (response ids best
    first, `=` between ties), then back to the quality page (303). A refusal (no such task, a
    retired task, a ranking not of the task's responses) shows the page again with why and
    what was typed, with the status `POST /api/tasks/{id}/gold` would answer."""
    try:
        quality.mark_gold(db, task_id=task_id, ranking=parse_ranking(ranking))
    except AppError as exc:  # shown above the form, which keeps what was typed
        db.rollback()
        form = {"task_id": task_id, "ranking": ranking}
        return _render(request, db, settings, error=exc.detail, form=form, status=exc.status_code)
    db.commit()
    return RedirectResponse(PAGE, status_code=303)


@router.post("/gold/{task_id}/unmark")
def unmark_gold(task_id: RowId, db: DbSession, admin: PageAdmin) -> RedirectResponse:
    """Make a gold task an ordinary one again, then back to the quality page (303)."""
    quality.unmark_gold(db, task_id=task_id)
    db.commit()
    return RedirectResponse(PAGE, status_code=303)


def parse_ranking(text: str) -> list:
    """`12 > 10 = 11` as a ranking: `[12, [10, 11]]`."""
    try:
        places = [[int(item) for item in place.split("=")] for place in text.split(">")]
    except ValueError:
        raise InvalidInput(f"Write the ranking as {RANKING_HELP}.") from None
    return [place[0] if len(place) == 1 else place for place in places]


def ranking_text(ranking: list) -> str:
    """A ranking as `parse_ranking` reads it."""
    return " > ".join(
        " = ".join(map(str, entry)) if isinstance(entry, list) else str(entry) for entry in ranking
    )


def _render(
    request: Request,
    db: Session,
    settings: Settings,
    *,
    requested: bool = False,
    error: str | None = None,
    form: dict | None = None,
    status: int = 200,
) -> HTMLResponse:
    context = {
        "report": quality.latest_report(db),
        "raters": quality.rater_rows(db),
        "gold": [(task, ranking_text(task.gold_ranking)) for task in quality.gold_tasks(db)],
        "escalated": quality.escalated_task_count(db),
        "settings": settings,
        "requested": requested,
        "error": error,
        "form": form or {},
    }
    return render(request, "admin/quality.html", context, status_code=status)
