"""Celery tasks: thin wrappers that take ids, open a session, call the real code, report status.

Tasks are registered on a given Celery app (never `current_app`) with the context they need.
"""

from __future__ import annotations

import logging
from datetime import timedelta

from celery import Celery

from app import crud
from app.db import session_scope
from worker.celery_app import WorkerContext

log = logging.getLogger(__name__)

PING = "alignloop.ping"
PURGE_EXPIRED_CREDENTIALS = "alignloop.purge_expired_credentials"
PULL_BASE_MODEL = "alignloop.pull_base_model"


def register_tasks(celery: Celery, context: WorkerContext) -> None:
    @celery.task(shared=False, name=PING)
    def ping() -> str:
        """Answers `pong`: proves a broker, a worker and the result backend work together."""
        return "pong"

    @celery.task(shared=False, name=PURGE_EXPIRED_CREDENTIALS)
    def purge_expired_credentials() -> int:
        window = timedelta(seconds=context.settings.login_lockout_seconds)
        with session_scope(context.session_factory) as db:
            removed = crud.purge_expired_credentials(db, throttle_window=window)
        log.info("purged %d expired sessions, tokens and login throttles", removed)
        return removed

    @celery.task(shared=False, name=PULL_BASE_MODEL)
    def pull_base_model() -> str:
        """Make sure the configured base model is in the store as version `base`."""
        from worker.model_store import ModelStore  # torch and transformers load only here

        store = ModelStore(context.settings)
        return store.ensure_base_version(context.session_factory).name
