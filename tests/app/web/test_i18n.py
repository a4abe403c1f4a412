"""The interface text catalogues: every page string goes through `t`, every English text has
a Chinese one with the same placeholders, and counts take each language's plural forms."""

from __future__ import annotations

import re
from html.parser import HTMLParser
from pathlib import Path

import pytest

from app.web.i18n import MESSAGES, PLURALS, preferred_language, translate, translate_plural

TEMPLATES = Path(__file__).resolve().parents[3] / "templates"

ALLOWED_WORDS = re.compile(r"alignloop|API|JSON|URL|[\w.+-]+@[\w-]+(\.[\w-]+)+|\b(UTC|MiB|s|n)\b")
"""Brand and technical words that read the same in every language, e-mail addresses, and units
and notation (UTC, MiB, s for seconds, n for a sample's size)."""

VISIBLE_ATTRIBUTES = {"placeholder", "title", "aria-label", "alt"}
BUTTON_INPUTS = {"submit", "button", "reset"}
"""An `<input>` of these types shows its `value` as its label."""
JINJA = re.compile(r"\{#.*?#\}|\{%.*?%\}|\{\{.*?\}\}", re.DOTALL)
VERBATIM = re.compile(r"<(code|pre|kbd|script|style)\b[^>]*>.*?</\1>", re.DOTALL | re.IGNORECASE)
"""Code samples, keys to press and scripts, shown as written whatever the language."""

SAME_IN_BOTH: set[str] = set()
"""Keys whose Chinese text may rightly equal the English one (none yet): any other equal pair is
a text someone forgot to translate."""


class VisibleText(HTMLParser):
    """Collects what a reader sees of an HTML fragment: text nodes and visible attributes."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.texts: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        attributes = dict(attrs)
        shown = VISIBLE_ATTRIBUTES | (
            {"value"} if tag == "input" and attributes.get("type") in BUTTON_INPUTS else set()
        )
        self.texts += [value for name, value in attrs if name in shown and value]

    def handle_data(self, data: str) -> None:
        self.texts.append(data)


def untranslated_texts(source: str) -> list[str]:
    """The texts with letters that a template writes itself rather than through `t` or data:
    Jinja's tags are dropped first (both branches of an `if` stay), then code samples."""
    parser = VisibleText()
    parser.feed(VERBATIM.sub(" ", JINJA.sub("", source)))
    parser.close()
    texts = (ALLOWED_WORDS.sub(" ", text).strip() for text in parser.texts)
    return [text for text in texts if any(character.isalpha() for character in text)]


TEMPLATE_NAMES = sorted(
    path.relative_to(TEMPLATES).as_posix() for path in TEMPLATES.rglob("*.html")
)


@pytest.mark.parametrize("name", TEMPLATE_NAMES)
def test_a_template_writes_no_interface_text_of_its_own(name):
    assert untranslated_texts((TEMPLATES / name).read_text("utf-8")) == []


def test_the_scan_finds_text_attributes_and_both_branches_but_not_code_or_jinja():
    source = """<h1>{{ t("a") }}</h1><input placeholder="e.g. a name" type="submit" value="Go">
      {% if x %}{{ t("b") }}{% else %}Nothing{% endif %}<code>POST /api</code> alignloop API
      <button title="{{ t('c') }}">→ <kbd>Enter</kbd></button>{# a comment #}
      <p>{{ "raw" }} ops@example.com</p>"""
    assert untranslated_texts(source) == ["e.g. a name", "Go", "Nothing"]


def test_every_english_text_has_a_chinese_one_with_the_same_placeholders():
    fields = re.compile(r"\{(\w+)\}")
    assert MESSAGES["zh"].keys() == MESSAGES["en"].keys()
    for key, english in MESSAGES["en"].items():
        chinese = MESSAGES["zh"][key]
        assert set(fields.findall(chinese)) == set(fields.findall(english)), key
        assert (chinese != english) or key in SAME_IN_BOTH, key


def test_a_key_without_a_text_is_a_bug_unless_the_caller_gives_a_default():
    with pytest.raises(KeyError):
        translate("zh", "aspect.tone")
    assert translate("zh", "aspect.tone", default="tone") == "tone"
    assert translate("zh", "aspect.honesty", default="honesty") == "诚实性"


@pytest.mark.parametrize(
    ("header", "language"),
    [
        ("zh-CN,zh;q=0.9,en;q=0.8", "zh"),
        ("de-DE, ZH-tw;q=0.5", "zh"),
        ("en-GB,zh;q=0.5", "en"),
        ("fr", "en"),
        ("", "en"),
        (None, "en"),
    ],
)
def test_before_sign_in_the_browsers_first_offered_language_is_used(header, language):
    assert preferred_language(header) == language


@pytest.mark.parametrize(
    ("count", "text"), [(0, "0 prompts"), (1, "1 prompt"), (2, "2 prompts"), (21, "21 prompts")]
)
def test_english_counts_take_the_singular_for_one_only(count, text):
    assert translate_plural("en", "admin.count.prompts", count) == text


def test_chinese_counts_have_one_form():
    assert translate_plural("zh", "admin.count.prompts", 1) == "1 条提示"
    assert translate_plural("zh", "admin.count.prompts", 5) == "5 条提示"
    assert all(forms.keys() == {"other"} for forms in PLURALS["zh"].values())


def test_every_count_has_both_english_forms_and_a_chinese_one():
    assert PLURALS["zh"].keys() == PLURALS["en"].keys()
    assert all(forms.keys() == {"one", "other"} for forms in PLURALS["en"].values())


def test_a_language_without_the_key_falls_back_to_english_forms():
    assert translate_plural("fr", "admin.count.tasks", 1) == "1 task"
