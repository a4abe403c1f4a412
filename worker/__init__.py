"""alignloop worker tier: Celery app and tasks, model store, training and generation."""
