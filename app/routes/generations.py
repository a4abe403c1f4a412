"""`/api/generations` and `/api/jobs`: admins start candidate generation and follow jobs."""

from __future__ import annotations

from fastapi import APIRouter, Request

from app import jobs
from app.deps import AdminUser, DbSession, SettingsDep
from app.schemas import GenerationRequest, JobAccepted, JobOut

router = APIRouter(tags=["jobs"])


@router.post("/api/generations", status_code=202)
def start_generation(
    request: Request,
    body: GenerationRequest,
    db: DbSession,
    settings: SettingsDep,
    admin: AdminUser,
) -> JobAccepted:
    """Queue a candidate-generation job; it runs on a worker (the `train` queue)."""
    params = jobs.candidate_job_params(db, body, default_overlap=settings.default_overlap)
    job = jobs.create_job(db, kind=jobs.GENERATE_CANDIDATES, params=params, created_by=admin)
    db.commit()
    jobs.dispatch(db, request.app.state.celery, job)
    return JobAccepted(job_id=job.id)


@router.get("/api/jobs")
def list_jobs(db: DbSession, admin: AdminUser) -> list[JobOut]:
    return [JobOut.model_validate(job) for job in jobs.recent_jobs(db)]


@router.get("/api/jobs/{job_id}")
def show_job(job_id: int, db: DbSession, admin: AdminUser) -> JobOut:
    return JobOut.model_validate(jobs.get_job(db, job_id))
