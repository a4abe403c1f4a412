"""Running one background job: claim it, keep its lease alive, record the outcome.

The lease (of a job, or of a training round's stage) is renewed from a separate thread, so a
long batch on a slow machine never looks like a dead worker. The work function reports
progress through the `Progress` it is given.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from app.db import session_scope
from app.domain import jobs, leases
from app.models import Job
from worker.context import WorkerContext

log = logging.getLogger(__name__)


def lease_owner() -> str:
    """Who holds a lease: host, process and thread. Read when the lease is taken, not at
    import: the fork server that starts job processes imports this module once for all."""
    return f"{socket.gethostname()}:{os.getpid()}:{threading.get_ident()}"


class Progress:
    """Shared between the work and the heartbeat thread; `lost` is set if the lease is lost.

    The work calls it with the fraction done and, when it can, what that means in words
    ("step 3 of 8"); the heartbeat writes both to the database for pages to show."""

    def __init__(self) -> None:
        self.fraction = 0.0
        self.detail: str | None = None
        self.lost = threading.Event()

    def __call__(self, fraction: float, detail: str | None = None) -> None:
        self.fraction = fraction
        if detail is not None:
            self.detail = detail


def run_job(
    context: WorkerContext, job_id: int, work: Callable[[Job, Progress], dict[str, Any]]
) -> str:
    """Claim job `job_id` and run `work` on it; returns the job's final status."""
    worker = lease_owner()
    with session_scope(context.session_factory) as db:
        job = jobs.claim_job(db, job_id=job_id, worker=worker)
        if job is None:
            log.info("job %s is not claimable (done, held elsewhere or given up)", job_id)
            return "skipped"
    progress = Progress()
    try:
        with keep_lease(context, jobs.renew_lease, progress, job_id=job_id, worker=worker):
            result = work(job, progress)
    except Exception as exc:
        log.exception("job %s failed", job_id)
        _finish(context, job_id, worker, error=f"{type(exc).__name__}: {exc}")
        return "failed"
    _finish(context, job_id, worker, result=result, detail=progress.detail)
    return "succeeded"


@contextmanager
def keep_lease(
    context: WorkerContext,
    renew_lease: Callable[..., bool],
    progress: Progress,
    *,
    interval: float = leases.HEARTBEAT_INTERVAL_S,
    **row: Any,
) -> Iterator[None]:
    """Renew the lease on `row` (`renew_lease(db, **row, progress=, detail=)`, a job's or a
    round's) with the work's progress every `interval` seconds from a thread while the block
    runs; when it answers False (the lease was lost or taken back), set `progress.lost`."""
    stop = threading.Event()

    def renew() -> bool:
        with session_scope(context.session_factory) as db:
            return renew_lease(db, **row, progress=progress.fraction, detail=progress.detail)

    def beat() -> None:
        while not stop.wait(interval):
            try:
                held = renew()
            except Exception:  # the database may be restarting; the next beat tries again
                log.warning("could not renew a lease", exc_info=True)
                continue
            if not held:
                progress.lost.set()
                return

    heartbeat = threading.Thread(target=beat, name="lease-heartbeat", daemon=True)
    heartbeat.start()
    try:
        yield
    finally:
        stop.set()
        heartbeat.join()


def _finish(context: WorkerContext, job_id: int, worker: str, **outcome: Any) -> None:
    with session_scope(context.session_factory) as db:
        jobs.finish_job(db, job_id=job_id, worker=worker, **outcome)
