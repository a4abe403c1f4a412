"""Admin pages: the dashboard (collection figures, queue and worker health) and candidate
generation."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse
from sqlalchemy import select

from app.domain import dashboard, jobs, model_readiness
from app.errors import Conflict
from app.models import Round
from app.schemas import MAX_RESPONSES_PER_TASK, GenerationRequest
from app.web.api.health import ping_broker
from app.web.deps import DbSession, PageAdmin, SettingsDep
from app.web.templating import render

router = APIRouter(prefix="/admin")

RECENT = 8


@router.get("", response_class=HTMLResponse)
def dashboard_page(
    request: Request, db: DbSession, settings: SettingsDep, admin: PageAdmin
) -> HTMLResponse:
    """The admin console's dashboard (HTML): what has been collected, the task queue's and the
    broker's health, the model's state, recent jobs and rounds, and the form that starts
    candidate generation."""
    return _dashboard(request, db, settings)


def _dashboard(
    request: Request, db: DbSession, settings: SettingsDep, *, refusal: Conflict | None = None
) -> HTMLResponse:
    """The dashboard; `refusal` (a generation the form asked for) is shown above the form."""
    context = {
        "collection": dashboard.collection(db),
        "health": dashboard.queue_health(db),
        "broker_ok": _broker_answers(request),
        "model": model_readiness.model_state(db, settings),
        "jobs": jobs.recent_jobs(db, limit=RECENT),
        "rounds": db.scalars(select(Round).order_by(Round.id.desc()).limit(RECENT)).all(),
        "default_overlap": settings.default_overlap,
        "max_per_prompt": MAX_RESPONSES_PER_TASK,
        "refusal": refusal.detail if refusal else None,
    }
    status = refusal.status_code if refusal else 200
    return render(request, "admin/index.html", context, status_code=status)


def _broker_answers(request: Request) -> bool:
    try:
        ping_broker(request.app.state.celery)
    except Exception:  # any failure to reach the broker is shown, not raised
        return False
    return True


@router.post("/generations", response_model=None)
def start_generation(
    request: Request,
    db: DbSession,
    settings: SettingsDep,
    admin: PageAdmin,
    per_prompt: Annotated[int, Form(ge=2, le=MAX_RESPONSES_PER_TASK)] = 2,
    overlap: Annotated[int, Form(ge=1, le=20)] = 3,
) -> RedirectResponse | HTMLResponse:
    """Queue candidate generation from the dashboard's form, as `POST /api/generations` does
    for every prompt without an open task, then back to the dashboard (303). While no model is
    ready, the dashboard again with why (409)."""
    body = GenerationRequest(per_prompt=per_prompt, overlap=overlap)
    params = jobs.candidate_job_params(db, body, default_overlap=settings.default_overlap)
    try:
        model_readiness.require_ready_model(db, settings)
    except Conflict as refused:
        return _dashboard(request, db, settings, refusal=refused)
    job = jobs.create_job(db, kind=jobs.GENERATE_CANDIDATES, params=params, created_by=admin)
    db.commit()
    jobs.dispatch(db, request.app.state.celery, job)
    return RedirectResponse("/admin", status_code=303)
