"""alignloop's worker: the Celery process that generates, trains and serves; see ARCHITECTURE.md."""
