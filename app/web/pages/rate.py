"""Rater pages: home with progress, the task page, its form posts, and the guidelines.

The task page is a plain form that works without JavaScript (each post redirects back to
`/rate?done=saved` or `?done=skipped`, which says so above the next task); `static/rate.js`
adds the keyboard and, by sending `X-Requested-With: fetch`, gets the next task as an HTML
fragment to swap in without reloading the page.
"""

from __future__ import annotations

import secrets
from typing import Literal

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from sqlalchemy.orm import Session
from starlette.datastructures import FormData

from app.config import Settings
from app.db import get_row
from app.domain import guidelines as rating_guidelines
from app.domain.assignment import (
    RaterPaused,
    current_or_next,
    live_assignment,
    open_leases,
    rating_progress,
    task_view,
)
from app.domain.escalation import Escalation
from app.domain.judgements import skip_task, submit_judgement
from app.domain.quality import consensus_agreement
from app.errors import Conflict, InvalidInput
from app.models import Task, User
from app.schemas import FLAGS, MAX_REASON_CHARS, RowId
from app.web.deps import DbSession, Form, PageRater, PageUser, SettingsDep
from app.web.i18n import translate
from app.web.pages.rating_form import FormProblem, judgement_from_form
from app.web.templating import render

router = APIRouter()

RESPONSE_LABELS = "ABCD"
Done = Literal["saved", "skipped"]
"""What the rater's last form post did, for the notice above the next task (or none left)."""


@router.get("/", response_class=HTMLResponse)
def home(request: Request, db: DbSession, rater: PageRater) -> HTMLResponse:
    """The rater's home page (HTML): their progress, whether they hold a task, and the
    guidelines. Raters and admins; a browser not signed in goes to the login page (303)."""
    context = {
        "progress": rating_progress(db, rater_id=rater.id),
        "holding": bool(open_leases(db, rater_id=rater.id)),
        "guidelines": rating_guidelines.guidelines_for_reader(db, language=rater.locale),
    }
    return render(request, "rate/home.html", context)


@router.get("/rate", response_class=HTMLResponse)
def rate(
    request: Request,
    db: DbSession,
    settings: SettingsDep,
    rater: PageRater,
    done: Done | None = None,
) -> Response:
    """The task page (HTML): the task the rater holds, else the next one leased to them, with
    the form to judge or skip it; or why there is none (none left, or the rater is paused).
    `done` says above it that the last task was saved or skipped (a form posted without
    scripts comes back here). With `X-Requested-With: fetch`, only the task's part of the page."""
    return _task_page(request, db, settings, rater, done=done)


@router.post("/rate/tasks/{task_id}/judgement", response_class=HTMLResponse)
def judge(
    task_id: RowId,
    request: Request,
    db: DbSession,
    settings: SettingsDep,
    rater: PageRater,
    form: Form,
) -> Response:
    """Judge a task from the task page's form, then go on to the next task: a redirect to
    `/rate` (303), or with `X-Requested-With: fetch` the next task's part of the page. A form
    that does not make a judgement shows the task again with what to fix (422); a task judged
    already or no longer leased shows the next one with why (409)."""
    try:
        body = judgement_from_form(
            form, response_ids=_response_ids(db, task_id), aspects=settings.aspects
        )
        submit_judgement(
            db,
            rater=rater,
            task_id=task_id,
            body=body,
            aspects=settings.aspects,
            idempotency_key=form.get("idempotency_key") or None,
            escalation=Escalation.from_settings(settings),
        )
    except InvalidInput as exc:
        db.rollback()
        error = translate(rater.locale, exc.key) if isinstance(exc, FormProblem) else exc.detail
        return _task_page(
            request, db, settings, rater, task_id=task_id, error=error, values=form, status=422
        )
    except Conflict as exc:
        return _refused(request, db, settings, rater, exc)
    return _next(request, db, settings, rater, done="saved")


@router.post("/rate/tasks/{task_id}/skip", response_class=HTMLResponse)
def skip(
    task_id: RowId,
    request: Request,
    db: DbSession,
    settings: SettingsDep,
    rater: PageRater,
    form: Form,
) -> Response:
    """Give a task back from the task page, with an optional reason, and go on as after a
    judgement; the rater is not offered it again. 409 (with the next task) when the lease is
    gone."""
    reason = str(form.get("reason") or "")[:MAX_REASON_CHARS]
    try:
        skip_task(db, rater=rater, task_id=task_id, reason=reason)
    except Conflict as exc:
        return _refused(request, db, settings, rater, exc)
    return _next(request, db, settings, rater, done="skipped")


@router.get("/guidelines", response_class=HTMLResponse)
def guidelines(request: Request, db: DbSession, user: PageUser) -> HTMLResponse:
    """The current rating guidelines (HTML), for anyone signed in."""
    shown = rating_guidelines.guidelines_for_reader(db, language=user.locale)
    return render(request, "guidelines.html", {"guidelines": shown})


def _is_fetch(request: Request) -> bool:
    return request.headers.get("x-requested-with") == "fetch"


def _next(
    request: Request, db: Session, settings: Settings, rater: User, *, done: Done
) -> Response:
    """Keep what the form post did and go on to the next task, saying what was `done`: a
    redirect to `/rate?done=...`, or for a fetch the next task's part of the page."""
    db.commit()
    if not _is_fetch(request):
        return RedirectResponse(f"/rate?done={done}", status_code=303)
    return _task_page(request, db, settings, rater, done=done)


def _refused(
    request: Request, db: Session, settings: Settings, rater: User, conflict: Conflict
) -> Response:
    """A form post on a task judged already or no longer leased keeps nothing and shows the
    next task with why (409)."""
    db.rollback()
    return _task_page(request, db, settings, rater, notice=conflict.detail, status=409)


def _response_ids(db: Session, task_id: int) -> list[int]:
    task = get_row(db, Task, task_id, missing="Task not found")
    return [link.response_id for link in task.responses]


def _task_page(
    request: Request,
    db: Session,
    settings: Settings,
    rater: User,
    *,
    task_id: int | None = None,
    error: str | None = None,
    notice: str | None = None,
    done: Done | None = None,
    values: FormData | None = None,
    status: int = 200,
) -> Response:
    """The given task if the rater still holds it, else their current or next task (or why
    a paused rater gets none), under the rater's progress."""
    context = {
        "task": None,
        "paused": None,
        "error": error,
        "notice": notice,
        "done": done,
        "values": values or FormData(),
    }
    try:
        assignment = (task_id and live_assignment(db, task_id=task_id, rater_id=rater.id)) or (
            current_or_next(
                db,
                rater=rater,
                lease_minutes=settings.lease_minutes,
                max_open_leases=settings.max_open_leases,
                gold_rate=settings.gold_rate,
            )
        )
    except RaterPaused as paused:
        assignment, context["paused"] = None, paused
    if assignment is not None:
        view = task_view(db, assignment)
        guideline = rating_guidelines.current_guidelines(db)
        context |= {
            "task": view,
            "responses": list(zip(RESPONSE_LABELS, view.responses, strict=False)),
            "pairwise": len(view.responses) == 2,
            "aspects": settings.aspects,
            "flags": FLAGS,
            "guideline_version": guideline.version if guideline else None,
            "idempotency_key": secrets.token_urlsafe(16),
        }
    context |= {
        "progress": rating_progress(db, rater_id=rater.id),
        "agreement": consensus_agreement(db, rater_id=rater.id),
    }
    db.commit()
    template = "rate/_task.html" if _is_fetch(request) else "rate/page.html"
    return render(request, template, context, status_code=status)
