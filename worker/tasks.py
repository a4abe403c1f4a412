"""Celery tasks: thin wrappers that take ids, open a session, call the real code, report status.

Tasks are registered on a given Celery app (never `current_app`) with the context they need.
"""

from __future__ import annotations

import logging

from celery import Celery
from sqlalchemy import select

from app.db import session_scope
from app.domain import accounts, jobs, leaderboard, quality, rounds
from app.domain.assignment import expire_stale_leases
from app.errors import Conflict
from app.inference import ChatJob
from app.models import Algorithm, Job, RoundStage, RunStatus
from app.tasks_contract import (
    DEFAULT_TIME_LIMIT_S,
    GENERATE_CANDIDATES,
    INFER,
    PING,
    PULL_BASE_MODEL,
    PURGE_EXPIRED_CREDENTIALS,
    RECLAIM,
    REFRESH_QUALITY,
    ROUND_STAGE,
    SCHEDULE_GENERATION,
    SCHEDULE_ROUND,
    TRAIN_REWARD_MODEL,
    TRAIN_SFT,
    TRAIN_TIME_LIMIT_S,
)
from worker.context import WorkerContext
from worker.isolation import (
    Watched,
    WatchedBasePreparation,
    WatchedJob,
    WatchedStage,
    run_isolated,
)

log = logging.getLogger(__name__)

TRAINING_LIMITS = {"time_limit": TRAIN_TIME_LIMIT_S, "soft_time_limit": TRAIN_TIME_LIMIT_S - 60}
"""Time limits of the tasks that train a model."""


def register_tasks(celery: Celery, context: WorkerContext) -> None:
    def isolated(
        work: str, args: list, watched: Watched, time_limit_s: float = DEFAULT_TIME_LIMIT_S
    ) -> str:
        """Run `work` in a supervised child process (worker.isolation)."""
        return run_isolated(context, celery, work, args, watched, time_limit_s=time_limit_s)

    @celery.task(shared=False, name=PING)
    def ping() -> str:
        """Answers `pong`: proves a broker, a worker and the result backend work together."""
        return "pong"

    @celery.task(shared=False, name=PURGE_EXPIRED_CREDENTIALS)
    def purge_expired_credentials() -> int:
        window = context.settings.longest_throttle_window
        with session_scope(context.session_factory) as db:
            removed = accounts.purge_expired_credentials(db, throttle_window=window)
        log.info("purged %d expired sessions, tokens and login throttles", removed)
        return removed

    @celery.task(shared=False, name=PULL_BASE_MODEL, **TRAINING_LIMITS)
    def pull_base_model() -> str:
        """Make sure the configured base model is in the store as version `base`."""
        watched = WatchedBasePreparation(context.settings)
        return isolated("pull_base_model", [], watched, TRAIN_TIME_LIMIT_S)

    @celery.task(shared=False, name=GENERATE_CANDIDATES)
    def generate_candidates(job_id: int) -> str:
        return isolated(jobs.GENERATE_CANDIDATES, [job_id], WatchedJob(job_id))

    @celery.task(shared=False, name=TRAIN_REWARD_MODEL, **TRAINING_LIMITS)
    def train_reward_model(job_id: int) -> str:
        return isolated(jobs.TRAIN_REWARD_MODEL, [job_id], WatchedJob(job_id), TRAIN_TIME_LIMIT_S)

    @celery.task(shared=False, name=TRAIN_SFT, **TRAINING_LIMITS)
    def train_sft(job_id: int) -> str:
        return isolated(jobs.TRAIN_SFT, [job_id], WatchedJob(job_id), TRAIN_TIME_LIMIT_S)

    @celery.task(shared=False, name=ROUND_STAGE, **TRAINING_LIMITS)
    def round_stage(round_id: int, stage: str) -> str:
        """Run one stage of a training round (the round's chain sends them in order)."""
        watched = WatchedStage(round_id, RoundStage(stage))
        return isolated("round_stage", [round_id, stage], watched, TRAIN_TIME_LIMIT_S)

    @celery.task(shared=False, name=SCHEDULE_ROUND)
    def schedule_round(reason: str) -> int | None:
        """Start a scheduled round, unless one is active or (for `judgements`) too few new
        judgements have come in."""
        return start_scheduled_round(celery, context, reason=reason)

    @celery.task(shared=False, name=INFER, acks_late=False, ignore_result=True)
    def infer(job: dict, channel: str) -> str:
        """Serve one `/v1` request on this worker (ALIGNLOOP_INFERENCE=celery). Not retried:
        its client is waiting and gets an error instead."""
        from worker.serving.on_worker import serve_on_worker

        return serve_on_worker(context.settings, ChatJob(**job), channel)

    @celery.task(shared=False, name=RECLAIM)
    def reclaim(after_restart: bool = False) -> dict[str, int]:
        """Expire stale rater leases and re-send jobs whose message or worker was lost."""
        return reclaim_work(celery, context, after_restart=after_restart)

    @celery.task(shared=False, name=REFRESH_QUALITY)
    def refresh_quality() -> dict[str, int]:
        """Recompute the raters' quality figures, the agreement report and the leaderboard;
        pause raters whose trust fell below the threshold."""
        with session_scope(context.session_factory) as db:
            refreshed = quality.refresh_quality(db, context.settings)
            leaderboard.store(db)
        return refreshed

    @celery.task(shared=False, name=SCHEDULE_GENERATION)
    def schedule_generation() -> int | None:
        """Start a candidate-generation job unless one is already waiting or running."""
        with context.session_factory() as db:
            busy = db.scalar(
                select(Job.id).where(
                    Job.kind == jobs.GENERATE_CANDIDATES,
                    Job.status.in_([RunStatus.QUEUED, RunStatus.RUNNING]),
                )
            )
            if busy is not None:
                return None
            job = jobs.create_job(
                db,
                kind=jobs.GENERATE_CANDIDATES,
                params={"overlap": context.settings.default_overlap},
                created_by=None,
            )
            db.commit()
            jobs.dispatch(db, celery, job)
            return job.id


def start_scheduled_round(celery: Celery, context: WorkerContext, *, reason: str) -> int | None:
    settings = context.settings
    with context.session_factory() as db:
        if rounds.active_round(db, line="main") is not None:
            return None
        fresh = rounds.judgements_since_last_round(db)
        if fresh == 0 or (reason == "judgements" and fresh < settings.round_after_judgements):
            return None
        try:
            round_ = rounds.start_round(
                db,
                algorithm=Algorithm(settings.round_algorithm),
                preset=settings.round_preset,
                overrides={},
                created_by=None,
                settings=settings,
            )
        except Conflict as refused:  # too few pairs yet, or an admin's start won the race
            log.info("no scheduled round: %s", refused.detail)
            return None
        db.commit()
        rounds.send(db, celery, round_.id)
        log.info("started round %d (%s, %d new judgements)", round_.id, reason, fresh)
        return round_.id


def reclaim_work(celery: Celery, context: WorkerContext, *, after_restart: bool) -> dict[str, int]:
    """Free expired leases, re-send lost jobs and rounds (those never sent, as when the broker
    was down, and those not taken up in time), fail rounds whose worker died, and promote
    policies that waited for the raters' verdict; `after_restart` treats every unfinished job
    and round as lost (the embedded default's in-memory queue does not survive a restart)."""
    with context.session_factory() as db:
        expired = expire_stale_leases(db)
        lost = jobs.jobs_to_redispatch(db, after_restart=after_restart)
        failed_rounds = rounds.fail_lost_rounds(db, after_restart=after_restart)
        waiting = rounds.rounds_to_redispatch(db, after_restart=after_restart)
        promoted = rounds.promote_on_human_verdicts(db)
        db.commit()
        resent_jobs = sum(jobs.dispatch(db, celery, job) for job in lost)
        resent_rounds = sum(
            rounds.send(db, celery, round_.id, from_stage=round_.stage) for round_ in waiting
        )
    if expired or lost or failed_rounds or waiting:
        log.info(
            "reclaimed %d expired leases, re-sent %d of %d jobs and %d of %d rounds, "
            "failed %d rounds",
            expired,
            resent_jobs,
            len(lost),
            resent_rounds,
            len(waiting),
            failed_rounds,
        )
    return {
        "expired_leases": expired,
        "resent_jobs": resent_jobs,
        "resent_rounds": resent_rounds,
        "failed_rounds": failed_rounds,
        "promoted_rounds": len(promoted),
    }
