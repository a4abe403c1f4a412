"""Credentials in URLs: refused with a pointer to the Authorization header, and never logged."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager

import httpx
import pytest

from app.cli import uvicorn_options
from app.web.query_credentials import REDACTED, is_credential_parameter, redact
from tests.helpers import api_key_for
from tests.live_server import serve_in_thread


@pytest.mark.parametrize("name", ["api_key", "key", "access_token", "token", "API-Key", "apiKey"])
@pytest.mark.parametrize("path", ["/api/auth/me", "/healthz"])
def test_a_key_in_the_query_string_is_refused_even_beside_a_valid_header(
    client, rater, db, name, path
):
    headers = api_key_for(db, rater)
    key = headers["Authorization"].removeprefix("Bearer ")
    response = client.get(path, params={name: key}, headers=headers)
    assert response.status_code == 401
    assert "Authorization: Bearer" in response.json()["detail"]
    assert key not in response.text


def test_v1_refuses_a_key_in_the_query_string_in_openai_form(client, rater, db):
    key = api_key_for(db, rater)["Authorization"].removeprefix("Bearer ")
    response = client.get("/v1/models", params={"api_key": key})
    assert response.status_code == 401
    assert "Authorization: Bearer" in response.json()["error"]["message"]


def test_no_route_takes_a_query_parameter_that_is_refused_at_the_door(app):
    operations = [op for ops in app.openapi()["paths"].values() for op in ops.values()]
    names = {
        parameter["name"]
        for operation in operations
        for parameter in operation.get("parameters", [])
        if parameter["in"] == "query"
    }
    assert "next" in names
    assert [name for name in names if is_credential_parameter(name)] == []


def test_other_query_parameters_pass_even_when_a_value_mentions_a_token(client):
    response = client.get("/login", params={"next": "/account?token=x", "notice": "password-reset"})
    assert response.status_code == 200


@pytest.mark.parametrize(
    ("logged", "expected"),
    [
        ("/v1/models?api_key=al_secret", f"/v1/models?api_key={REDACTED}"),
        ("/x?a=1&Access-Token=s3&b=2", f"/x?a=1&Access-Token={REDACTED}&b=2"),
        ("/x?api%5Fkey=s3", f"/x?api%5Fkey={REDACTED}"),
        ("/login?next=%2F%3Ftoken%3Ds3", "/login?next=%2F%3Ftoken%3Ds3"),
        ("/healthz", "/healthz"),
    ],
)
def test_redaction_replaces_credential_values_only(logged, expected):
    assert redact(logged) == expected


@contextmanager
def handled_by(logger_name: str, caplog: pytest.LogCaptureFixture) -> Iterator[None]:
    """Let `caplog` see what the logger's own handlers get (after the logger's filters)."""
    logger = logging.getLogger(logger_name)
    logger.addHandler(caplog.handler)
    try:
        yield
    finally:
        logger.removeHandler(caplog.handler)


def test_the_access_log_never_shows_a_key_sent_in_the_query_string(
    app, rater, db, settings, caplog
):
    key = api_key_for(db, rater)["Authorization"].removeprefix("Bearer ")
    # uvicorn configures its loggers as it starts: listen in after that
    with (
        serve_in_thread(app, **uvicorn_options(settings)) as url,
        handled_by("uvicorn.access", caplog),
    ):
        for path in ("/api/auth/me", "/v1/models", "/healthz"):
            assert httpx.get(f"{url}{path}", params={"api_key": key}).status_code == 401
        assert httpx.get(f"{url}/healthz", params={"token": key, "x": "1"}).status_code == 401
    request_lines = [record.getMessage() for record in caplog.records]
    assert len([line for line in request_lines if REDACTED in line]) == 4
    assert key not in caplog.text and all(key not in line for line in request_lines)
