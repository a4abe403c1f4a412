"""The OpenAPI description, with every error status a route can really answer.

FastAPI documents a route's success and, where it has parameters, 422. The other answers come
from what the route depends on and how it is called, so they are derived here from the same
facts rather than written by hand at each route (where they would drift): authentication (401,
403), an id in the path (404), a state change (409), a body (413), the database (503), and on
`/v1` OpenAI's 400 for invalid input. What only a route knows (a lookup of an id in the body,
a stale `If-Match`) it declares with `schemas.error_responses`. `tests/app/web/api/test_fuzz_api.py`
checks that no fuzzed request gets a status that the description does not list.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from fastapi import FastAPI
from fastapi.dependencies.models import Dependant
from fastapi.openapi.utils import get_openapi
from fastapi.routing import APIRoute, RouteContext, iter_route_contexts

from app.schemas import ERROR_DESCRIPTIONS, ErrorOut
from app.web import deps

UNSAFE_METHODS = {"POST", "PUT", "PATCH", "DELETE"}
VALIDATION_ERROR = {"$ref": "#/components/schemas/HTTPValidationError"}
OPENAI_INVALID = "Invalid request (in OpenAI's error shape, as are the other errors here)"


def describe(app: FastAPI) -> dict[str, Any]:
    """The app's OpenAPI document (built once, then cached as FastAPI does)."""
    if app.openapi_schema is None:
        document = get_openapi(title=app.title, version=app.version, routes=app.routes)
        schemas = document.setdefault("components", {}).setdefault("schemas", {})
        schemas["ErrorOut"] = ErrorOut.model_json_schema()
        for route in iter_route_contexts(app.routes):  # with the including routers' parts
            if isinstance(route.original_route, APIRoute) and route.include_in_schema:
                for method in route.methods:
                    operation = document["paths"][route.path_format][method.lower()]
                    _add_errors(operation["responses"], route, method)
        app.openapi_schema = document
    return app.openapi_schema


def _add_errors(responses: dict[str, Any], route: RouteContext, method: str) -> None:
    openai = route.path.startswith("/v1/")
    if openai:
        responses.pop("422", None)  # FastAPI's; /v1 answers invalid input with OpenAI's 400
    for status in sorted(error_statuses(route, method)):
        responses.setdefault(str(status), _response(status, openai=openai))


def error_statuses(route: RouteContext, method: str) -> set[int]:
    """The error statuses `route` can answer to `method`, besides those it declares itself."""
    calls = {dependant.call for dependant in _dependants(route.dependant)}
    openai = route.path.startswith("/v1/")
    statuses = {400, 429} if openai else {422}  # 422: a NUL in any query string
    if calls & (deps.ROLE_DEPENDENCIES - {deps.public_route}):
        statuses |= {401, 403, 429}  # 429: an address that sent too many invalid keys
    if "{" in route.path_format:
        statuses.add(404)
    if method in UNSAFE_METHODS:
        statuses |= {409, 413}
    if deps.get_db in calls:
        statuses.add(503)
    return statuses


def _dependants(dependant: Dependant) -> Iterator[Dependant]:
    yield dependant
    for sub in dependant.dependencies:
        yield from _dependants(sub)


def _response(status: int, *, openai: bool) -> dict[str, Any]:
    if openai:
        return {"description": OPENAI_INVALID if status == 400 else ERROR_DESCRIPTIONS[status]}
    schema = VALIDATION_ERROR if status == 422 else {"$ref": "#/components/schemas/ErrorOut"}
    return {
        "description": ERROR_DESCRIPTIONS[status],
        "content": {"application/json": {"schema": schema}},
    }
