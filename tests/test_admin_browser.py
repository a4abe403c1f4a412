"""The admin console in a real browser: the whole loop, from a prompt file to a promoted model.

Headless Chromium (see `tests/browser.py`) drives a real `alignloop run` process on the tiny
model. An admin imports a JSONL file of prompts, starts candidate generation, and (after a rater
has judged tasks through the REST API) starts a round, watches it finish on the round page,
promotes the new version and downloads an export. Screenshots of the dashboard and the round
page are saved with the other test artifacts.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import Browser, Page, expect

from app import migrate
from app.config import Settings
from app.db import make_engine, make_session_factory, session_scope
from app.domain import accounts
from app.models import KeyScope, Role
from tests.browser import SCREENS, log_in, new_context, record_errors, save_screenshot
from tests.helpers import PASSWORD
from tests.live_server import alignloop_run, wait_for

pytestmark = pytest.mark.usefixtures("chromium")  # before the other fixtures: skip fast

ADMIN, RATER = "ada", "rita"
JUDGEMENTS = 36  # more than the `quick` preset's 32 pairs
GENERATION_TIMEOUT_S = 180
ROUND_TIMEOUT_MS = 300_000
PROMPTS = [
    {"messages": [{"role": "user", "content": "How do I keep basil alive indoors?"}]},
    {"prompt": "Explain a mortgage to a teenager.", "tags": ["finance"]},
    {"prompt": "Write a haiku about trains."},
    {"prompt": "How do I keep basil alive indoors?"},  # the first one again
]


@dataclass(frozen=True)
class World:
    base_url: str
    rater_key: str
    admin_key: str


@pytest.fixture
def world(model_settings: Settings, tmp_path: Path) -> Iterator[World]:
    engine = make_engine(model_settings.resolved_database_url)
    migrate.upgrade(engine)
    with session_scope(make_session_factory(engine)) as db:
        admin = accounts.create_user(db, username=ADMIN, password=PASSWORD, role=Role.ADMIN)
        rater = accounts.create_user(db, username=RATER, password=PASSWORD, role=Role.RATER)
        keys = [
            accounts.create_api_key(db, user=user, name="e2e", scope=KeyScope.of_role(user.role))[1]
            for user in (rater, admin)
        ]
    engine.dispose()
    short_answers = {"max_new_tokens": "16"}
    with alignloop_run(model_settings.data_dir, tmp_path / "run.log", short_answers) as server:
        yield World(server.base_url, *keys)


@pytest.fixture
def page(browser: Browser, world: World) -> Iterator[Page]:
    context = new_context(browser, world.base_url, SCREENS["desktop"])
    yield context.new_page()
    context.close()


def test_an_admin_runs_the_loop_from_a_prompt_file_to_a_promoted_model(
    page: Page, world: World, tmp_path: Path
):
    errors = record_errors(page)
    wait_for(lambda: base_model_ready(world), GENERATION_TIMEOUT_S, "the base model")
    log_in(page, ADMIN, PASSWORD)

    import_prompts(page, tmp_path / "prompts.jsonl")
    page.goto("/admin/rounds")
    expect(page.locator("#readiness")).to_contain_text("0 judged pairs to train on")
    generate_candidates(page)
    judge_tasks(world, JUDGEMENTS)

    round_name = run_a_round(page)
    promote(page, round_name)
    download_an_export(page, tmp_path)

    page.goto("/admin")
    judged = page.locator("dl.tiles div:has(dt:text-is('Judgements')) dd")
    assert int(judged.inner_text()) >= JUDGEMENTS
    save_screenshot(page, "admin-dashboard.png")
    assert errors == []


def base_model_ready(world: World) -> bool:
    listed = httpx.get(
        f"{world.base_url}/api/models", headers={"Authorization": f"Bearer {world.admin_key}"}
    ).json()
    return any(version["name"] == "base" and version["status"] == "ready" for version in listed)


def import_prompts(page: Page, path: Path) -> None:
    lines = [json.dumps(prompt) for prompt in PROMPTS] + ["{not json"]
    path.write_text("\n".join(lines) + "\n")
    page.goto("/admin/data")
    page.set_input_files("input[name=file]", path)
    page.fill("input[name=tags]", "e2e")
    page.click("form[action='/admin/data/import'] button[type=submit]")
    report = page.locator(".import-report")
    expect(report.locator("dd.created")).to_have_text("3")
    expect(report.locator("dd.duplicates")).to_have_text("1")
    expect(report.locator("table.skipped-rows tbody tr")).to_have_count(1)
    expect(report.locator("table.skipped-rows tbody td").first).to_have_text("5")


def generate_candidates(page: Page) -> None:
    page.goto("/admin")
    page.fill("input[name=per_prompt]", "2")
    page.fill("input[name=overlap]", "1")
    page.click("form[action='/admin/generations'] button[type=submit]")
    # The page follows the job on its own (static/live.js): nobody reloads it.
    job = page.locator("#jobs table.jobs tbody tr").first
    expect(job.locator("td").nth(3)).to_contain_text(
        "prompts answered", timeout=GENERATION_TIMEOUT_S * 1000
    )
    expect(job.locator("td").nth(2)).to_have_text("succeeded", timeout=GENERATION_TIMEOUT_S * 1000)


def judge_tasks(world: World, count: int) -> None:
    """The rater prefers the shorter answer, through the REST API."""
    headers = {"Authorization": f"Bearer {world.rater_key}"}
    with httpx.Client(base_url=world.base_url, headers=headers) as client:
        for _ in range(count):
            task = client.get("/api/tasks/next")
            assert task.status_code == 200, task.text
            answers = sorted(task.json()["responses"], key=lambda answer: len(answer["text"]))
            ranking = [answer["id"] for answer in answers]
            judged = client.post(
                f"/api/tasks/{task.json()['task_id']}/judgement", json={"ranking": ranking}
            )
            assert judged.status_code == 201, judged.text


def run_a_round(page: Page) -> str:
    """Start a round from the rounds page and follow it live to the end; its version's name."""
    page.goto("/admin/rounds")
    page.select_option("select[name=algorithm]", "dpo")  # the default
    page.select_option("select[name=preset]", "quick")
    page.click("form[action='/admin/rounds'] button[type=submit]")
    expect(page).to_have_url(re.compile(r"/admin/rounds/\d+$"))
    round_id = page.locator("#round").get_attribute("data-round")
    expect(page.locator("#round-status")).to_have_text("succeeded", timeout=ROUND_TIMEOUT_MS)
    expect(page.locator("#pipeline li.done")).to_have_count(6)
    expect(page.locator("#curves figure.curve").first).to_be_visible()
    expect(page.locator("#log li").first).to_contain_text("started on")
    save_screenshot(page, "admin-round.png")
    return f"round-{round_id}"


def promote(page: Page, name: str) -> None:
    page.goto("/admin/models")
    row = page.locator("table.versions tbody tr", has_text=name).first
    row.locator("form[action$='/promote'] button").click()
    expect(page.locator("tr.current strong")).to_have_text(name)


def download_an_export(page: Page, folder: Path) -> None:
    page.goto("/admin/data")
    form = page.locator("form[action='/api/export/preferences']")
    form.locator("select[name=format]").select_option("trl")
    with page.expect_download() as download:
        form.locator("button[type=submit]").click()
    saved = folder / download.value.suggested_filename
    download.value.save_as(saved)
    rows = [json.loads(line) for line in saved.read_text().splitlines()]
    assert len(rows) >= JUDGEMENTS and {"chosen", "rejected"} <= set(rows[0])
