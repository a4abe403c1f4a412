"""The site's own files: the favicon every page links, and the API docs page (`/docs`) served
from vendored Swagger UI under the page policy."""

from __future__ import annotations

import base64
import hashlib
import re

from app.bundled import bundled_dir
from tests.helpers import html

LOCAL = re.compile(r"^/(?!/)")  # a path on this site, not `//cdn...` nor `https://...`


def test_favicon_ico_leads_to_the_svg_icon_that_every_page_links(client):
    moved = client.get("/favicon.ico", follow_redirects=False)
    assert moved.status_code == 308 and moved.headers["location"] == "/static/favicon.svg"
    icon = client.get("/static/favicon.svg")
    assert icon.status_code == 200 and icon.headers["content-type"].startswith("image/svg+xml")
    link = html(client.get("/login")).select_one("link[rel=icon]")
    assert link["href"] == "/static/favicon.svg"


def test_the_api_docs_load_only_files_from_this_site(client):
    page = client.get("/docs")
    assert page.status_code == 200
    document = html(page)
    assets = [tag["src"] for tag in document.select("script[src]")]
    assets += [tag["href"] for tag in document.select("link[href]")]
    assert "/static/vendor/swagger-ui/swagger-ui-bundle.js" in assets
    assert "/static/vendor/swagger-ui/swagger-ui.css" in assets
    assert all(LOCAL.match(asset) for asset in assets), assets
    assert "/api/openapi.json" in page.text
    for asset in assets:
        assert client.get(asset).status_code == 200, asset


def test_the_api_docs_allow_their_own_inline_script_and_no_other(client):
    page = client.get("/docs")
    inline = [tag.string for tag in html(page).select("script:not([src])")]
    assert len(inline) == 1
    digest = base64.b64encode(hashlib.sha256(inline[0].encode()).digest()).decode()
    policy = page.headers["content-security-policy"]
    assert f"script-src 'self' 'sha256-{digest}';" in policy
    assert "unsafe-inline" not in policy
    other = client.get("/login").headers["content-security-policy"]
    assert "script-src 'self';" in other


def test_the_vendored_libraries_keep_their_licences():
    vendor = bundled_dir("static") / "vendor"
    for library in ("uplot", "swagger-ui"):
        assert (vendor / library / "LICENSE").read_text().strip()
