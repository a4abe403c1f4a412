"""`/api/jobs`: following background jobs, whichever route queued them (admins)."""

from __future__ import annotations

from fastapi import APIRouter

from app.domain import jobs
from app.schemas import JobOut, RowId
from app.web.deps import AdminUser, DbSession

router = APIRouter(prefix="/api/jobs", tags=["jobs"])


@router.get("")
def list_jobs(db: DbSession, admin: AdminUser) -> list[JobOut]:
    """The 20 newest background jobs, newest first, each as `GET /api/jobs/{id}` shows it."""
    return [JobOut.model_validate(job) for job in jobs.recent_jobs(db)]


@router.get("/{job_id}")
def show_job(job_id: RowId, db: DbSession, admin: AdminUser) -> JobOut:
    """One background job: its kind, status, progress with an estimate of the time left while
    it runs, its parameters, and its result or error."""
    return JobOut.model_validate(jobs.get_job(db, job_id))
