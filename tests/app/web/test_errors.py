"""Bad input and broken dependencies get clear 4xx/5xx answers, never a traceback."""

from __future__ import annotations

from fastapi.testclient import TestClient
from sqlalchemy.orm import sessionmaker

from app.db import make_engine
from app.web.main import create_app
from tests.helpers import api_key_for, browser_login, html


def test_malformed_json_is_a_422_with_a_json_detail(client, rater, db):
    response = client.post(
        "/api/keys",
        content=b'{"name": "unterminated',
        headers={**api_key_for(db, rater), "Content-Type": "application/json"},
    )
    assert response.status_code == 422
    assert response.json()["detail"][0]["type"] == "json_invalid"


def test_domain_422s_have_the_documented_shape(client, admin, db):
    """A rule that only the domain checks (an unknown round setting) answers like a schema
    error does, in the shape that the OpenAPI description names for 422."""
    response = client.post(
        "/api/rounds", json={"overrides": {"optimiser": {}}}, headers=api_key_for(db, admin)
    )
    assert response.status_code == 422
    schema = client.get("/api/openapi.json").json()
    documented = schema["paths"]["/api/rounds"]["post"]["responses"]["422"]
    assert documented["content"]["application/json"]["schema"]["$ref"].endswith(
        "/HTTPValidationError"
    )
    (error,) = response.json()["detail"]
    assert set(error) == {"type", "loc", "msg"} and "optimiser" in error["msg"]


def test_validation_errors_do_not_echo_the_input(client):
    response = client.post(
        "/api/auth/token", json={"username": "x", "password": "secret-value", "extra": 1}
    )
    assert response.status_code == 422
    assert "secret-value" not in response.text


def test_oversized_bodies_are_refused_with_413(settings, engine, session_factory):
    app = create_app(settings.model_copy(update={"max_body_bytes": 1024}), engine=engine)
    app.state.session_factory = session_factory
    with TestClient(app) as client:
        response = client.post("/api/auth/token", content=b"x" * 5000)
    assert response.status_code == 413


def test_unknown_paths_are_a_json_404(client):
    response = client.get("/api/nothing-here")
    assert response.status_code == 404
    assert response.json() == {"detail": "Not found"}


def test_unexpected_errors_are_a_plain_500(app):
    @app.get("/api/boom", dependencies=[])
    def boom() -> None:
        raise RuntimeError("internal detail that must not leak")

    with TestClient(app, raise_server_exceptions=False) as client:
        response = client.get("/api/boom")
    assert response.status_code == 500
    assert response.json() == {"detail": "Internal server error"}
    assert "internal detail" not in response.text


def test_an_unreachable_database_is_a_503_not_a_500(settings):
    engine = make_engine("postgresql+psycopg://postgres@127.0.0.1:1/nowhere")
    app = create_app(settings, engine=engine)
    app.state.session_factory = sessionmaker(engine)
    with TestClient(app, raise_server_exceptions=False) as client:
        response = client.get("/api/auth/me", headers={"Authorization": "Bearer al_whatever"})
    assert response.status_code == 503
    assert "database" in response.json()["detail"]


def test_responses_carry_security_headers(client):
    headers = client.get("/login").headers
    assert headers["x-content-type-options"] == "nosniff"
    assert headers["x-frame-options"] == "DENY"
    assert "frame-ancestors 'none'" in headers["content-security-policy"]


def test_an_error_page_links_back_to_the_page_on_this_site_it_came_from(client, admin):
    browser_login(client, admin.username)
    headers = {"Accept": "text/html", "Referer": "http://testserver/admin/rounds?before=9"}
    missing = client.get("/admin/rounds/999999", headers=headers)
    assert missing.status_code == 404
    back = html(missing).select_one("a[href='/admin/rounds?before=9']")
    assert back.text == "Back to the page you were on"
    elsewhere = {"Accept": "text/html", "Referer": "https://elsewhere.example/admin/rounds"}
    page = html(client.get("/admin/rounds/999999", headers=elsewhere))
    assert [link["href"] for link in page.select("section.card a")] == ["/"]
