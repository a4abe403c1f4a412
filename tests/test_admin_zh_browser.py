"""The admin console in Chinese, in a real browser: an admin whose language is Chinese opens
the dashboard, a running round, the models and the quality pages, and reads Chinese everywhere,
the charts' and the live round's script-drawn labels included.

Headless Chromium (see `tests/browser.py`) drives a real `alignloop web` process over a seeded
SQLite database (`tests.console_zh.seed_console`); screenshots go to `test-artifacts/`, and the
dashboard's is the README's Chinese console screenshot.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Page, expect
from sqlalchemy import Engine

from app.db import make_session_factory, session_scope
from app.domain import accounts
from app.models import Role
from tests.browser import ARTIFACTS, SCREENS, log_in, new_context, record_errors, save_screenshot
from tests.conftest import REDIS_URL, make_settings
from tests.console_zh import english_left, seed_console
from tests.helpers import PASSWORD
from tests.live_server import alignloop_web

pytestmark = pytest.mark.usefixtures("chromium")  # before the other fixtures: skip fast
SQLITE = pytest.mark.parametrize("committed_engine", ["sqlite"], indirect=True)  # one is enough

ADMIN, RATER = "ada", "rita"
README_SCREENSHOT = Path(__file__).parents[1] / "docs" / "screenshot-admin-zh.png"

# The page's text as shown, with the words people read in attributes (placeholders, titles,
# labels for screen readers, button values).
SHOWN_TEXT = """() => [document.body.innerText, ...[...document.querySelectorAll("*")].flatMap(
  (element) => ["placeholder", "title", "aria-label", "alt", "value"]
    .map((name) => element.getAttribute(name) || ""))].join(" ")"""

# A chart's axis labels, as uPlot draws them.
AXIS_LABELS = (
    """(selector) => document.querySelector(selector).chart.axes.map((axis) => axis.label)"""
)


@pytest.fixture
def round_ids(committed_engine: Engine, tmp_path: Path) -> dict[str, int]:
    with session_scope(make_session_factory(committed_engine)) as db:
        admin = accounts.create_user(db, username=ADMIN, password=PASSWORD, role=Role.ADMIN)
        rater = accounts.create_user(db, username=RATER, password=PASSWORD, role=Role.RATER)
        return seed_console(db, make_settings(tmp_path / "seed"), admin, rater)


@pytest.fixture
def page(browser: Browser, committed_engine: Engine, round_ids, tmp_path: Path) -> Iterator[Page]:
    settings = {"redis_url": REDIS_URL, "inference": "celery"}  # the web tier without torch
    with alignloop_web(committed_engine, tmp_path / "data", tmp_path / "web.log", settings) as web:
        context = new_context(browser, web.base_url, SCREENS["desktop"])
        yield context.new_page()
        context.close()


def assert_all_chinese(page: Page) -> None:
    assert english_left(page.evaluate(SHOWN_TEXT)) == [], page.url


@SQLITE
def test_a_chinese_admin_reads_the_console_in_chinese(page: Page, round_ids: dict[str, int]):
    errors = record_errors(page)
    log_in(page, ADMIN, PASSWORD)

    page.goto("/admin")
    expect(page.locator("html")).to_have_attribute("lang", "zh-CN")
    expect(page.locator(".admin-nav a")).to_have_text(
        ["概览", "数据", "质量", "训练轮次", "模型", "用户", "评分准则", "API 文档"]
    )
    expect(page.locator("main h1")).to_have_text("概览")
    expect(page.locator("#jobs thead th")).to_have_text(
        ["#", "作业", "状态", "进度", "结果", "创建时间", "耗时"]
    )
    expect(page.locator("#jobs tbody tr").last.locator("td").nth(1)).to_have_text("生成候选回答")
    expect(page.locator("#chart-judgements .plot canvas")).to_be_visible()
    assert page.evaluate(AXIS_LABELS, "#chart-judgements .plot") == ["日期", "每日评判数"]
    assert_all_chinese(page)
    save_screenshot(page, "admin-dashboard-zh.png", full_page=False)
    shutil.copyfile(ARTIFACTS / "admin-dashboard-zh.png", README_SCREENSHOT)

    page.goto(f"/admin/rounds/{round_ids['running']}")
    expect(page.locator("#round-status")).to_have_text("运行中")
    expect(page.locator("#round-eta")).to_contain_text("约剩")
    expect(page.locator("#curves figure.curve figcaption")).to_have_count(2)
    expect(page.locator("#curves figure.curve figcaption").first).to_contain_text("策略优化 · ")
    expect(page.locator("#curves figure.curve figcaption").first).to_contain_text("范围")
    assert page.evaluate(AXIS_LABELS, "#curves figure.curve .plot")[0] == "步数"
    expect(page.locator("#log li b").first).to_have_text("策略优化")
    assert_all_chinese(page)
    save_screenshot(page, "admin-round-zh.png")

    page.goto(f"/admin/rounds/{round_ids['finished']}")
    expect(page.locator("#win-rate dt")).to_have_text("对父版本的胜率（奖励模型）")
    assert_all_chinese(page)

    page.goto("/admin/models")
    expect(page.locator("main h1")).to_have_text("模型版本")
    expect(page.locator("table.leaderboard thead th").nth(2)).to_have_text("评分")
    assert_all_chinese(page)
    save_screenshot(page, "admin-models-zh.png")

    page.goto("/admin/quality")
    expect(page.locator("main h1")).to_have_text("质量控制")
    expect(page.locator("input[name=reason]")).to_have_attribute("placeholder", "原因（可选）")
    assert_all_chinese(page)
    save_screenshot(page, "admin-quality-zh.png")
    assert errors == []
