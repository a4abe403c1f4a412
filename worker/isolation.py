"""Heavy work (generating, training, preparing a model) in a supervised child process.

A Celery task that loads a model calls `run_isolated`: it starts a child process for the work
and watches it until it ends. The child is killed when it uses more memory than
`ALIGNLOOP_WORKER_MEMORY_GB`, makes no progress for `ALIGNLOOP_WORKER_STALL_MINUTES`, or
outlives its task's time limit; when an admin cancels its round, it is asked to stop (SIGTERM:
the stage stops at its next step) and killed if it has not within `STOP_GRACE_S`. However the
child ends, its job or round is ended with the cause in words. So an out-of-memory kill or a
crash costs one child, never the web process, `/v1` or the scheduler, in the embedded default
as in `alignloop worker`.

Children come from a fork server that has imported torch, transformers and the trainers once
(`PRELOADED`), so a child starts in a fraction of a second rather than the seconds those imports
take, and shares their memory. The child never talks to the broker (the embedded default's is
in the parent's memory): jobs it creates are sent by the supervisor once it has exited.
"""

from __future__ import annotations

import importlib
import logging
import multiprocessing
import os
import signal
import socket
import threading
import time
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from functools import partial
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from typing import Any, Protocol

import psutil
from celery import Celery
from pydantic import SecretStr
from sqlalchemy import select
from sqlalchemy.orm import Session

from app.config import Settings
from app.db import engine_for, make_session_factory, session_scope
from app.domain import jobs, model_readiness, rounds
from app.models import Job, Round, RoundStage
from worker.context import STOP_REQUESTED, WorkerContext
from worker.process_tree import family, signal_family

log = logging.getLogger(__name__)

POLL_S = 0.5
CHECK_S = 1.0
"""How often the supervisor reads the database for a cancel and for progress."""
STOP_GRACE_S = 5.0
"""How long a child asked to stop may take before it is killed (a cancel ends within 10 s)."""


# --- what the child works on ---------------------------------------------------------------------


class Watched(Protocol):
    """The job or round stage a child works on, as its supervisor sees it."""

    def stop_requested(self, db: Session) -> bool: ...

    def progress(self, db: Session) -> Hashable:
        """Anything that changes while the work moves on; None if it does not report."""

    def end(self, db: Session, cause: str, *, worker: str, cancelled: bool) -> None:
        """Record that the child (lease owner prefix `worker`) ended without finishing."""


@dataclass(frozen=True)
class WatchedBasePreparation:
    """Converting the base model into the store: its state lives in the store, not a row."""

    settings: Settings

    def stop_requested(self, db: Session) -> bool:
        return False

    def progress(self, db: Session) -> Hashable:
        return None  # one long call with nothing to report; the time limit guards it

    def end(self, db: Session, cause: str, *, worker: str, cancelled: bool) -> None:
        model_readiness.preparation_failed(
            self.settings.models_dir, self.settings.base_model, f"the {cause}"
        )


@dataclass(frozen=True)
class WatchedJob:
    job_id: int

    def stop_requested(self, db: Session) -> bool:
        return False

    def progress(self, db: Session) -> Hashable:
        return db.execute(
            select(Job.progress, Job.progress_detail).where(Job.id == self.job_id)
        ).first()

    def end(self, db: Session, cause: str, *, worker: str, cancelled: bool) -> None:
        jobs.fail_abandoned_job(db, job_id=self.job_id, worker=worker, error=f"The job {cause}.")


@dataclass(frozen=True)
class WatchedStage:
    round_id: int
    stage: RoundStage

    def stop_requested(self, db: Session) -> bool:
        return bool(db.scalar(select(Round.cancel_requested).where(Round.id == self.round_id)))

    def progress(self, db: Session) -> Hashable:
        return db.execute(
            select(Round.stage, Round.progress, Round.progress_detail).where(
                Round.id == self.round_id
            )
        ).first()

    def end(self, db: Session, cause: str, *, worker: str, cancelled: bool) -> None:
        error = f"{self.stage.value}: the stage's {cause}"
        rounds.end_abandoned_stage(
            db,
            round_id=self.round_id,
            stage=self.stage,
            worker=worker,
            error=rounds.CANCELLED_BY_ADMIN if cancelled else error,
            cancelled=cancelled,
        )


# --- the supervisor ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Limits:
    memory_bytes: int
    seconds: float
    stall_seconds: float

    @classmethod
    def of(cls, settings: Settings, *, time_limit_s: float) -> Limits:
        return cls(
            memory_bytes=int(settings.worker_memory_bytes),
            seconds=time_limit_s,
            stall_seconds=settings.worker_stall_minutes * 60,
        )


@dataclass
class Ending:
    """Why the supervisor ended the child (None: it ended on its own)."""

    cause: str | None = None
    cancelled: bool = False


def run_isolated(
    context: WorkerContext,
    celery: Celery,
    work: str,
    args: list[Any],
    watched: Watched,
    *,
    time_limit_s: float,
) -> str:
    """Run `WORK[work](context, *args)` in a child process and watch it; returns its outcome
    ("done", "failed", "cancelled", ...)."""
    limits = Limits.of(context.settings, time_limit_s=time_limit_s)
    results, sender = FORK_SERVER.Pipe(duplex=False)
    child = FORK_SERVER.Process(
        target=_child_main, args=(_request(context, work, args), sender), name=f"alignloop-{work}"
    )
    child.start()
    sender.close()
    worker = f"{socket.gethostname()}:{child.pid}"
    log.info("%s %s runs in process %d", work, args, child.pid)
    try:
        ending = _watch(child, context, watched, limits)
    finally:
        if child.exitcode is None:  # the supervisor itself is being stopped
            signal_family(family(psutil.Process(child.pid)), signal.SIGKILL)
            child.join()
    outcome = _received(results)
    if child.exitcode == 0 and ending.cause is None:
        _send_new_jobs(context, celery)
        return outcome or "done"
    cause = ending.cause or _death_cause(child.exitcode)
    log.warning("%s %s: process %d %s", work, args, child.pid, cause)
    with session_scope(context.session_factory) as db:
        watched.end(db, cause, worker=worker, cancelled=ending.cancelled)
    return "cancelled" if ending.cancelled else "failed"


def _received(results: Connection) -> str | None:
    """The outcome the child sent, if it lived to send it."""
    try:
        return results.recv() if results.poll() else None
    except EOFError:
        return None
    finally:
        results.close()


def _watch(child: BaseProcess, context: WorkerContext, watched: Watched, limits: Limits) -> Ending:
    """Poll the child until it exits; kill it, and say why, when it must not go on."""
    started = time.monotonic()
    progress = _ProgressWatch(context, watched, started)
    stop_sent: float | None = None
    process = psutil.Process(child.pid)
    while child.exitcode is None:
        now = time.monotonic()
        used = _tree_rss(process)
        if used > limits.memory_bytes:
            return _kill(
                child,
                f"process ran out of memory: it used {_gib(used)} GiB, over the limit of "
                f"{_gib(limits.memory_bytes)} GiB (ALIGNLOOP_WORKER_MEMORY_GB)",
            )
        if now - started > limits.seconds:
            return _kill(child, f"process ran past its time limit of {limits.seconds / 3600:g} h")
        if stop_sent is not None and now - stop_sent > STOP_GRACE_S:
            return _kill(child, "process did not stop when asked", cancelled=True)
        if progress.due(now):
            stop, stalled_for = progress.read(now)
            if stop and stop_sent is None:
                child.terminate()
                stop_sent = now
            if stalled_for > limits.stall_seconds:
                return _kill(
                    child,
                    f"process stalled: no progress for {limits.stall_seconds / 60:g} minutes "
                    "(ALIGNLOOP_WORKER_STALL_MINUTES)",
                )
        child.join(POLL_S)
    return Ending(cancelled=stop_sent is not None)


class _ProgressWatch:
    """Reads, every `CHECK_S`, whether the work should stop and how long it has not moved."""

    def __init__(self, context: WorkerContext, watched: Watched, now: float) -> None:
        self.context, self.watched = context, watched
        self.last_check = self.last_move = now
        self.last_progress: Hashable = None

    def due(self, now: float) -> bool:
        return now - self.last_check >= CHECK_S

    def read(self, now: float) -> tuple[bool, float]:
        """(stop asked for, seconds without progress)."""
        self.last_check = now
        with session_scope(self.context.session_factory) as db:
            stop, progress = self.watched.stop_requested(db), self.watched.progress(db)
        if progress is None or progress != self.last_progress:
            self.last_progress, self.last_move = progress, now
        return stop, now - self.last_move


def _kill(child: BaseProcess, cause: str, *, cancelled: bool = False) -> Ending:
    """Kill the child and every process under it (the ranks of a stage that trains in several
    processes run in sessions of their own, so only their parentage finds them)."""
    signal_family(family(psutil.Process(child.pid)), signal.SIGKILL)
    child.join()
    return Ending(cause=None if cancelled else cause, cancelled=cancelled)


def _tree_rss(process: psutil.Process) -> int:
    """Resident memory of the child and its own children, in bytes (0 once it has exited)."""
    total = 0
    for member in family(process):
        try:
            total += member.memory_info().rss
        except psutil.NoSuchProcess:
            continue
    return total


def _gib(size: float) -> str:
    return f"{size / 2**30:.1f}"


def _death_cause(returncode: int) -> str:
    if returncode == -signal.SIGKILL:
        return "process was killed (SIGKILL), most likely by the system for lack of memory"
    if returncode < 0:
        return f"process was killed by {signal.Signals(-returncode).name}"
    return f"process crashed (exit code {returncode}); the worker's log has the details"


def _send_new_jobs(context: WorkerContext, celery: Celery) -> None:
    """Send the jobs the child created (the A/B tasks of a round): it has no broker."""
    with session_scope(context.session_factory) as db:
        for job in jobs.unsent_jobs(db):
            jobs.dispatch(db, celery, job)


def _request(context: WorkerContext, work: str, args: list[Any]) -> dict[str, Any]:
    """What the child needs: the settings (secrets included) and its database."""
    settings = {
        name: value.get_secret_value() if isinstance(value, SecretStr) else value
        for name, value in context.settings.model_dump().items()
    }
    settings["database_url"] = context.engine.url.render_as_string(hide_password=False)
    return {"settings": settings, "work": work, "args": args}


# --- the child -----------------------------------------------------------------------------------


def _round_stage(context: WorkerContext, round_id: int, stage: str) -> str:
    from worker.stages import run_stage

    return run_stage(context, round_id, stage)


def _job(module: str, function: str) -> Callable[[WorkerContext, int], str]:
    """Runs job N with `module.function(context, job, progress)` (imported in the child only:
    torch and transformers load there)."""

    def run(context: WorkerContext, job_id: int) -> str:
        from worker.job_runner import run_job

        work = getattr(importlib.import_module(module), function)
        return run_job(context, job_id, partial(work, context))

    return run


def _pull_base_model(context: WorkerContext) -> str:
    from worker.model_store import ModelStore

    return ModelStore(context.settings).ensure_base_version(context.session_factory).name


WORK: dict[str, Callable[..., str]] = {
    "round_stage": _round_stage,
    "pull_base_model": _pull_base_model,
    jobs.GENERATE_CANDIDATES: _job("worker.candidates", "generate_candidates"),
    jobs.TRAIN_REWARD_MODEL: _job("worker.training_jobs", "train_reward_model_job"),
    jobs.TRAIN_SFT: _job("worker.training_jobs", "train_sft_job"),
}


def _exit_with_parent(parent: int) -> None:
    """A child whose fork server is gone (the app stopped or was killed) must not train on."""
    while os.getppid() == parent:
        time.sleep(1.0)
    os._exit(3)


def _child_main(request: dict[str, Any], results: Connection) -> None:
    """The child: run the work and send back its outcome. SIGTERM asks it to stop at its next
    step (`STOP_REQUESTED`); Ctrl+C in the app's terminal is for the app, which stops it."""
    threading.Thread(target=_exit_with_parent, args=(os.getppid(),), daemon=True).start()
    signal.signal(signal.SIGTERM, lambda *_: STOP_REQUESTED.set())
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    settings = Settings.model_validate(request["settings"])
    logging.basicConfig(
        level=settings.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        force=True,
    )
    engine = engine_for(settings)
    context = WorkerContext(settings, engine, make_session_factory(engine))
    try:
        results.send(WORK[request["work"]](context, *request["args"]))
    finally:
        engine.dispose()
        results.close()


PRELOADED = [
    "torch",
    "transformers",
    "worker.candidates",
    "worker.training_jobs",
    "worker.stages",
    "worker.training.dpo",
    "worker.training.ppo",
    "worker.training.rloo",
    "worker.training.sft",
]
"""What the fork server imports once for every child."""
FORK_SERVER = multiprocessing.get_context("forkserver")
FORK_SERVER.set_forkserver_preload(PRELOADED)
