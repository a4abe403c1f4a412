"""The playground in a real browser: thumbs and a better answer are two independent steps.

Headless Chromium (see `tests/browser.py`) signs in to a live server that serves the tiny
model, asks a question, gives the answer a thumbs-down and then suggests a better answer in
the box prefilled with the answer; the database must hold both pieces of feedback and a new
rating task that puts the better answer next to the served one.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from playwright.sync_api import Browser, Page, expect
from sqlalchemy import select

from app.config import Settings
from app.models import Feedback, FeedbackRating, Task
from tests.browser import SCREENS, log_in, new_context, record_errors, save_screenshot
from tests.helpers import serving_tiny_model

pytestmark = pytest.mark.usefixtures("chromium")  # before the other fixtures: skip fast

EDIT = " Boil it for seven minutes."


@pytest.fixture
def world(model_settings: Settings) -> Iterator[dict]:
    """The tiny model as version `base` behind a live server, with the rater `sdk`."""
    with serving_tiny_model(model_settings) as world:
        yield world


@pytest.fixture
def page(browser: Browser, world: dict) -> Iterator[Page]:
    context = new_context(browser, world["url"], SCREENS["desktop"])
    yield context.new_page()
    context.close()


def ask(page: Page, question: str) -> str:
    """Send `question`; the answer's text once its feedback bar is there."""
    page.fill("#max-tokens", "16")
    page.fill("#message", question)
    page.locator("#ask button[type=submit]").click()
    answer = page.locator(".bubble.role-assistant").last
    expect(answer.locator(".feedback")).to_be_visible()
    return answer.locator(".text").text_content()


def test_thumbs_then_a_better_answer_prefilled_are_two_steps(page: Page, world: dict):
    errors = record_errors(page)
    log_in(page, "sdk", "long enough pw")
    page.goto("/playground")
    answer = ask(page, "How long should I boil an egg?")
    bar = page.locator(".feedback").last
    status = bar.locator(".feedback-status")

    bar.get_by_role("button", name="Bad answer").click()
    expect(status).to_have_text("Thanks, noted.")
    expect(bar.get_by_role("button", name="Bad answer")).to_have_attribute("aria-pressed", "true")
    expect(bar.get_by_role("button", name="Good answer")).to_be_disabled()

    bar.get_by_role("button", name="Suggest a better answer").click()
    editor = bar.locator(".better-answer textarea")
    expect(editor).to_be_focused()
    expect(editor).to_have_value(answer)
    expect(page.get_by_role("button", name="Send", exact=True)).to_have_count(1)
    expect(page.locator("#ask")).to_be_hidden()
    page.keyboard.press("End")
    page.keyboard.type(EDIT)
    save_screenshot(page, "playground-feedback.png", full_page=False)
    bar.get_by_role("button", name="Send", exact=True).click()
    expect(status).to_have_text("Thanks: your answer goes to the raters next to this one.")
    expect(page.locator("#ask")).to_be_visible()
    assert errors == []
    check_feedback(world, answer + EDIT)


def check_feedback(world: dict, better: str) -> None:
    """Two pieces of feedback on the one completion: the thumb, then the better answer, which
    became a task beside the served answer."""
    with world["factory"]() as db:
        stored = db.scalars(select(Feedback).order_by(Feedback.id)).all()
        assert [(f.rating, f.preferred_text) for f in stored] == [
            (FeedbackRating.DOWN, None),
            (None, better.strip()),
        ]
        assert stored[0].completion_id == stored[1].completion_id
        task = db.get(Task, stored[1].task_id)
        assert better.strip() in {link.response.text for link in task.responses}
