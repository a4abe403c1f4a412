"""The web application's wiring: settings, database, Celery, inference, errors and routers."""

from __future__ import annotations

import gc
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import partial

from celery import Celery
from fastapi import FastAPI
from fastapi.staticfiles import StaticFiles
from sqlalchemy import Engine

from app.bundled import bundled_dir
from app.config import Settings
from app.db import engine_for, make_session_factory
from app.inference import Inference
from app.web.api import (
    export,
    feedback,
    generations,
    health,
    invitations,
    jobs,
    keys,
    models,
    prompts,
    rounds,
    stats,
    tasks,
    training_jobs,
    users,
)
from app.web.api_description import describe
from app.web.errors import install_error_handlers
from app.web.metrics import AppMetrics, RequestMetricsMiddleware
from app.web.middleware import DeclaredSizeLimit, RejectNulMiddleware, SecurityHeadersMiddleware
from app.web.pages import account, admin, auth, links, playground, rate, site
from app.web.query_credentials import RefuseQueryCredentials
from app.web.ratelimit import KeyLimiter
from app.web.v1 import routes as openai
from worker.celery_app import create_celery

ROUTERS = (  # the busiest first: a request is matched against each route in turn
    health,
    tasks,
    openai,
    auth,
    links,
    rate,
    account,
    admin,
    playground,
    keys,
    users,
    invitations,
    generations,
    training_jobs,
    jobs,
    prompts,
    models,
    feedback,
    export,
    rounds,
    stats,
    site,
)


class _AlignloopAPI(FastAPI):
    """FastAPI with `DeclaredSizeLimit` outside its own body limit, so that an oversize upload
    gets a message in words (a page with a way back) rather than a bare "Content Too Large"."""

    def build_middleware_stack(self):
        limit = self.state.settings.max_body_bytes
        return DeclaredSizeLimit(super().build_middleware_stack(), max_body_bytes=limit)


def create_app(
    settings: Settings | None = None,
    *,
    engine: Engine | None = None,
    celery: Celery | None = None,
    inference: Inference | None = None,
) -> FastAPI:
    """Build the app: `alignloop web` passes nothing, `alignloop run` and tests pass their parts."""
    settings = settings or Settings()
    settings.require_secret_key()
    engine = engine or engine_for(settings)
    celery = celery or create_celery(settings, engine=engine)
    inference = inference or _inference(settings, celery)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        # What is alive at start-up (modules, the app) lives as long as the app: keep it out
        # of the garbage collector's full passes, which otherwise walk it all and stall a
        # request for hundreds of milliseconds every few pages (bench/admin_pages.py).
        gc.freeze()
        yield
        await inference.close()
        gc.unfreeze()  # an app that ends before its process (tests) can be collected

    app = _AlignloopAPI(
        title="alignloop",
        lifespan=lifespan,
        max_body_size=settings.max_body_bytes,
        openapi_url="/api/openapi.json",
        docs_url=None,  # served by app.web.pages.site from vendored files, not a CDN
        redoc_url=None,
    )
    app.state.settings = settings
    app.state.engine = engine
    app.state.session_factory = make_session_factory(engine)
    app.state.celery = celery
    app.state.inference = inference
    app.state.limiter = KeyLimiter(
        max_concurrent=settings.v1_max_concurrent_per_key,
        per_minute=settings.v1_requests_per_minute,
        redis_url=settings.redis_url,
        slot_lease_s=settings.v1_slot_lease_seconds,
    )
    app.add_middleware(RejectNulMiddleware, max_body_bytes=settings.max_body_bytes)
    app.add_middleware(RefuseQueryCredentials)
    app.add_middleware(SecurityHeadersMiddleware)
    # the session factory is read at each scrape (tests swap it for a rolled-back one)
    app.state.metrics = AppMetrics(lambda: app.state.session_factory())
    app.add_middleware(RequestMetricsMiddleware, metrics=app.state.metrics)
    install_error_handlers(app)
    app.mount("/static", StaticFiles(directory=bundled_dir("static")), name="static")
    for module in ROUTERS:
        app.include_router(module.router)
    app.openapi = partial(describe, app)
    return app


def _inference(settings: Settings, celery: Celery) -> Inference:
    """Where `/v1` generations run (`ALIGNLOOP_INFERENCE`): in this process, on workers, or on
    an external OpenAI-compatible server."""
    if settings.inference == "celery":
        from worker.serving.remote import CeleryInference

        return CeleryInference(settings, celery)
    if settings.inference == "openai":
        from worker.serving.external import ExternalInference

        return ExternalInference(settings)
    from worker.serving.local import LocalInference, ModelServer  # loads torch

    return LocalInference(ModelServer(settings))
