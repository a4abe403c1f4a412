"""The embedded default's worker and scheduler: real Celery, running as threads in this process.

This follows `celery.contrib.testing.worker`: a `WorkController` on a thread consuming from
kombu's in-memory transport, plus Celery beat's threaded service. The threads only supervise:
generation and training run in child processes (`worker.isolation`), which enforce the memory
and time limits, so a job that dies never takes the web process with it.
"""

from __future__ import annotations

import logging
import threading

from celery import Celery
from celery.beat import EmbeddedService
from celery.result import _set_task_join_will_block
from celery.worker import WorkController

from worker.celery_app import EMBEDDED_QUEUES

log = logging.getLogger(__name__)

START_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 30.0


class _SignallingWorkController(WorkController):
    """A worker that tells its starter when it is consuming."""

    def __init__(self, *args, **kwargs) -> None:
        self.consuming = threading.Event()
        super().__init__(*args, **kwargs)

    def on_consumer_ready(self, consumer) -> None:
        self.consuming.set()


class EmbeddedWorker:
    """Start with `with EmbeddedWorker(celery):`; tasks sent on `celery` run on its threads."""

    def __init__(self, celery: Celery, *, concurrency: int = 2, with_beat: bool = True) -> None:
        self.celery = celery
        self.concurrency = concurrency
        self.with_beat = with_beat
        self._controller: _SignallingWorkController | None = None
        self._thread: threading.Thread | None = None
        self._beat = None

    def __enter__(self) -> EmbeddedWorker:
        self.start()
        return self

    def __exit__(self, *exc_info) -> None:
        self.stop()

    def start(self) -> None:
        # Celery's worker internals resolve "the current app" on their own threads; make it ours.
        self.celery.finalize()
        self.celery.set_default()
        self.celery.set_current()
        self._controller = _SignallingWorkController(
            app=self.celery,
            hostname="embedded@alignloop",
            pool="threads",
            concurrency=self.concurrency,
            queues=list(EMBEDDED_QUEUES),
            without_heartbeat=True,
            without_mingle=True,
            without_gossip=True,
            ready_callback=None,
        )
        self._thread = threading.Thread(
            target=self._controller.start, name="alignloop-worker", daemon=True
        )
        self._thread.start()
        if not self._controller.consuming.wait(START_TIMEOUT_S):
            raise RuntimeError("the embedded Celery worker did not start")
        # A starting worker marks the whole process as "inside a task", where waiting for a
        # result is forbidden; the web threads here are not tasks (celery.contrib.testing does
        # the same).
        _set_task_join_will_block(False)
        if self.with_beat:
            # Beat's service ignores `beat_scheduler` unless told; its own default pickles.
            self._beat = EmbeddedService(
                self.celery, thread=True, scheduler_cls=self.celery.conf.beat_scheduler
            )
            self._beat.start()
        log.info("embedded worker consuming %s", ", ".join(EMBEDDED_QUEUES))

    def is_alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def stop(self) -> None:
        if self._beat is not None:
            self._beat.stop()
            self._beat = None
        if self._controller is not None:
            self._controller.stop(in_sighandler=False, exitcode=0)
        if self._thread is not None:
            self._thread.join(STOP_TIMEOUT_S)
            if self._thread.is_alive():
                log.warning("embedded worker did not stop within %.0f s", STOP_TIMEOUT_S)
        self._controller = self._thread = None
