"""Background jobs: a row says what must be done; workers hold it under a lease
(`app.domain.leases`).

The broker only carries "look at job N". A worker runs a job only after claiming it in the
database, so a message delivered twice (a re-delivery, a re-send after a restart) does nothing
the second time, and a job whose worker died is found by its expired lease and sent again.
A job that keeps killing its worker is failed after `MAX_ATTEMPTS`, not retried forever.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from celery import Celery
from sqlalchemy import or_, select, update
from sqlalchemy.orm import Session

from app import broker
from app.db import get_row
from app.domain import leases
from app.errors import InvalidInput
from app.models import Job, ModelKind, ModelStatus, ModelVersion, Prompt, RunStatus, User, utcnow
from app.schemas import GenerationRequest
from app.tasks_contract import JOB_TASKS

GENERATE_CANDIDATES = "generate_candidates"
TRAIN_REWARD_MODEL = "train_reward_model"
TRAIN_SFT = "train_sft"
"""The kinds of job (`Job.kind`); `app.tasks_contract.JOB_TASKS` names the task of each."""

REDISPATCH_AFTER = timedelta(minutes=30)
MAX_ATTEMPTS = 3


def create_job(db: Session, *, kind: str, params: dict[str, Any], created_by: User | None) -> Job:
    job = Job(kind=kind, params=params, created_by_id=created_by.id if created_by else None)
    db.add(job)
    db.flush()
    return job


def dispatch(db: Session, celery: Celery, job: Job) -> bool:
    """Send the job's message; call after the transaction that created the job has committed.

    When the broker is down the job stays queued and unsent (False), and `jobs_to_redispatch`
    finds it at the reclaim task's next run after the broker is back.
    """
    if not broker.send_task(celery, JOB_TASKS[job.kind], args=[job.id]):
        return False
    job.dispatched_at = utcnow()
    db.commit()
    return True


def claim_job(db: Session, *, job_id: int, worker: str) -> Job | None:
    """Take the job for `worker` if nobody holds it; None when it is done, held, or given up
    (after `MAX_ATTEMPTS` claims, each of which its worker died in)."""
    job = leases.claim(db, Job, job_id, worker=worker, where=[Job.attempts < MAX_ATTEMPTS])
    if job is None:
        _give_up(db, job_id)
    return job


def _give_up(db: Session, job_id: int) -> None:
    db.execute(
        update(Job)
        .where(
            Job.id == job_id,
            Job.status.in_(leases.ACTIVE),
            Job.attempts >= MAX_ATTEMPTS,
            leases.is_free(Job, utcnow()),
        )
        .values(
            status=RunStatus.FAILED,
            finished_at=utcnow(),
            error=f"Gave up after {MAX_ATTEMPTS} attempts; the worker stopped each time.",
        )
    )


def renew_lease(
    db: Session, *, job_id: int, worker: str, progress: float, detail: str | None = None
) -> bool:
    """Extend the lease and record progress; False when the job is no longer this worker's."""
    return leases.renew(db, Job, job_id, worker=worker, progress=progress, detail=detail)


def finish_job(
    db: Session,
    *,
    job_id: int,
    worker: str,
    result: dict | None = None,
    error: str | None = None,
    detail: str | None = None,
) -> None:
    """Record the outcome, and the last progress in words."""
    job = db.scalar(select(Job).where(Job.id == job_id).with_for_update())
    if job is None or job.lease_owner != worker or job.status != RunStatus.RUNNING:
        return
    job.status = RunStatus.FAILED if error else RunStatus.SUCCEEDED
    job.result, job.error = result or {}, error
    job.progress = job.progress if error else 1.0
    job.progress_detail = detail or job.progress_detail
    job.finished_at, job.lease_expires_at = utcnow(), None


def fail_abandoned_job(db: Session, *, job_id: int, worker: str, error: str) -> None:
    """Fail a job whose process (`worker`, a lease-owner prefix) ended without finishing it,
    unless another worker holds it."""
    job = db.scalar(select(Job).where(Job.id == job_id).with_for_update())
    if job is None or job.status not in leases.ACTIVE or leases.held_elsewhere(job, worker):
        return
    job.status, job.error, job.finished_at = RunStatus.FAILED, error, utcnow()
    job.lease_owner = job.lease_expires_at = None


def unsent_jobs(db: Session) -> list[Job]:
    """Queued jobs whose message was never sent (created by a process with no broker)."""
    query = select(Job).where(Job.status == RunStatus.QUEUED, Job.dispatched_at.is_(None))
    return list(db.scalars(query.order_by(Job.id)))


def jobs_to_redispatch(db: Session, *, after_restart: bool = False) -> list[Job]:
    """Jobs whose message may be lost: queued and never (or long ago) sent, or running with an
    expired lease. After a restart of the embedded default every unfinished job qualifies, as
    its in-memory queue and worker are gone."""
    unsent = Job.dispatched_at.is_(None) | (Job.dispatched_at < utcnow() - REDISPATCH_AFTER)
    waiting = Job.status == RunStatus.QUEUED
    condition = or_(
        waiting if after_restart else waiting & unsent,
        leases.is_lost(Job, after_restart=after_restart),
    )
    jobs = list(db.scalars(select(Job).where(condition).order_by(Job.id)))
    for job in jobs:
        if job.status == RunStatus.RUNNING:
            job.status, job.lease_owner, job.lease_expires_at = RunStatus.QUEUED, None, None
    return jobs


def candidate_job_params(
    db: Session, request: GenerationRequest, *, default_overlap: int
) -> dict[str, Any]:
    """The params of a candidate-generation job, after checking that what it names exists."""
    if request.prompt_ids:
        found = set(db.scalars(select(Prompt.id).where(Prompt.id.in_(request.prompt_ids))))
        if missing := sorted(set(request.prompt_ids) - found):
            raise InvalidInput(f"Unknown prompt ids: {missing[:20]}")
    for name in request.model_versions or []:
        version = db.scalar(select(ModelVersion).where(ModelVersion.name == name))
        if (
            version is None
            or version.kind != ModelKind.POLICY
            or version.status != ModelStatus.READY
        ):
            raise InvalidInput(f"No ready policy model version named {name!r}")
    sampling = request.model_dump(include={"max_new_tokens", "temperature", "top_p", "seed"})
    return {
        "prompt_ids": request.prompt_ids,
        "per_prompt": request.per_prompt,
        "overlap": request.overlap or default_overlap,
        "model_versions": request.model_versions,
        "sampling": {key: value for key, value in sampling.items() if value is not None},
    }


def get_job(db: Session, job_id: int) -> Job:
    return get_row(db, Job, job_id, missing="Job not found")


def recent_jobs(db: Session, *, limit: int = 20, active: bool = False) -> list[Job]:
    """The newest jobs first; with `active`, only the queued and running ones."""
    return leases.newest(db, Job, limit=limit, active=active)
