"""The Celery application: queues, serialisation, delivery guarantees and the beat schedule.

With `ALIGNLOOP_REDIS_URL` set, Redis is broker and result backend (production). Without it,
kombu's in-memory transport carries the same messages to a worker thread inside
`alignloop run` (see `worker.embedded`), so the embedded default needs no server.
"""

from __future__ import annotations

from celery import Celery
from kombu import Queue
from sqlalchemy import Engine

from app.config import Settings
from app.db import engine_for, make_session_factory
from app.tasks_contract import (
    DEFAULT_QUEUE,
    DEFAULT_TIME_LIMIT_S,
    PURGE_EXPIRED_CREDENTIALS,
    QUEUES,
    RECLAIM,
    REFRESH_QUALITY,
    ROUTES,
    SCHEDULE_GENERATION,
    SCHEDULE_ROUND,
    TRAIN_TIME_LIMIT_S,
)
from worker.context import WorkerContext
from worker.tasks import register_tasks

# Redis re-delivers unacknowledged messages after this long. Training tasks acknowledge late,
# so it must exceed the longest task, or a healthy long round would be handed out twice.
REDIS_VISIBILITY_TIMEOUT_S = TRAIN_TIME_LIMIT_S + 60 * 60
# A Redis that has not accepted a connection within this long is down: senders give up
# after two such tries (`app.broker`), well before a client's request times out.
BROKER_CONNECT_TIMEOUT_S = 2.0
PURGE_INTERVAL_S = 60 * 60
RECLAIM_INTERVAL_S = 60
JUDGEMENT_CHECK_INTERVAL_S = 300
QUALITY_REFRESH_INTERVAL_S = 600
# The in-memory transport polls its queues; kombu's default of 1 s adds that much latency.
EMBEDDED_POLLING_INTERVAL_S = 0.1


def beat_schedule(settings: Settings) -> dict[str, dict]:
    schedule = {
        "purge-expired-credentials": {
            "task": PURGE_EXPIRED_CREDENTIALS,
            "schedule": PURGE_INTERVAL_S,
        },
        "reclaim": {"task": RECLAIM, "schedule": RECLAIM_INTERVAL_S},
        "refresh-quality": {
            "task": REFRESH_QUALITY,
            "schedule": QUALITY_REFRESH_INTERVAL_S,
        },
    }
    if settings.generation_interval_hours > 0:
        schedule["generate-candidates"] = {
            "task": SCHEDULE_GENERATION,
            "schedule": settings.generation_interval_hours * 3600,
        }
    if settings.round_interval_hours > 0:
        schedule["start-round-on-interval"] = {
            "task": SCHEDULE_ROUND,
            "schedule": settings.round_interval_hours * 3600,
            "kwargs": {"reason": "interval"},
        }
    if settings.round_after_judgements > 0:
        schedule["start-round-on-judgements"] = {
            "task": SCHEDULE_ROUND,
            "schedule": JUDGEMENT_CHECK_INTERVAL_S,
            "kwargs": {"reason": "judgements"},
        }
    return schedule


def create_celery(settings: Settings, *, engine: Engine | None = None) -> Celery:
    if settings.embedded:
        celery = Celery("alignloop", broker="memory://localhost/", backend="cache+memory://")
        transport_options = {"polling_interval": EMBEDDED_POLLING_INTERVAL_S}
    else:
        celery = Celery("alignloop", broker=settings.redis_url, backend=settings.redis_url)
        transport_options = {"visibility_timeout": REDIS_VISIBILITY_TIMEOUT_S}
        # Celery's Redis caveats: the visibility timeout must be set for the result backend
        # as well as for the broker, or the shortest value (the 1 h default) may apply, and
        # a healthy round that trains for longer would be handed out a second time.
        celery.conf.result_backend_transport_options = {
            "visibility_timeout": REDIS_VISIBILITY_TIMEOUT_S
        }
    celery.conf.update(
        # JSON only: no pickle, so a message can never execute code on a worker.
        task_serializer="json",
        result_serializer="json",
        accept_content=["json"],
        result_accept_content=["json"],
        task_queues=[Queue(name) for name in QUEUES],
        task_default_queue=DEFAULT_QUEUE,
        # A task is acknowledged when it finishes, and re-queued if its worker dies; tasks
        # are idempotent because the database, not the message, says what still needs doing.
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        task_time_limit=DEFAULT_TIME_LIMIT_S,
        task_soft_time_limit=DEFAULT_TIME_LIMIT_S - 60,
        task_track_started=True,
        result_expires=24 * 60 * 60,
        broker_connection_retry_on_startup=True,
        broker_connection_timeout=BROKER_CONNECT_TIMEOUT_S,
        # Keep running the tasks that were running when the broker connection dropped (Celery
        # 6 will cancel them by default). Their messages, unacknowledged, come back later; the
        # copy then finds its job or stage held or finished in the database and does nothing,
        # whereas a cancel would throw away a stage that may have trained for hours over a
        # Redis restart. (Celery's thread pool, which `alignloop worker` uses, cannot cancel a
        # running task anyway.)
        worker_cancel_long_running_tasks_on_connection_loss=False,
        broker_transport_options=transport_options,
        worker_hijack_root_logger=False,
        timezone="UTC",
        # The in-memory scheduler: the default one persists its state with shelve (pickle).
        beat_scheduler="celery.beat:Scheduler",
        task_routes={name: {"queue": queue} for name, queue in ROUTES.items()},
        beat_schedule=beat_schedule(settings),
    )
    engine = engine or engine_for(settings)
    context = WorkerContext(settings, engine, make_session_factory(engine))
    register_tasks(celery, context)
    return celery
