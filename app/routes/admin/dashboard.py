"""Admin pages (`/admin`): candidate generation with its jobs, training rounds, and the
guidelines editor."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse
from sqlalchemy import select

from app import crud, jobs, rounds
from app.deps import DbSession, PageAdmin, SettingsDep
from app.models import Algorithm, Round
from app.schemas import MAX_RESPONSES_PER_TASK, GenerationRequest
from app.templating import render

router = APIRouter(prefix="/admin")


@router.get("", response_class=HTMLResponse)
def dashboard(
    request: Request, db: DbSession, settings: SettingsDep, admin: PageAdmin
) -> HTMLResponse:
    context = {
        "jobs": jobs.recent_jobs(db),
        "prompt_count": crud.count_prompts(db),
        "default_overlap": settings.default_overlap,
        "max_per_prompt": MAX_RESPONSES_PER_TASK,
        "rounds": db.scalars(select(Round).order_by(Round.id.desc()).limit(10)).all(),
        "algorithms": [algorithm.value for algorithm in Algorithm],
        "presets": list(rounds.PRESETS),
    }
    return render(request, "admin/index.html", context)


@router.post("/generations")
def start_generation(
    request: Request,
    db: DbSession,
    settings: SettingsDep,
    admin: PageAdmin,
    per_prompt: Annotated[int, Form(ge=2, le=MAX_RESPONSES_PER_TASK)] = 2,
    overlap: Annotated[int, Form(ge=1, le=20)] = 3,
) -> RedirectResponse:
    body = GenerationRequest(per_prompt=per_prompt, overlap=overlap)
    params = jobs.candidate_job_params(db, body, default_overlap=settings.default_overlap)
    job = jobs.create_job(db, kind=jobs.GENERATE_CANDIDATES, params=params, created_by=admin)
    db.commit()
    jobs.dispatch(db, request.app.state.celery, job)
    return RedirectResponse("/admin", status_code=303)
