"""`/api/training-jobs`: queueing a reward-model or SFT training job outside a round (admins)."""

from __future__ import annotations

from fastapi import APIRouter, Request

from app.domain import jobs, model_readiness, model_registry
from app.round_config import RewardConfig, SFTConfig, build_config
from app.schemas import NO_READY_MODEL, QUEUED, JobAccepted, TrainingRequest, documented
from app.web.deps import AdminUser, DbSession, SettingsDep

router = APIRouter(prefix="/api/training-jobs", tags=["jobs"])


@router.post(
    "",
    status_code=202,
    responses=documented(
        {202: QUEUED, 404: "No served policy has the `base` name", 409: NO_READY_MODEL}
    ),
)
def start_training(
    request: Request, body: TrainingRequest, db: DbSession, settings: SettingsDep, admin: AdminUser
) -> JobAccepted:
    """Queue a reward-model or SFT training job on the collected judgements, from the `base`
    policy version (by default the current one); it registers a model version when done.
    Answers 202 with the job's id (follow it at `/api/jobs/{id}`), also while the broker is
    down. 404 when no served version has the `base` name, 409 while no model is ready, 422 for
    unknown or invalid trainer settings in `config`."""
    kind = jobs.TRAIN_REWARD_MODEL if body.kind == "reward_model" else jobs.TRAIN_SFT
    build_config(RewardConfig if body.kind == "reward_model" else SFTConfig, body.config)
    if body.base is not None:
        model_registry.served_policy(db, name=body.base)  # 404 now rather than a failed job later
    else:
        model_readiness.require_ready_model(db, settings)
    params = body.model_dump(exclude={"kind"})
    job = jobs.create_job(db, kind=kind, params=params, created_by=admin)
    db.commit()
    jobs.dispatch(db, request.app.state.celery, job)
    return JobAccepted(job_id=job.id)
