"""`/api/generations`: queueing candidate generation, the responses raters will compare
(admins)."""

from __future__ import annotations

from fastapi import APIRouter, Request

from app.domain import jobs, model_readiness
from app.schemas import NO_READY_MODEL, QUEUED, GenerationRequest, JobAccepted, documented
from app.web.deps import AdminUser, DbSession, SettingsDep

router = APIRouter(prefix="/api/generations", tags=["jobs"])


@router.post(
    "",
    status_code=202,
    responses=documented(
        {202: QUEUED, 409: NO_READY_MODEL, 422: "Invalid fields, or unknown prompts or models"}
    ),
)
def start_generation(
    request: Request,
    body: GenerationRequest,
    db: DbSession,
    settings: SettingsDep,
    admin: AdminUser,
) -> JobAccepted:
    """Queue a candidate-generation job: sample responses to prompts (by default every training
    prompt without an open task) and make rating tasks of them. Answers 202 with the job's id
    (follow it at `/api/jobs/{id}`), also while the broker is down: the job is then sent once
    it is back. 409 while no model is ready (the base model is still being prepared, say), 422
    for unknown prompts or model versions."""
    params = jobs.candidate_job_params(db, body, default_overlap=settings.default_overlap)
    model_readiness.require_ready_model(db, settings)
    job = jobs.create_job(db, kind=jobs.GENERATE_CANDIDATES, params=params, created_by=admin)
    db.commit()
    jobs.dispatch(db, request.app.state.celery, job)
    return JobAccepted(job_id=job.id)
