"""Every route declares who may call it, and every cookie-authenticated write checks CSRF.

These tests walk `app.routes`, so a route added later without a role or without the CSRF
check fails here without anyone having to remember to write a test for it.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from fastapi.dependencies.models import Dependant
from fastapi.routing import APIRoute, RouteContext, iter_route_contexts

from app.web.deps import ROLE_DEPENDENCIES, api_key_principal, public_route
from tests.helpers import browser_login

UNSAFE_METHODS = {"POST", "PUT", "PATCH", "DELETE"}


def dependency_calls(dependant: Dependant) -> set:
    calls = {dependant.call}
    for sub in dependant.dependencies:
        calls |= dependency_calls(sub)
    return calls


def api_routes(app) -> list[RouteContext]:
    """Every API route as served, with the dependencies of the routers that include it."""
    return [
        context
        for context in iter_route_contexts(app.routes)
        if isinstance(context.original_route, APIRoute)
    ]


def unsafe_routes(app, *, audience) -> list[tuple[str, str]]:
    """Unsafe (method, path) pairs of the routes whose dependencies include `audience`."""
    return [
        (method, route.path)
        for route in api_routes(app)
        if audience(dependency_calls(route.dependant))
        for method in sorted(route.methods & UNSAFE_METHODS)
    ]


def unsafe_cookie_routes(app) -> list[tuple[str, str]]:
    return unsafe_routes(app, audience=lambda calls: not calls & {public_route, api_key_principal})


def test_the_walk_sees_the_routes_of_included_routers(app):
    paths = {route.path for route in api_routes(app)}
    assert {"/healthz", "/login", "/api/auth/me", "/api/keys/{key_id}"} <= paths


def test_every_route_declares_its_audience(app):
    undeclared = [
        route.path
        for route in api_routes(app)
        if not dependency_calls(route.dependant) & ROLE_DEPENDENCIES
    ]
    assert undeclared == []


def test_there_are_cookie_authenticated_writes_to_check(app):
    assert len(unsafe_cookie_routes(app)) >= 3


def test_every_cookie_authenticated_write_refuses_a_missing_csrf_token(app, client, admin):
    csrf = browser_login(client, admin.username)
    unguarded = []
    for method, path in unsafe_cookie_routes(app):
        url = re.sub(r"\{[^}]+\}", "1", path)
        for headers in ({}, {"X-CSRF-Token": "forged-" + csrf[:8]}):
            response = client.request(method, url, json={}, headers=headers, follow_redirects=False)
            if response.status_code != 403:
                unguarded.append((method, path, headers, response.status_code))
    assert unguarded == []


def test_every_cookie_authenticated_write_refuses_another_origin(app, client, admin):
    """Even with the right CSRF token (stolen, or planted by a sibling subdomain)."""
    csrf = browser_login(client, admin.username)
    unguarded = []
    for origin in ("https://evil.example", "null", "http://testserver.evil.example"):
        for method, path in unsafe_cookie_routes(app):
            url = re.sub(r"\{[^}]+\}", "1", path)
            headers = {"X-CSRF-Token": csrf, "Origin": origin}
            response = client.request(method, url, json={}, headers=headers, follow_redirects=False)
            if response.status_code != 403 or "Cross-site" not in response.text:
                unguarded.append((method, path, origin, response.status_code))
    assert unguarded == []
    same_site = {"X-CSRF-Token": csrf, "Origin": "http://testserver"}
    assert client.post("/api/keys", json={"name": "k"}, headers=same_site).status_code == 201


@pytest.mark.parametrize("token_in", ["form", "header"])
def test_a_write_with_the_sessions_csrf_token_goes_through(client, rater, token_in):
    csrf = browser_login(client, rater.username)
    if token_in == "form":
        response = client.post("/account/keys", data={"name": "k", "csrf_token": csrf})
        assert response.status_code == 201
    else:
        response = client.post("/api/keys", json={"name": "k"}, headers={"X-CSRF-Token": csrf})
        assert response.status_code == 201


def test_a_form_post_without_csrf_gets_a_page_not_a_traceback(client, rater):
    browser_login(client, rater.username)
    response = client.post("/account/keys", data={"name": "k"}, headers={"Accept": "text/html"})
    assert response.status_code == 403
    assert "CSRF" in response.text and "Traceback" not in response.text


def test_api_key_only_routes_ignore_a_signed_in_browser(app, client, admin):
    csrf = browser_login(client, admin.username)
    routes = unsafe_routes(app, audience=lambda calls: api_key_principal in calls)
    assert routes  # /v1
    for method, path in routes:
        response = client.request(method, path, json={}, headers={"X-CSRF-Token": csrf})
        assert response.status_code == 401, path


def test_every_page_sends_an_enforcing_content_security_policy(app, client, admin):
    browser_login(client, admin.username)
    pages = [
        re.sub(r"\{[^}]+\}", "1", route.path)
        for route in api_routes(app)
        if "GET" in route.methods and not route.path.startswith(("/api/", "/v1/"))
    ]
    checked = 0
    for url in pages:
        response = client.get(url, headers={"Accept": "text/html"}, follow_redirects=False)
        if not response.headers.get("content-type", "").startswith("text/html"):
            continue
        checked += 1
        policy = response.headers["content-security-policy"]
        assert "content-security-policy-report-only" not in response.headers, url
        assert "unsafe-inline" not in policy and "unsafe-eval" not in policy, url
        assert {"object-src 'none'", "base-uri 'none'", "frame-ancestors 'none'"} <= {
            part.strip() for part in policy.split(";")
        }, url
        assert response.headers["x-content-type-options"] == "nosniff", url
    assert checked >= 15


def test_no_script_builds_code_at_run_time():
    """An enforcing CSP without 'unsafe-eval' would break such a script; keep it that way."""
    static = Path(__file__).resolve().parents[3] / "static"
    scripts = list(static.rglob("*.js"))
    assert scripts
    for script in scripts:
        text = script.read_text().replace(WEBPACK_GLOBAL_SHIM, "")
        assert not re.search(r"\beval\s*\(|new\s+Function\s*\(", text), script


# webpack's fallback for a browser without `globalThis`, in vendored Swagger UI: never reached
# in the browsers we support, and inside `try` where it is.
WEBPACK_GLOBAL_SHIM = 'try{return this||new Function("return this")()}'


def test_no_response_schema_exposes_a_password_hash_or_secret(app):
    """The one-time key-creation response carries `key`; nothing carries a hash or password."""
    description = app.openapi()
    responses = [
        response
        for operations in description["paths"].values()
        for operation in operations.values()
        for response in operation.get("responses", {}).values()
    ]
    schemas = referenced_schemas(responses, description["components"]["schemas"])
    assert len(schemas) >= 20
    exposed = [
        field
        for schema in schemas
        for field in schema.get("properties", {})
        if re.search(r"password|hash|secret|api_key", field, re.IGNORECASE)
    ]
    assert exposed == []


def referenced_schemas(node, components: dict, seen: set | None = None) -> list[dict]:
    """The component schemas that `node` refers to, directly or through other schemas."""
    seen = set() if seen is None else seen
    found = []
    if isinstance(node, dict):
        name = node.get("$ref", "").rpartition("/")[2]
        if name and name not in seen:
            seen.add(name)
            found.append(components[name])
            found += referenced_schemas(components[name], components, seen)
        for value in node.values():
            found += referenced_schemas(value, components, seen)
    elif isinstance(node, list):
        for value in node:
            found += referenced_schemas(value, components, seen)
    return found
