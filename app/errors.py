"""The errors the domain raises, each with the HTTP status it stands for.

Plain exceptions, free of the web framework: the domain, the CLI and the worker raise them, and
`app.web.errors` alone turns them into responses.
"""

from __future__ import annotations


class AppError(Exception):
    status_code = 400

    def __init__(
        self, detail: str, headers: dict[str, str] | None = None, *, code: str | None = None
    ) -> None:
        super().__init__(detail)
        self.detail = detail
        self.headers = headers or {}
        self.code = code
        """A machine-readable reason, for clients that branch on it (OpenAI's `code`)."""
        self.fields: dict[str, object] = {}
        """Structured facts beside `detail` in a JSON error body (the held tasks of a 429)."""


class InvalidInput(AppError):
    """Input that passed the schemas but breaks a domain rule; `loc` says where, as in a
    schema error (see `error_response`)."""

    status_code = 422

    def __init__(self, detail: str, *, loc: tuple[str | int, ...] = ("body",)) -> None:
        super().__init__(detail)
        self.loc = loc


class Unauthenticated(AppError):
    status_code = 401

    def __init__(self, detail: str = "Not authenticated") -> None:
        super().__init__(detail, {"WWW-Authenticate": "Bearer"})


class LoginRequired(Unauthenticated):
    """A browser page was asked for without a session: send the user to the login form."""


class PermissionDenied(AppError):
    status_code = 403


class NotFound(AppError):
    status_code = 404


class Conflict(AppError):
    status_code = 409


class UnsupportedMediaType(AppError):
    status_code = 415


class RateLimited(AppError):
    status_code = 429

    def __init__(self, detail: str, retry_after_s: int) -> None:
        super().__init__(detail, {"Retry-After": str(max(1, retry_after_s))})


class ServiceUnavailable(AppError):
    status_code = 503
