"""Credentials in URLs: a request with a key, token or password in its query string is refused,
and such values are redacted from uvicorn's access log.

A URL is written to access logs, proxy logs and browser history and sent on in `Referer`
headers, so a key sent that way is as good as leaked. Refusing it (401, naming the header to use
instead) keeps clients from coming to rely on it, and the log filter keeps the request that tried
from writing the key into our own logs. No route takes a parameter of these names: invitation
and reset links carry their token in the path.
"""

from __future__ import annotations

import logging
from urllib.parse import unquote_plus

from starlette.requests import Request
from starlette.types import ASGIApp, Receive, Scope, Send

from app.web.errors import error_response

CREDENTIAL_PARAMETERS = frozenset(
    {"apikey", "xapikey", "key", "accesstoken", "token", "authorization", "bearer", "password"}
)
"""Query parameter names taken for credentials, compared in lower case without `_` and `-`
(`api_key`, `API-Key`, `apiKey`, `access_token`, ...)."""
REDACTED = "[redacted]"
MESSAGE = (
    "Credentials are refused in the URL (query parameter {name!r}): send the key as an "
    "'Authorization: Bearer <key>' header. A key that was sent in a URL may have been logged "
    "on the way: revoke it and create a new one."
)


def is_credential_parameter(name: str) -> bool:
    normalised = unquote_plus(name).lower().replace("_", "").replace("-", "")
    return normalised in CREDENTIAL_PARAMETERS


def credential_parameter(query_string: str) -> str | None:
    """The first credential-looking parameter name in a raw query string, or None."""
    for pair in query_string.split("&"):
        name = pair.partition("=")[0]
        if is_credential_parameter(name):
            return unquote_plus(name)
    return None


def redact(target: str) -> str:
    """`target` (a path with its raw query string) with the values of credential parameters
    replaced; everything else stays as it was, byte for byte."""
    path, question_mark, query = target.partition("?")
    if not question_mark:
        return target
    return f"{path}?{'&'.join(_redacted_pair(pair) for pair in query.split('&'))}"


def _redacted_pair(pair: str) -> str:
    name, equals, _ = pair.partition("=")
    return f"{name}={REDACTED}" if equals and is_credential_parameter(name) else pair


class RefuseQueryCredentials:
    """Answer 401 to any request whose query string carries a credential-looking parameter,
    before routing or authentication see it."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        query = scope.get("query_string", b"").decode("latin-1") if scope["type"] == "http" else ""
        if (name := credential_parameter(query)) is None:
            await self.app(scope, receive, send)
            return
        headers = {"WWW-Authenticate": "Bearer"}
        response = error_response(Request(scope, receive), 401, MESSAGE.format(name=name), headers)
        await response(scope, receive, send)


class RedactQueryCredentials(logging.Filter):
    """For uvicorn's access log: redacts credential values in the request line it logs (its
    arguments are the client, method, path with query string, HTTP version and status)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple):
            record.args = tuple(redact(arg) if isinstance(arg, str) else arg for arg in record.args)
        return True
