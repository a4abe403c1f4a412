"""The web application's wiring: settings, database, Celery, middleware, errors and routers."""

from __future__ import annotations

from celery import Celery
from fastapi import FastAPI
from fastapi.staticfiles import StaticFiles
from sqlalchemy import Engine

from app.config import Settings
from app.db import engine_for, make_session_factory
from app.errors import install_error_handlers
from app.middleware import SecurityHeadersMiddleware
from app.routes import account, admin, auth, generations, health, keys, rate, tasks, users
from app.templating import STATIC_DIR
from worker.celery_app import create_celery


def create_app(
    settings: Settings | None = None,
    *,
    engine: Engine | None = None,
    celery: Celery | None = None,
) -> FastAPI:
    """Build the app: `alignloop web` passes nothing, `alignloop run` and tests pass their parts."""
    settings = settings or Settings()
    settings.require_secret_key()
    engine = engine or engine_for(settings)
    app = FastAPI(
        title="alignloop",
        max_body_size=settings.max_body_bytes,
        openapi_url="/api/openapi.json",
        docs_url=None,  # Swagger UI loads scripts from a CDN, which the page policy forbids
        redoc_url=None,
    )
    app.state.settings = settings
    app.state.engine = engine
    app.state.session_factory = make_session_factory(engine)
    app.state.celery = celery or create_celery(settings, engine=engine)

    app.add_middleware(SecurityHeadersMiddleware)
    install_error_handlers(app)
    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")
    for module in (health, auth, rate, account, admin, keys, users, tasks, generations):
        app.include_router(module.router)
    return app
