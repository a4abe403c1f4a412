"""Liveness and readiness probes."""

from __future__ import annotations

from fastapi.testclient import TestClient
from sqlalchemy.orm import sessionmaker

from app.db import make_engine
from app.main import create_app


def test_healthz_answers_without_dependencies(client):
    assert client.get("/healthz").json() == {"status": "ok"}


def test_readyz_is_ok_when_everything_answers(client):
    response = client.get("/readyz")
    assert response.status_code == 200
    assert response.json()["checks"] == {"database": "ok", "broker": "ok", "model_store": "ok"}


def test_readyz_names_an_unreachable_database(settings):
    engine = make_engine("postgresql+psycopg://postgres@127.0.0.1:1/nowhere")
    app = create_app(settings, engine=engine)
    app.state.session_factory = sessionmaker(engine)
    with TestClient(app) as client:
        response = client.get("/readyz")
    assert response.status_code == 503
    assert response.json()["failing"] == ["database"]


def test_readyz_names_an_unreachable_broker(settings, engine, session_factory):
    app = create_app(
        settings.model_copy(update={"redis_url": "redis://127.0.0.1:1/0"}), engine=engine
    )
    app.state.session_factory = session_factory
    with TestClient(app) as client:
        response = client.get("/readyz")
    assert response.status_code == 503
    assert response.json()["failing"] == ["broker"]
