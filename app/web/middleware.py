"""ASGI middleware: security headers on every response, no NUL characters in any request, and
oversize bodies refused in words.

A response that sets its own `Content-Security-Policy` keeps it (built with
`content_security_policy`, so it differs only in the inline scripts it allows).

Request body limits use FastAPI's own `max_body_size` (set in `app.web.main`), which answers in
plain text; `DeclaredSizeLimit` runs outside it and answers the usual case first (a declared
length over the limit, as browsers and clients send) with the app's own error response: a page
with a way back, for a browser."""

from __future__ import annotations

import re

from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.web.errors import error_response


def content_security_policy(*script_hashes: str) -> str:
    """The page policy: everything from this site only, and no inline script but the ones
    whose sha256 `script_hashes` (base64) a page names for itself (the API docs page)."""
    scripts = " ".join(["'self'", *(f"'sha256-{digest}'" for digest in script_hashes)])
    return (
        f"default-src 'self'; img-src 'self' data:; style-src 'self'; script-src {scripts}; "
        "object-src 'none'; frame-ancestors 'none'; form-action 'self'; base-uri 'none'"
    )


SECURITY_HEADERS = [
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"same-origin"),
    (b"content-security-policy", content_security_policy().encode()),
]


class SecurityHeadersMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                present = {name.lower() for name, _ in message.get("headers", [])}
                extra = [(name, value) for name, value in SECURITY_HEADERS if name not in present]
                message = {**message, "headers": [*message.get("headers", []), *extra]}
            await send(message)

        await self.app(scope, receive, send_with_headers)


# A JSON string escape `\u0000` is a NUL only when its backslash is not itself escaped.
JSON_NUL = re.compile(rb"(?<!\\)(?:\\\\)*\\u0000")
FORM_NUL = re.compile(rb"%00")
NUL_MESSAGE = "Text must not contain NUL characters (found in the {where})."


class DeclaredSizeLimit:
    """Refuse a request whose `Content-Length` is over `max_body_bytes`, before reading it."""

    def __init__(self, app: ASGIApp, *, max_body_bytes: int) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        declared = dict(scope.get("headers", [])).get(b"content-length", b"")
        if scope["type"] != "http" or not declared.isdigit():
            await self.app(scope, receive, send)
            return
        if int(declared) <= self.max_body_bytes:
            await self.app(scope, receive, send)
            return
        message = (
            f"This request is {_size(int(declared))}, over the limit of "
            f"{_size(self.max_body_bytes)} (ALIGNLOOP_MAX_BODY_BYTES): split the file, or "
            "raise the limit."
        )
        response = error_response(Request(scope, receive), 413, message)
        await response(scope, receive, send)


def _size(count: int) -> str:
    return f"{count / 2**20:.1f} MiB" if count >= 2**20 else f"{count / 2**10:.0f} KiB"


class RejectNulMiddleware:
    """Refuse (422; 400 on `/v1`) any request with a NUL character in its path, query string,
    JSON body or form body, before a route sees it.

    PostgreSQL cannot store NUL in text or JSONB, and SQLite would store what PostgreSQL
    refuses; one rule at the door keeps both databases alike and every route safe. Bodies are
    read here only up to `max_body_bytes`: a larger one passes on unread to the app's own 413.
    Multipart uploads pass on too: the prompt import refuses NUL row by row in its report.
    """

    def __init__(self, app: ASGIApp, *, max_body_bytes: int) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if "\x00" in scope["path"] or b"%00" in scope.get("query_string", b""):
            await self._refuse(scope, receive, send, "address")
            return
        pattern = _body_nul_pattern(scope)
        if pattern is None:
            await self.app(scope, receive, send)
            return
        messages, complete = await self._read_body(receive)
        body = b"".join(message.get("body", b"") for message in messages)
        if complete and (b"\x00" in body or pattern.search(body)):
            await self._refuse(scope, receive, send, "request body")
            return

        async def replay() -> Message:
            return messages.pop(0) if messages else await receive()

        await self.app(scope, replay, send)

    async def _read_body(self, receive: Receive) -> tuple[list[Message], bool]:
        """The body's messages up to the size limit, and whether that is the whole body."""
        messages: list[Message] = []
        size = 0
        while True:
            message = await receive()
            messages.append(message)
            if message["type"] != "http.request":
                return messages, False
            size += len(message.get("body", b""))
            if size > self.max_body_bytes:
                return messages, False
            if not message.get("more_body", False):
                return messages, True

    async def _refuse(self, scope: Scope, receive: Receive, send: Send, where: str) -> None:
        request = Request(scope, receive)
        loc = ("body",) if where == "request body" else ("path", "query")
        response = error_response(request, 422, NUL_MESSAGE.format(where=where), loc=loc)
        await response(scope, receive, send)


def _body_nul_pattern(scope: Scope) -> re.Pattern[bytes] | None:
    """How a NUL is spelled in this request's body, or None for bodies not checked here."""
    content_type = dict(scope.get("headers", [])).get(b"content-type", b"").lower()
    if b"json" in content_type:
        return JSON_NUL
    if content_type.startswith(b"application/x-www-form-urlencoded"):
        return FORM_NUL
    return None
