"""Every route declares who may call it, and every cookie-authenticated write checks CSRF.

These tests walk `app.routes`, so a route added later without a role or without the CSRF
check fails here without anyone having to remember to write a test for it.
"""

from __future__ import annotations

import re

import pytest
from fastapi.dependencies.models import Dependant
from fastapi.routing import APIRoute, RouteContext, iter_route_contexts

from app.deps import ROLE_DEPENDENCIES, api_key_principal, public_route
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
