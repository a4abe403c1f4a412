"""`/healthz` (the process answers), `/readyz` (its dependencies answer too) and `/metrics`
(Prometheus)."""

from __future__ import annotations

import logging
import os

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from app import db as database
from app.domain import model_readiness
from app.web.deps import PublicRoute

log = logging.getLogger(__name__)
router = APIRouter(dependencies=[PublicRoute], tags=["health"])

BROKER_TIMEOUT_S = 2.0


@router.get("/healthz")
async def healthz() -> dict[str, str]:
    """Liveness, for anyone: `{"status": "ok"}` whenever the process answers, whatever the
    state of the database, the broker or the model (`/readyz` checks those)."""
    # On the event loop itself (nothing here blocks), so that it answers as soon as the loop
    # does, even while every thread of the pool is busy.
    return {"status": "ok"}


@router.get("/readyz", responses={503: {"description": "A dependency or the model is not ready"}})
def readyz(request: Request) -> JSONResponse:
    """Readiness, for anyone: `status`, the `failing` checks and each check's result, for the
    database, the broker, the model store and the model. 200 when all are ready to serve; else
    503 naming what is not (for the model: why, such as "being prepared")."""
    state = request.app.state
    checks = {
        "database": lambda: database.ping(state.engine),
        "broker": lambda: ping_broker(state.celery),
        "model_store": lambda: _check_model_store(state.settings.models_dir),
    }
    results = {name: _run_check(name, check) for name, check in checks.items()}
    if results["database"] == "ok":
        results["model"] = _run_check("model", lambda: _check_model(state))
    failing = [name for name, result in results.items() if result != "ok"]
    body = {"status": "unavailable" if failing else "ok", "failing": failing, "checks": results}
    return JSONResponse(body, status_code=503 if failing else 200)


class _NotReady(Exception):
    """A check that failed for a reason worth showing as it is."""


def _run_check(name: str, check) -> str:
    try:
        check()
    except _NotReady as exc:
        return str(exc)
    except Exception as exc:  # a readiness probe reports failures, it does not raise them
        log.warning("readiness check %s failed: %s", name, exc)
        return f"failed: {type(exc).__name__}"
    return "ok"


def _check_model(state) -> None:
    with state.session_factory() as db:
        model = model_readiness.model_state(db, state.settings)
    if not model.ready:
        raise _NotReady(model.detail)


def ping_broker(celery) -> None:
    with celery.connection_for_write() as connection:
        connection.ensure_connection(max_retries=1, timeout=BROKER_TIMEOUT_S)


def _check_model_store(models_dir) -> None:
    models_dir.mkdir(parents=True, exist_ok=True)
    if not os.access(models_dir, os.W_OK):
        raise PermissionError(f"{models_dir} is not writable")


@router.get("/metrics", include_in_schema=False)
def metrics(request: Request) -> Response:
    """Prometheus's text format: request latencies of this process, collection figures from
    the database."""
    return Response(
        generate_latest(request.app.state.metrics.registry), media_type=CONTENT_TYPE_LATEST
    )
