"""Markdown for untrusted text (prompts, model outputs, rater writing, guidelines), made safe.

CommonMark with raw HTML switched off, so `<script>` arrives as text; markdown-it refuses
`javascript:`, `vbscript:`, `file:` and most `data:` links. The HTML is then cleaned again with
an allow-list (nh3), so that a bug in either layer alone cannot let script through.
"""

from __future__ import annotations

from functools import lru_cache

import nh3
from markdown_it import MarkdownIt
from markupsafe import Markup

ALLOWED_TAGS = {
    "p", "br", "hr", "strong", "em", "del", "code", "pre", "blockquote", "a",
    "ul", "ol", "li", "h1", "h2", "h3", "h4", "h5", "h6",
    "table", "thead", "tbody", "tr", "th", "td",
}  # fmt: skip
ALLOWED_ATTRIBUTES = {"a": {"href", "title"}, "code": {"class"}, "th": {"align"}, "td": {"align"}}
MAX_RENDERED_CHARS = 200_000


@lru_cache(maxsize=1)
def _parser() -> MarkdownIt:
    return (
        MarkdownIt("commonmark", {"html": False, "linkify": False})
        .enable("table")
        .enable("strikethrough")
    )


def render_markdown(text: str | None) -> Markup:
    """Safe HTML for `text`; links open without leaking the page address."""
    html = _parser().render((text or "")[:MAX_RENDERED_CHARS])
    clean = nh3.clean(
        html,
        tags=ALLOWED_TAGS,
        attributes=ALLOWED_ATTRIBUTES,
        url_schemes={"http", "https", "mailto"},
        link_rel="noopener noreferrer nofollow",
    )
    # Safe to mark as markup: nh3 cleaned it just above.
    return Markup(clean)  # nosec B704
