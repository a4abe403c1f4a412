"""Server-rendered pages: the Jinja2 environment and the helpers that render with page context.

Autoescaping is always on: prompts, model outputs and rater text are untrusted and shown to
other people. Data for scripts goes through the `tojson` filter, never string concatenation.
"""

from __future__ import annotations

from datetime import datetime
from functools import partial
from typing import Any
from urllib.parse import urlsplit

import jinja2
from fastapi import Request
from fastapi.responses import HTMLResponse
from fastapi.templating import Jinja2Templates
from markupsafe import Markup

from app.bundled import bundled_dir
from app.web.i18n import (
    DEFAULT_LANGUAGE,
    LANGUAGES,
    preferred_language,
    translate,
    translate_plural,
)
from app.web.markdown import render_markdown

templates = Jinja2Templates(
    env=jinja2.Environment(
        loader=jinja2.FileSystemLoader(bundled_dir("templates")),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
)
templates.env.filters["markdown"] = render_markdown


def time_left(seconds: float | None, language: str = DEFAULT_LANGUAGE) -> str:
    """An ETA in words: "about 40 s left", "about 12 min left" ("" when unknown); pages pass
    the reader's language, the command line's follower takes English."""
    if seconds is None:
        return ""
    if seconds < 90:
        return translate(language, "admin.eta.seconds", n=f"{max(5, round(seconds / 5) * 5):.0f}")
    if seconds < 90 * 60:
        return translate(language, "admin.eta.minutes", n=f"{seconds / 60:.0f}")
    return translate(language, "admin.eta.hours", n=f"{seconds / 3600:.1f}")


templates.env.filters["time_left"] = time_left


def duration(seconds: float | None) -> str:
    """A run's length as the jobs tables show it: "42 s", "3 min 05 s", "2 h 07 min" ("—" when
    it has not started)."""
    if seconds is None:
        return "—"
    minutes, whole_seconds = divmod(round(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    if hours:
        return f"{hours} h {minutes:02d} min"
    return f"{minutes} min {whole_seconds:02d} s" if minutes else f"{whole_seconds} s"


templates.env.filters["duration"] = duration

MOMENT_FORMATS = {
    "minute": "%Y-%m-%d %H:%M",
    "second": "%Y-%m-%d %H:%M:%S",
    "date": "%Y-%m-%d",
    "clock": "%H:%M",
    "clock_second": "%H:%M:%S",
}


def when(moment: datetime | None, precision: str = "minute") -> str:
    """A moment (UTC) as every page writes it, to the minute unless asked; "" for None."""
    return moment.strftime(MOMENT_FORMATS[precision]) if moment else ""


templates.env.filters["when"] = when


def local_clock(moment: datetime) -> Markup:
    """A moment's clock time as a `<time>` element written in UTC, so that a page without
    scripts is still right; `static/rate.js` rewrites it in the reader's own time zone."""
    return Markup('<time datetime="{}" data-local="clock">{} UTC</time>').format(
        moment.strftime("%Y-%m-%dT%H:%M:%SZ"), when(moment, "clock")
    )


templates.env.filters["local_clock"] = local_clock


@jinja2.pass_context
def csrf_field(context: jinja2.runtime.Context) -> Markup:
    """The hidden input that carries the session's CSRF token, in every form that posts."""
    return Markup('<input type="hidden" name="csrf_token" value="{}">').format(
        context["csrf_token"]
    )


templates.env.globals["csrf_field"] = csrf_field


def render(
    request: Request,
    name: str,
    context: dict[str, Any] | None = None,
    *,
    status_code: int = 200,
    headers: dict[str, str] | None = None,
) -> HTMLResponse:
    """Render a page; templates always see the signed-in user, the session's CSRF token and
    the page's language (`page_language`)."""
    principal = getattr(request.state, "principal", None)
    language = page_language(request)
    page_context = {
        "user": principal.user if principal else None,
        "csrf_token": principal.csrf_token if principal else None,
        "language": language,
        "languages": LANGUAGES,
        "t": partial(translate, language),
        "t_plural": partial(translate_plural, language),
        **(context or {}),
    }
    return templates.TemplateResponse(
        request, name, page_context, status_code=status_code, headers=headers
    )


def page_language(request: Request) -> str:
    """The language a page speaks: the signed-in user's choice; for a visitor (the sign-in and
    link pages, an error page), who has no account to say which, the browser's
    (`Accept-Language`)."""
    principal = getattr(request.state, "principal", None)
    if principal is None:
        return preferred_language(request.headers.get("accept-language"))
    return principal.user.locale if principal.user.locale in LANGUAGES else DEFAULT_LANGUAGE


def render_error_page(
    request: Request,
    status_code: int,
    detail: str,
    headers: dict[str, str] | None = None,
    code: str | None = None,
) -> HTMLResponse:
    """The message, with a link back to the page the request came from (a form that was
    refused, say) when that page is on this site. An error whose `code` has a text in the
    catalogue (`error.detail.<code>`) says it in the page's language, others as raised."""
    return render(
        request,
        "error.html",
        {
            "status_code": status_code,
            "detail": detail,
            "code": code,
            "came_from": _came_from(request),
        },
        status_code=status_code,
        headers=headers,
    )


def _came_from(request: Request) -> str | None:
    """The path of the referring page, only when it is on this site and not this request's."""
    referrer = urlsplit(request.headers.get("referer", ""))
    if referrer.netloc != request.url.netloc or not referrer.path.startswith("/"):
        return None
    if referrer.path == request.url.path:
        return None
    return referrer.path + (f"?{referrer.query}" if referrer.query else "")
