"""Admin pages: the guidelines editor (each save publishes a new version).

The form sends the version it was opened on; when another admin published meanwhile, the
editor comes back with 409, their version beside this admin's text, instead of overwriting it.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from app.domain import guidelines
from app.models import GuidelineVersion
from app.web.deps import DbSession, PageAdmin
from app.web.templating import render

router = APIRouter(prefix="/admin")

MAX_GUIDELINES_CHARS = 100_000


@router.get("/guidelines", response_class=HTMLResponse)
def edit_guidelines(request: Request, db: DbSession, admin: PageAdmin) -> HTMLResponse:
    """The guidelines editor (HTML), opened on the current version's text."""
    latest = guidelines.current_guidelines(db)
    return _editor(request, based_on=latest, text=latest.body if latest else "")


@router.post("/guidelines", responses={409: {"description": "Published meanwhile by another"}})
def publish_guidelines(
    request: Request,
    db: DbSession,
    admin: PageAdmin,
    body: Annotated[str, Form(min_length=1, max_length=MAX_GUIDELINES_CHARS)],
    based_on: Annotated[int | None, Form(ge=0, le=2**31)] = None,
) -> Response:
    """Publish the text as the new version of the guidelines, then go to them (303). When
    another admin published since `based_on`, the editor again (409) with their version beside
    this text, nothing published."""
    try:
        guidelines.publish_guidelines(db, body=body, author=admin, based_on=based_on)
    except guidelines.StaleGuidelines as stale:
        db.rollback()
        return _editor(
            request, based_on=stale.published, text=body, conflict=stale, status_code=409
        )
    db.commit()
    return RedirectResponse("/guidelines", status_code=303)


def _editor(
    request: Request,
    *,
    based_on: GuidelineVersion | None,
    text: str,
    conflict: guidelines.StaleGuidelines | None = None,
    status_code: int = 200,
) -> HTMLResponse:
    context = {"based_on": based_on, "text": text, "conflict": conflict}
    return render(request, "admin/guidelines.html", context, status_code=status_code)
