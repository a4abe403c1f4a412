"""The site's own files outside `/static`: the favicon at the address browsers try, and the
API's documentation page (`/docs`, Swagger UI from vendored files: no CDN).

FastAPI's Swagger page starts Swagger UI with an inline script, which the page policy forbids;
rather than rewrite FastAPI's page, `/docs` allows that one script by its hash.
"""

from __future__ import annotations

import base64
import hashlib
import re

from fastapi import APIRouter
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse, RedirectResponse

from app.web.deps import PublicRoute
from app.web.middleware import content_security_policy

router = APIRouter(dependencies=[PublicRoute], include_in_schema=False)

FAVICON = "/static/favicon.svg"
SWAGGER_UI = "/static/vendor/swagger-ui"
INLINE_SCRIPT = re.compile(rb"<script>(.*?)</script>", re.DOTALL)


@router.get("/favicon.ico")
def favicon() -> RedirectResponse:
    """Browsers ask for `/favicon.ico` on pages that name no icon (Swagger's, error pages of
    other servers, bookmarks): send them to the SVG icon every page links."""
    return RedirectResponse(FAVICON, status_code=308)


@router.get("/docs", response_class=HTMLResponse)
def api_docs() -> HTMLResponse:
    """The REST API's documentation (Swagger UI over `/api/openapi.json`), for anyone, as the
    OpenAPI description itself is."""
    page = get_swagger_ui_html(
        openapi_url="/api/openapi.json",
        title="alignloop API",
        swagger_js_url=f"{SWAGGER_UI}/swagger-ui-bundle.js",
        swagger_css_url=f"{SWAGGER_UI}/swagger-ui.css",
        swagger_favicon_url=FAVICON,
        # Swagger UI would otherwise load a badge from validator.swagger.io.
        swagger_ui_parameters={"validatorUrl": None},
    )
    hashes = [_sha256(script) for script in INLINE_SCRIPT.findall(page.body)]
    page.headers["content-security-policy"] = content_security_policy(*hashes)
    return page


def _sha256(script: bytes) -> str:
    """The base64 sha256 that a Content-Security-Policy names an inline script by."""
    return base64.b64encode(hashlib.sha256(script).digest()).decode()
