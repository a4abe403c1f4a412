"""Admin pages: the guidelines editor (each save publishes a new version)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse

from app import crud
from app.deps import DbSession, PageAdmin
from app.templating import render

router = APIRouter(prefix="/admin")

MAX_GUIDELINES_CHARS = 100_000


@router.get("/guidelines", response_class=HTMLResponse)
def edit_guidelines(request: Request, db: DbSession, admin: PageAdmin) -> HTMLResponse:
    return render(request, "admin/guidelines.html", {"guidelines": crud.current_guidelines(db)})


@router.post("/guidelines")
def publish_guidelines(
    db: DbSession,
    admin: PageAdmin,
    body: Annotated[str, Form(min_length=1, max_length=MAX_GUIDELINES_CHARS)],
) -> RedirectResponse:
    crud.publish_guidelines(db, body=body, author=admin)
    db.commit()
    return RedirectResponse("/guidelines", status_code=303)
