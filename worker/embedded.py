"""The embedded default's workers and scheduler: real Celery, running as threads in this process.

This follows `celery.contrib.testing.worker`: `WorkController`s on threads consuming from
kombu's in-memory transport, plus Celery beat's threaded service. As with production's
`alignloop worker -Q train -c 1`, one controller takes the `train` queue one task at a time, so
at most one model-sized job process exists: a round's A/B answers wait while the next
round's candidates are generated, instead of doubling the peak memory. A second controller
serves the light `default` queue beside it. The threads only supervise: generation and
training run in child processes (`worker.isolation`), which enforce the memory and time limits,
so a job that dies never takes the web process with it.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass

from celery import Celery
from celery.beat import EmbeddedService
from celery.result import _set_task_join_will_block
from celery.worker import WorkController

from app.tasks_contract import DEFAULT_QUEUE, TRAIN_QUEUE

log = logging.getLogger(__name__)

START_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 30.0


@dataclass(frozen=True)
class Consumer:
    """One queue and how many of its tasks may run at once."""

    queue: str
    concurrency: int


# One job process at a time, as the memory figures in bench/RESULTS.md assume; housekeeping
# (reclaim, purges, scheduling) must not wait behind an hour-long round stage.
EMBEDDED_CONSUMERS = (Consumer(TRAIN_QUEUE, 1), Consumer(DEFAULT_QUEUE, 2))


class _SignallingWorkController(WorkController):
    """A worker that tells its starter when it is consuming."""

    def __init__(self, *args, **kwargs) -> None:
        self.consuming = threading.Event()
        super().__init__(*args, **kwargs)

    def on_consumer_ready(self, consumer) -> None:
        self.consuming.set()


class EmbeddedWorker:
    """Start with `with EmbeddedWorker(celery):`; tasks sent on `celery` run on its threads."""

    def __init__(
        self,
        celery: Celery,
        *,
        consumers: tuple[Consumer, ...] = EMBEDDED_CONSUMERS,
        with_beat: bool = True,
    ) -> None:
        self.celery = celery
        self.consumers = consumers
        self.with_beat = with_beat
        self._running: list[tuple[_SignallingWorkController, threading.Thread]] = []
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
        for consumer in self.consumers:
            self._running.append(self._start_controller(consumer))
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

    def _start_controller(
        self, consumer: Consumer
    ) -> tuple[_SignallingWorkController, threading.Thread]:
        controller = _SignallingWorkController(
            app=self.celery,
            hostname=f"embedded-{consumer.queue}@alignloop",
            pool="threads",
            concurrency=consumer.concurrency,
            queues=[consumer.queue],
            without_heartbeat=True,
            without_mingle=True,
            without_gossip=True,
            ready_callback=None,
        )
        thread = threading.Thread(
            target=controller.start, name=f"alignloop-worker-{consumer.queue}", daemon=True
        )
        thread.start()
        if not controller.consuming.wait(START_TIMEOUT_S):
            raise RuntimeError(f"the embedded Celery worker for {consumer.queue!r} did not start")
        log.info("embedded worker consuming %s, %d at a time", consumer.queue, consumer.concurrency)
        return controller, thread

    def stop(self) -> None:
        if self._beat is not None:
            self._beat.stop()
            self._beat = None
        for controller, _ in self._running:
            controller.stop(in_sighandler=False, exitcode=0)
        for controller, thread in self._running:
            thread.join(STOP_TIMEOUT_S)
            if thread.is_alive():
                log.warning(
                    "embedded worker %s did not stop within %.0f s",
                    controller.hostname,
                    STOP_TIMEOUT_S,
                )
        self._running = []
