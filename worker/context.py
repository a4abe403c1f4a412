"""What a worker's tasks share: the settings, the database, and the flag that asks the work in
this process to stop."""

from __future__ import annotations

import threading
from dataclasses import dataclass

from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from app.config import Settings


@dataclass(frozen=True)
class WorkerContext:
    """What tasks need from the outside world; tasks get it from their Celery app."""

    settings: Settings
    engine: Engine
    session_factory: sessionmaker[Session]


STOP_REQUESTED = threading.Event()
"""Set in a job's child process by SIGTERM: the work stops at its next step
(`worker.stages.Stage`)."""
