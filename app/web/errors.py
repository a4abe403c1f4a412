"""The one place that turns errors (the domain's and everything unexpected) into responses.

Code inside the app raises the exceptions of `app.errors`; no handler builds error responses
itself. Browsers get a small HTML page, `/v1` clients OpenAI's error shape, everything else
`{"detail": ...}`. Nobody ever sees a traceback.
"""

from __future__ import annotations

import logging
from urllib.parse import quote

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, RedirectResponse, Response
from sqlalchemy.exc import DataError, DBAPIError, IntegrityError, OperationalError
from starlette.exceptions import HTTPException as StarletteHTTPException

from app.errors import AppError, InvalidInput, LoginRequired
from app.web.templating import render_error_page

log = logging.getLogger(__name__)

NOT_FOUND = "not_found"
"""The code of a path that no route serves; its page says so in the reader's language."""


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(AppError, _app_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(OperationalError, _database_unavailable)
    app.add_exception_handler(IntegrityError, _integrity_error)
    app.add_exception_handler(DataError, _data_error)
    app.add_exception_handler(DBAPIError, _database_error)
    app.add_exception_handler(Exception, _unexpected_error)


OPENAI_ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    409: "invalid_request_error",
    413: "invalid_request_error",
    429: "rate_limit_error",
    503: "service_unavailable",
}


def _is_openai(request: Request) -> bool:
    return request.url.path.startswith("/v1/")


def openai_error(
    status_code: int, message: str, *, code: str | None = None, param=None, headers=None
):
    """OpenAI's error response, which OpenAI clients parse into their exceptions."""
    body = openai_error_body(status_code, message, code=code, param=param)
    return JSONResponse(body, status_code=status_code, headers=headers)


def openai_error_body(status_code: int, message: str, *, code: str | None = None, param=None):
    """OpenAI's error body (also what a stream sends when it fails midway)."""
    return {
        "error": {
            "message": message,
            "type": OPENAI_ERROR_TYPES.get(status_code, "server_error"),
            "param": param,
            "code": code,
        }
    }


def _wants_html(request: Request) -> bool:
    path = request.url.path
    if path.startswith(("/api/", "/v1/")):
        return False
    return "text/html" in request.headers.get("accept", "")


def error_response(
    request: Request,
    status_code: int,
    detail,
    headers=None,
    code: str | None = None,
    *,
    loc: tuple[str | int, ...] = ("body",),
    fields: dict | None = None,
) -> Response:
    if _is_openai(request):
        # OpenAI reports invalid input as 400 where the rest of this API says 422.
        status_code = 400 if status_code == 422 else status_code
        return openai_error(status_code, str(detail), code=code, headers=headers)
    if _wants_html(request) and isinstance(detail, str):
        return render_error_page(request, status_code, detail, headers, code)
    if status_code == 422 and isinstance(detail, str):
        # The shape OpenAPI documents for every 422 (FastAPI's `HTTPValidationError`), whether
        # a schema or a domain rule refused the input: clients parse one shape.
        detail = [{"type": code or "invalid_input", "loc": list(loc), "msg": detail}]
    body = {"detail": detail, **(fields or {})}
    return JSONResponse(body, status_code=status_code, headers=headers)


async def _app_error(request: Request, exc: AppError) -> Response:
    if isinstance(exc, LoginRequired):
        target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        return RedirectResponse(f"/login?next={quote(target)}", status_code=303)
    loc = exc.loc if isinstance(exc, InvalidInput) else ("body",)
    return error_response(
        request, exc.status_code, exc.detail, exc.headers, exc.code, loc=loc, fields=exc.fields
    )


async def _http_error(request: Request, exc: StarletteHTTPException) -> Response:
    headers = getattr(exc, "headers", None)
    if exc.status_code == 404 and exc.detail == "Not Found":  # no route: a dead link
        return error_response(request, 404, "Not found", headers, code=NOT_FOUND)
    return error_response(request, exc.status_code, exc.detail, headers)


async def _validation_error(request: Request, exc: RequestValidationError) -> Response:
    if _is_openai(request):
        first = exc.errors()[0]
        where = ".".join(str(part) for part in first["loc"][1:])
        message = first["msg"].removeprefix("Value error, ")  # pydantic's, for a ValueError
        return openai_error(400, f"{where}: {message}" if where else message, param=where)
    errors = [
        {key: error[key] for key in ("type", "loc", "msg") if key in error}
        for error in exc.errors()
    ]
    return JSONResponse({"detail": errors}, status_code=422)


async def _database_unavailable(request: Request, exc: OperationalError) -> Response:
    log.warning("database unavailable: %s", exc.orig)
    return error_response(
        request, 503, "The database is unavailable; try again shortly.", {"Retry-After": "5"}
    )


async def _integrity_error(request: Request, exc: IntegrityError) -> Response:
    # A constraint caught what the domain checks missed (typically a race between two
    # requests); the data is intact and the request can be corrected or retried.
    log.info("integrity error on %s %s: %s", request.method, request.url.path, exc.orig)
    return error_response(request, 409, "The request conflicts with existing data.")


async def _data_error(request: Request, exc: DataError) -> Response:
    # The database refused a value (out of range, not storable) that the schemas let through:
    # the request's fault, and nothing was written.
    log.warning("data error on %s %s: %s", request.method, request.url.path, exc.orig)
    return error_response(request, 422, "A value in the request cannot be stored.")


async def _database_error(request: Request, exc: DBAPIError) -> Response:
    if exc.connection_invalidated:
        return await _database_unavailable(request, exc)  # type: ignore[arg-type]
    return await _unexpected_error(request, exc)


async def _unexpected_error(request: Request, exc: Exception) -> Response:
    log.exception("unhandled error on %s %s", request.method, request.url.path)
    return error_response(request, 500, "Internal server error")
