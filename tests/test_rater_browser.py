"""The rater page in a real browser: a rater works through tasks with the keyboard alone.

Headless Chromium (see `tests/browser.py`) drives a real `alignloop run` process over a seeded
SQLite database. The rater judges three tasks (a pairwise choice with a strength, a ranking
with a tie), rates, flags, critiques and rewrites with shortcut keys, skips a task with a
reason, and uses the help overlay; the test then reads back from the database exactly what
those keys meant. It also saves screenshots (desktop and phone width).

With long answers at 1280x800, the vote bar stays in view: a pair is judged, and four answers
are ranked, with the mouse and without scrolling to the controls.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from playwright.sync_api import (
    Browser,
    Page,
    expect,
)
from sqlalchemy import select
from sqlalchemy.orm import Session

from app import migrate
from app.config import Settings
from app.db import make_engine, make_session_factory, session_scope
from app.domain import accounts
from app.models import Assignment, AssignmentStatus, Judgement, Response, Role
from tests.browser import (
    SCREENS,
    database,
    log_in,
    new_context,
    outside_the_window,
    record_errors,
    save_screenshot,
)
from tests.helpers import PASSWORD, create_task
from tests.live_server import alignloop_run

RATER = "rita"
TASK_SIZES = (2, 2, 3, 3, 3)  # responses per task: two pairwise tasks, three to rank
JUDGEMENTS = 3
REWRITE_EDIT = " Also, check the result."
CRITIQUE = "Both answers skip the units."
SKIP_REASON = "I have never boiled an egg."
# Each task's answer texts: the keyboard test's short ones, and long ones that fill the screen.
KEYBOARD_TASKS = [
    [f"Answer {index} to question {number}." for index in range(size)]
    for number, size in enumerate(TASK_SIZES, start=1)
]


def long_answer(variant: str, steps: int) -> str:
    return "\n\n".join(
        f"Step {step}: keep the water at a {variant} boil and wait a little. " * 3
        for step in range(1, steps + 1)
    )


LONG_PAIR = [[long_answer("rolling", 30), long_answer("gentle", 30)]]
FOUR_LONG = [[long_answer(variant, 12) for variant in ("rolling", "gentle", "fast", "slow")]]
TOKYO = "Asia/Tokyo"  # UTC+9 all year: the lease's local time is known


# --- what the rater does ---------------------------------------------------------------------


@dataclass(frozen=True)
class Plan:
    """The keys that decide a task, and the ranking they mean in labels (a tuple is a tie)."""

    keys: tuple[str, ...]
    ranking: tuple[str | tuple[str, ...], ...]
    strength: int | None = None
    strip: tuple[str, ...] = ()  # the ranking strip's chips afterwards (3+ responses only)


PAIRWISE = Plan(keys=("b", "2"), ranking=("B", "A"), strength=2)
# Pick A and C, undo C, clear it all; then C best, A second and B tied with A.
RANKING = Plan(
    keys=("a", "c", "Backspace", "0", "c", "a", "=", "b"),
    ranking=("C", ("A", "B")),
    strip=("1. C", "2. A", "= 2. B"),
)


@dataclass(frozen=True)
class ShownTask:
    """The task on the page, as the rater sees it."""

    task_id: int
    pairwise: bool
    ids: dict[str, int]  # response id by label (A, B, ...)

    @property
    def plan(self) -> Plan:
        return PAIRWISE if self.pairwise else RANKING

    def response_ids(self, labels: str | tuple[str, ...]) -> int | list[int]:
        if isinstance(labels, str):
            return self.ids[labels]
        return sorted(self.ids[label] for label in labels)  # stored ties are sorted by id


@dataclass
class Verdict:
    """One judgement: what the test expects, or what the database holds."""

    task_id: int
    ranking: list
    strength: int | None
    ratings: dict[str, dict[str, int]] | None = None
    flags: dict[str, list[str]] = field(default_factory=dict)
    critique: str | None = None
    rewrite: str | None = None


# --- fixtures --------------------------------------------------------------------------------

pytestmark = pytest.mark.usefixtures("chromium")  # before the other fixtures: skip fast


@dataclass(frozen=True)
class Seeded:
    database_url: str
    rater_id: int
    texts: dict[int, str]  # response text by id


@pytest.fixture
def seeded(request: pytest.FixtureRequest, model_settings: Settings) -> Seeded:
    """A committed database with one rater and open tasks, each needing one judgement: the
    keyboard test's five, or the answer texts of each task given as the fixture's parameter."""
    answers = getattr(request, "param", KEYBOARD_TASKS)
    url = model_settings.resolved_database_url
    engine = make_engine(url)
    migrate.upgrade(engine)
    with session_scope(make_session_factory(engine)) as db:
        rater = accounts.create_user(db, username=RATER, password=PASSWORD, role=Role.RATER)
        tasks = [
            create_task(
                db, overlap=1, prompt=f"Question {number}: how long to boil an egg?", texts=texts
            )
            for number, texts in enumerate(answers, start=1)
        ]
        texts = {link.response_id: link.response.text for task in tasks for link in task.responses}
        seeded = Seeded(database_url=url, rater_id=rater.id, texts=texts)
    engine.dispose()
    return seeded


@pytest.fixture
def page(browser: Browser, base_url: str) -> Iterator[Page]:
    context = new_context(browser, base_url, SCREENS["desktop"])
    yield context.new_page()
    context.close()


@pytest.fixture
def base_url(
    chromium: Path, seeded: Seeded, model_settings: Settings, tmp_path: Path
) -> Iterator[str]:
    with alignloop_run(model_settings.data_dir, tmp_path / "run.log") as server:
        yield server.base_url


# --- page helpers ----------------------------------------------------------------------------


def press(page: Page, *keys: str) -> None:
    for key in keys:
        page.keyboard.press(key)


def shown_task(page: Page) -> ShownTask:
    form = page.locator("form#judgement")
    cards = page.locator("article.response[data-label]")
    return ShownTask(
        task_id=int(form.get_attribute("data-task-id")),
        pairwise=form.get_attribute("data-pairwise") == "true",
        ids={
            card.get_attribute("data-label"): int(card.get_attribute("data-response-id"))
            for card in cards.all()
        },
    )


def wait_for_next_task(page: Page, previous: ShownTask) -> ShownTask:
    """Wait until a submission has swapped in another task (or shown an error)."""
    page.wait_for_function(
        """previous => {
            const form = document.getElementById("judgement");
            const error = document.querySelector("#task-area .error");
            return error || (form && form.dataset.taskId !== previous);
        }""",
        arg=str(previous.task_id),
    )
    expect(page.locator("#task-area .error")).to_have_count(0)
    expect(page.locator("#task-area .notice")).to_be_visible()
    return shown_task(page)


def focused(page: Page, script: str) -> str:
    """`script` evaluated on the focused element (`element`)."""
    return page.evaluate(f"(element => {script})(document.activeElement)")


# --- the rater's actions (keyboard only) -----------------------------------------------------


def decide(page: Page, task: ShownTask) -> Verdict:
    plan = task.plan
    press(page, *plan.keys)
    if plan.strip:
        expect(page.locator("#ranking-strip .chip")).to_have_text(list(plan.strip))
    return Verdict(
        task_id=task.task_id,
        ranking=[task.response_ids(labels) for labels in plan.ranking],
        strength=plan.strength,
    )


def rate_with_digits(page: Page, task: ShownTask, scores: tuple[int, ...]) -> dict:
    """`r` focuses the first rating row; each digit scores the focused row and moves on."""
    press(page, "r")
    ratings: dict[str, dict[str, int]] = {}
    for score in scores:
        label = focused(page, "element.closest('article.response').dataset.label")
        # The row's radios are named rating_<response id>_<aspect> (the stored aspect; the
        # page shows its translated name).
        field = focused(page, "element.closest('.rating-row').querySelector('input').name")
        aspect = field.split("_", 2)[2]
        press(page, str(score))
        ratings.setdefault(str(task.ids[label]), {})[aspect] = score
    return ratings


def rewrite_preferred(page: Page, task: ShownTask, texts: dict[int, str]) -> str:
    """`w` opens the editor prefilled with the preferred response; edit it, leave with Esc."""
    preferred = texts[task.ids[task.plan.ranking[0]]]
    editor = page.locator("#rewrite")
    press(page, "w")
    expect(editor).to_be_focused()
    expect(editor).to_have_value(preferred)
    press(page, "End")
    page.keyboard.type(REWRITE_EDIT)
    press(page, "Escape")
    expect(editor).not_to_be_focused()
    return preferred + REWRITE_EDIT


def flag_first_response(page: Page, task: ShownTask) -> dict[str, list[str]]:
    """`f` focuses the first flag box; Space ticks it."""
    press(page, "f")
    label = focused(page, "element.closest('article.response').dataset.label")
    flag = focused(page, "element.value")
    press(page, "Space")
    return {str(task.ids[label]): [flag]}


def write_critique(page: Page) -> str:
    press(page, "n")
    expect(page.locator("#critique")).to_be_focused()
    page.keyboard.type(CRITIQUE)
    press(page, "Escape")
    return CRITIQUE


def judge(page: Page, task: ShownTask, number: int, texts: dict[int, str]) -> Verdict:
    """Decide the task, add the extras for the `number`th judgement, submit with Enter."""
    verdict = decide(page, task)
    if number == 0:
        verdict.ratings = rate_with_digits(page, task, scores=(5, 6))
        verdict.rewrite = rewrite_preferred(page, task, texts)
    elif number == 1:
        verdict.flags = flag_first_response(page, task)
        verdict.critique = write_critique(page)
    press(page, "Enter")
    return verdict


def skip(page: Page, reason: str) -> None:
    """`s` opens the skip box with the reason focused; Enter there skips."""
    press(page, "s")
    expect(page.locator("#skip-reason")).to_be_focused()
    page.keyboard.type(reason)
    press(page, "Enter")


def should_skip(task: ShownTask, judged: list[ShownTask], skipped: bool) -> bool:
    """Skip once: the task after the last judgement, or earlier if judging this task would not
    bring a kind (pairwise or ranked) still missing, so that both kinds get judged whatever
    order the server hands tasks out in."""
    if skipped:
        return False
    kinds = {judged_task.pairwise for judged_task in judged}
    return len(judged) == JUDGEMENTS or (task.pairwise in kinds and len(kinds) == 1)


def toggle_help(page: Page) -> None:
    help_overlay = page.locator("#help")
    press(page, "?")
    expect(help_overlay).to_be_visible()
    press(page, "Escape")
    expect(help_overlay).to_be_hidden()


# --- reading the database back ---------------------------------------------------------------


def stored_verdict(db: Session, judgement: Judgement) -> Verdict:
    rewrite = (
        db.get(Response, judgement.rewrite_response_id) if judgement.rewrite_response_id else None
    )
    return Verdict(
        task_id=judgement.task_id,
        ranking=judgement.ranking,
        strength=judgement.strength,
        ratings=judgement.ratings,
        flags=judgement.flags,
        critique=judgement.critique,
        rewrite=rewrite.text if rewrite else None,
    )


# --- the test ----------------------------------------------------------------------------------


def test_rater_judges_rates_rewrites_and_skips_with_the_keyboard_alone(
    page: Page, browser: Browser, base_url: str, seeded: Seeded
):
    errors = record_errors(page)
    log_in(page, RATER, PASSWORD)
    page.goto("/rate")
    page.evaluate("window.__marker = 1")  # survives only if no task reloads the page
    toggle_help(page)

    verdicts: list[Verdict] = []
    judged: list[ShownTask] = []
    skipped: ShownTask | None = None
    task = shown_task(page)
    while len(judged) < JUDGEMENTS or skipped is None:
        if should_skip(task, judged, skipped is not None):
            skip(page, SKIP_REASON)
            skipped = task
        else:
            verdicts.append(judge(page, task, len(judged), seeded.texts))
            judged.append(task)
        task = wait_for_next_task(page, task)
        assert page.evaluate("window.__marker") == 1, "the page reloaded instead of swapping"

    assert {judged_task.pairwise for judged_task in judged} == {True, False}
    assert errors == []
    with database(seeded.database_url) as db:
        check_judgements(db, seeded.rater_id, verdicts)
        check_skip(db, seeded.rater_id, skipped)
    check_layouts(browser, base_url, signed_in=page.context.storage_state())


def check_judgements(db: Session, rater_id: int, expected: list[Verdict]) -> None:
    judgements = db.scalars(
        select(Judgement).where(Judgement.rater_id == rater_id).order_by(Judgement.id)
    ).all()
    assert [stored_verdict(db, judgement) for judgement in judgements] == expected
    spent = [judgement.time_spent_ms for judgement in judgements]
    assert all(ms and ms > 0 for ms in spent), spent
    rewrites = db.scalars(select(Response.id).where(Response.author_id == rater_id)).all()
    linked = [judgement.rewrite_response_id for judgement in judgements]
    assert len(rewrites) == 1 and linked.count(rewrites[0]) == 1, (rewrites, linked)


def check_skip(db: Session, rater_id: int, skipped: ShownTask) -> None:
    skips = db.scalars(select(Assignment).where(Assignment.status == AssignmentStatus.SKIPPED))
    assert [(lease.task_id, lease.rater_id, lease.skip_reason) for lease in skips] == [
        (skipped.task_id, rater_id, SKIP_REASON)
    ]


def check_layouts(browser: Browser, base_url: str, signed_in: dict) -> None:
    """The rater's current task with every collapsible part open, on a desktop and a phone:
    screenshots, no errors, and nothing wider than the screen."""
    widths = {
        name: page_width(browser, base_url, signed_in, name, viewport)
        for name, viewport in SCREENS.items()
    }
    too_wide = {name: width for name, width in widths.items() if width > SCREENS[name]["width"] + 1}
    assert too_wide == {}, f"pages wider than the screen (px): {too_wide}"


def page_width(
    browser: Browser, base_url: str, signed_in: dict, name: str, viewport: dict[str, int]
) -> int:
    """How wide /rate lays out on `viewport` (its scrollWidth), saving a screenshot."""
    context = new_context(browser, base_url, viewport, signed_in)
    page = context.new_page()
    errors = record_errors(page)
    page.goto("/rate")
    press(page, "r", "w", "Escape", "s")  # ratings and flags, better answer, skip box
    save_screenshot(page, f"rate-{name}.png")
    width, inner_width = page.evaluate("[document.documentElement.scrollWidth, innerWidth]")
    context.close()
    assert errors == [] and inner_width == viewport["width"], (errors, inner_width)
    return width


# --- long answers: the vote bar in view -------------------------------------------------------


def open_task_at(browser: Browser, base_url: str, *, timezone: str = "UTC") -> Page:
    """The rater's task page at 1280x800 in `timezone`, signed in, at the top of the page."""
    context = browser.new_context(
        base_url=base_url, viewport=SCREENS["desktop"], timezone_id=timezone
    )
    page = context.new_page()
    log_in(page, RATER, PASSWORD)
    page.goto("/rate")
    assert page.evaluate("document.documentElement.scrollHeight") > 2 * SCREENS["desktop"]["height"]
    return page


def saved_last_task(page: Page) -> None:
    expect(page.locator("#task-area .notice")).to_have_text("Saved.")
    expect(page.locator("#task-area .empty")).to_be_visible()


@pytest.mark.parametrize("seeded", [LONG_PAIR], indirect=True)
def test_the_vote_bar_stays_in_view_under_long_answers(
    browser: Browser, base_url: str, seeded: Seeded
):
    page = open_task_at(browser, base_url, timezone=TOKYO)
    errors = record_errors(page)
    controls = ".vote-bar .choice, #submit"
    assert outside_the_window(page, controls) == []
    page.mouse.wheel(0, 1200)  # halfway down the answers
    page.wait_for_function("scrollY > 1000")
    assert outside_the_window(page, controls) == []
    save_screenshot(page, "rate-long-answers.png", full_page=False)
    check_local_lease_time(page)

    task = shown_task(page)
    check_touch_hints(browser, base_url, signed_in=page.context.storage_state())
    page.locator(".vote-bar .choice", has_text="B is better").click()
    page.locator(".vote-bar .choice", has_text="Clearly").click()
    page.locator("#submit").click()
    saved_last_task(page)
    assert errors == []
    with database(seeded.database_url) as db:
        judgement = db.scalar(select(Judgement))
        assert (judgement.ranking, judgement.strength) == ([task.ids["B"], task.ids["A"]], 2)


def check_local_lease_time(page: Page) -> None:
    """The lease's end, written in UTC, is shown in the browser's time zone (UTC+9)."""
    moment = page.locator(".lease time")
    utc = moment.get_attribute("datetime")  # 2026-12-07T19:28:00Z
    hour = (int(utc[11:13]) + 9) % 24
    expect(moment).to_have_text(f"{hour:02d}:{utc[14:16]}")
    expect(moment).to_have_attribute("title", f"{utc[11:16]} UTC")


@pytest.mark.parametrize("seeded", [FOUR_LONG], indirect=True)
def test_four_long_answers_are_ranked_without_scrolling_to_the_controls(
    browser: Browser, base_url: str, seeded: Seeded
):
    page = open_task_at(browser, base_url)
    errors = record_errors(page)
    assert outside_the_window(page, ".vote-bar select, .vote-bar .chip, #submit") == []
    task = shown_task(page)
    for label, rank in {"A": "2", "B": "1", "C": "3", "D": "3"}.items():
        page.select_option(f"select[name=rank_{task.ids[label]}]", rank)
    expect(page.locator("#ranking-strip .chip")).to_have_text(["1. B", "2. A", "3. C", "= 3. D"])
    assert page.evaluate("scrollY") == 0
    page.evaluate("document.querySelectorAll('details.extras').forEach(d => { d.open = true; })")
    assert score_rows_that_wrap(page) == []
    save_screenshot(page, "rate-ranking.png", full_page=False)

    page.locator("#submit").click()
    saved_last_task(page)
    assert errors == []
    with database(seeded.database_url) as db:
        ranking = db.scalar(select(Judgement.ranking))
    assert ranking == [task.ids["B"], task.ids["A"], sorted([task.ids["C"], task.ids["D"]])]


def score_rows_that_wrap(page: Page) -> list[str]:
    """The rating rows whose seven score buttons do not share one line."""
    return page.evaluate(
        """Array.from(document.querySelectorAll(".rating-row")).filter(row => {
            const tops = new Set(Array.from(row.querySelectorAll(".score span"),
                span => Math.round(span.getBoundingClientRect().top)));
            return tops.size !== 1;
        }).map(row => row.getAttribute("aria-label"))"""
    )


def check_touch_hints(browser: Browser, base_url: str, signed_in: dict) -> None:
    """On a touch screen the page says what to tap, and shows no keys to press."""
    context = browser.new_context(
        base_url=base_url, viewport=SCREENS["phone"], has_touch=True, storage_state=signed_in
    )
    page = context.new_page()
    page.goto("/rate")
    expect(page.locator(".touch-hint")).to_be_visible()
    expect(page.locator(".keys-hint")).to_be_hidden()
    expect(page.locator("#task-area kbd").first).to_be_hidden()
    context.close()
