"""Interface text: plural forms by language."""

from __future__ import annotations

import pytest

from app.web.i18n import PLURALS, translate_plural


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
