"""Background jobs for admins: candidate generation (`/api/generations`), training
(`/api/training-jobs`), and following any job (`/api/jobs`)."""

from __future__ import annotations

from fastapi import APIRouter, Request

from app.domain import crud, jobs, model_readiness
from app.round_config import RewardConfig, SFTConfig, build_config
from app.schemas import (
    QUEUED,
    GenerationRequest,
    JobAccepted,
    JobOut,
    RowId,
    TrainingRequest,
    documented,
)
from app.web.deps import AdminUser, DbSession, SettingsDep

router = APIRouter(tags=["jobs"])

NOT_READY = "No model is ready (the base model is still being prepared, say)"


@router.post(
    "/api/generations",
    status_code=202,
    responses=documented(
        {202: QUEUED, 409: NOT_READY, 422: "Invalid fields, or unknown prompts or models"}
    ),
)
def start_generation(
    request: Request,
    body: GenerationRequest,
    db: DbSession,
    settings: SettingsDep,
    admin: AdminUser,
) -> JobAccepted:
    """Queue a candidate-generation job; it runs on a worker (the `train` queue). 409 while
    no model is ready (the base model is still being prepared, say). With the broker down
    the job is accepted all the same: it is committed first, and sent once the broker is
    back."""
    params = jobs.candidate_job_params(db, body, default_overlap=settings.default_overlap)
    model_readiness.require_ready_model(db, settings)
    job = jobs.create_job(db, kind=jobs.GENERATE_CANDIDATES, params=params, created_by=admin)
    db.commit()
    jobs.dispatch(db, request.app.state.celery, job)
    return JobAccepted(job_id=job.id)


@router.post(
    "/api/training-jobs",
    status_code=202,
    responses=documented(
        {202: QUEUED, 404: "No served policy has the `base` name", 409: NOT_READY}
    ),
)
def start_training(
    request: Request, body: TrainingRequest, db: DbSession, settings: SettingsDep, admin: AdminUser
) -> JobAccepted:
    """Queue a reward-model or SFT training job; it registers a model version when done."""
    kind = jobs.TRAIN_REWARD_MODEL if body.kind == "reward_model" else jobs.TRAIN_SFT
    build_config(RewardConfig if body.kind == "reward_model" else SFTConfig, body.config)
    if body.base is not None:
        crud.served_policy(db, name=body.base)  # 404 now rather than a failed job later
    else:
        model_readiness.require_ready_model(db, settings)
    params = body.model_dump(exclude={"kind"})
    job = jobs.create_job(db, kind=kind, params=params, created_by=admin)
    db.commit()
    jobs.dispatch(db, request.app.state.celery, job)
    return JobAccepted(job_id=job.id)


@router.get("/api/jobs")
def list_jobs(db: DbSession, admin: AdminUser) -> list[JobOut]:
    return [JobOut.model_validate(job) for job in jobs.recent_jobs(db)]


@router.get("/api/jobs/{job_id}")
def show_job(job_id: RowId, db: DbSession, admin: AdminUser) -> JobOut:
    return JobOut.model_validate(jobs.get_job(db, job_id))
