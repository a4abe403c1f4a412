"""Liveness and readiness probes."""

from __future__ import annotations

from fastapi.testclient import TestClient
from sqlalchemy.orm import sessionmaker

from app.db import make_engine
from app.domain import model_readiness, model_registry
from app.models import ModelKind
from app.web.main import create_app


def test_healthz_answers_without_dependencies(client):
    assert client.get("/healthz").json() == {"status": "ok"}


def test_readyz_is_ok_when_everything_answers(client, db):
    model_registry.register_model_version(
        db, name="base", kind=ModelKind.POLICY, path="base", config={}
    )
    db.commit()
    response = client.get("/readyz")
    assert response.status_code == 200
    assert response.json()["checks"] == {
        "database": "ok",
        "broker": "ok",
        "model_store": "ok",
        "model": "ok",
    }


def test_readyz_is_503_naming_the_model_until_one_is_ready(client, settings):
    response = client.get("/readyz")
    assert response.status_code == 503 and response.json()["failing"] == ["model"]
    assert "has not been prepared" in response.json()["checks"]["model"]
    model_readiness.preparing(settings.models_dir, "bundled")
    assert "(bundled) is being prepared" in client.get("/readyz").json()["checks"]["model"]
    model_readiness.preparation_failed(settings.models_dir, "bundled", "disk full")
    assert "failed: disk full" in client.get("/readyz").json()["checks"]["model"]


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
    assert response.json()["failing"] == ["broker", "model"]
