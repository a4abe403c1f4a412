"""Running one background job: claim it, keep its lease alive, record the outcome.

The lease is renewed from a separate thread, so a long batch on a slow machine never looks like
a dead worker. The work function reports progress through the `Progress` it is given.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
from collections.abc import Callable
from typing import Any

from app import jobs
from app.db import session_scope
from app.models import Job
from worker.celery_app import WorkerContext

log = logging.getLogger(__name__)

WORKER_ID = f"{socket.gethostname()}:{os.getpid()}"


class Progress:
    """Shared between the work and the heartbeat thread; `lost` is set if the lease is lost."""

    def __init__(self) -> None:
        self.fraction = 0.0
        self.lost = threading.Event()

    def __call__(self, fraction: float) -> None:
        self.fraction = fraction


def run_job(
    context: WorkerContext, job_id: int, work: Callable[[Job, Progress], dict[str, Any]]
) -> str:
    """Claim job `job_id` and run `work` on it; returns the job's final status."""
    worker = f"{WORKER_ID}:{threading.get_ident()}"
    with session_scope(context.session_factory) as db:
        job = jobs.claim_job(db, job_id=job_id, worker=worker)
        if job is None:
            log.info("job %s is not claimable (done, held elsewhere or given up)", job_id)
            return "skipped"
    progress = Progress()
    stop = threading.Event()
    heartbeat = threading.Thread(
        target=_keep_lease, args=(context, job_id, worker, progress, stop), daemon=True
    )
    heartbeat.start()
    try:
        result = work(job, progress)
    except Exception as exc:
        log.exception("job %s failed", job_id)
        _finish(context, job_id, worker, error=f"{type(exc).__name__}: {exc}")
        return "failed"
    finally:
        stop.set()
        heartbeat.join()
    _finish(context, job_id, worker, result=result)
    return "succeeded"


def _keep_lease(
    context: WorkerContext, job_id: int, worker: str, progress: Progress, stop: threading.Event
) -> None:
    while not stop.wait(jobs.HEARTBEAT_INTERVAL_S):
        try:
            with session_scope(context.session_factory) as db:
                held = jobs.renew_lease(
                    db, job_id=job_id, worker=worker, progress=progress.fraction
                )
        except Exception:  # the database may be restarting; the next beat tries again
            log.warning("could not renew the lease of job %s", job_id, exc_info=True)
            continue
        if not held:
            progress.lost.set()
            return


def _finish(context: WorkerContext, job_id: int, worker: str, **outcome: Any) -> None:
    with session_scope(context.session_factory) as db:
        jobs.finish_job(db, job_id=job_id, worker=worker, **outcome)
