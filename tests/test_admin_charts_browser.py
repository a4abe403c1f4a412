"""The admin console's charts in a real browser: axes with ticks, a constant drawn flat, a few
points drawn as points, and a running round's curves that grow as its points arrive.

Headless Chromium (see `tests/browser.py`) drives a real `alignloop web` process (the web tier
alone: no worker here takes or fails the round) over a seeded SQLite database: a running round
with a constant β, a rising reward and a two-point loss, a finished job, a few judgements and a
served base version. The test reads uPlot's scales and data back from the page, and saves
screenshots of the dashboard, the round page and the API docs page (opened from the console's
link).
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Page, expect
from sqlalchemy import Engine

from app.db import make_session_factory, session_scope
from app.domain import accounts, rounds
from app.models import Algorithm, Job, Judgement, Role, Round, RoundStage, RunStatus, utcnow
from tests.browser import SCREENS, log_in, new_context, record_errors, save_screenshot
from tests.conftest import REDIS_URL
from tests.helpers import PASSWORD, create_task, policy_versions
from tests.live_server import alignloop_web

pytestmark = pytest.mark.usefixtures("chromium")  # before the other fixtures: skip fast
SQLITE = pytest.mark.parametrize("committed_engine", ["sqlite"], indirect=True)  # one is enough

ADMIN, RATER = "ada", "rita"
BETA = 0.05
REWARD_STEPS = 12
LIVE_TIMEOUT_MS = 15_000

# A chart's scale, its data and the pixel height of each point, read from uPlot in the page.
READ_CHART = """(name) => {
  const figure = [...document.querySelectorAll("#curves figure.curve")]
    .find((candidate) => candidate.dataset.name === name);
  const plot = figure.querySelector(".plot").chart;
  return {
    min: plot.scales.y.min, max: plot.scales.y.max, values: plot.data[1],
    heights: plot.data[1].map((value) => plot.valToPos(value, "y")),
    points: plot.series[1].points.show(plot, 1),
    xTicks: plot.axes[0]._values, yTicks: plot.axes[1]._values,
    labels: [plot.axes[0].label, plot.axes[1].label],
  };
}"""


@pytest.fixture
def round_id(committed_engine: Engine) -> int:
    """The seeded database's running round."""
    with session_scope(make_session_factory(committed_engine)) as db:
        accounts.create_user(db, username=ADMIN, password=PASSWORD, role=Role.ADMIN)
        rater = accounts.create_user(db, username=RATER, password=PASSWORD, role=Role.RATER)
        judge_on_recent_days(db, rater)
        policy_versions(db, "base")  # served, as after `alignloop models pull-default`
        db.add(finished_job())
        return running_round(db)


def judge_on_recent_days(db, rater) -> None:
    for days_ago in (0, 0, 1, 3):
        task = create_task(db)
        db.add(
            Judgement(
                task_id=task.id,
                rater_id=rater.id,
                ranking=[link.response_id for link in task.responses],
                created_at=utcnow() - timedelta(days=days_ago),
            )
        )


def finished_job() -> Job:
    started = utcnow() - timedelta(hours=1)
    return Job(
        kind="generate_candidates",
        status=RunStatus.SUCCEEDED,
        progress=1.0,
        started_at=started,
        finished_at=started + timedelta(minutes=2, seconds=5),
        result={"tasks": 1},
    )


def running_round(db) -> int:
    """A PPO round in its policy stage, held by a worker that is not this test's server."""
    round_ = Round(
        algorithm=Algorithm.PPO,
        preset="quick",
        config={},
        status=RunStatus.RUNNING,
        stage=RoundStage.POLICY,
        progress=0.5,
        started_at=utcnow(),
        stage_started_at=utcnow(),
        lease_owner="a worker elsewhere",
        lease_expires_at=utcnow() + timedelta(hours=1),
    )
    db.add(round_)
    db.flush()
    for step in (1, 2):
        loss = {"loss": 0.69 - 0.1 * step}
        rounds.record_points(
            db, round_id=round_.id, stage=RoundStage.REWARD_MODEL, step=step, values=loss
        )
    for step in range(1, REWARD_STEPS + 1):
        values = {"beta": BETA, "reward": 0.1 * step + 0.05 * (step % 3)}
        rounds.record_points(
            db, round_id=round_.id, stage=RoundStage.POLICY, step=step, values=values
        )
    return round_.id


@pytest.fixture
def base_url(committed_engine: Engine, round_id: int, tmp_path: Path) -> Iterator[str]:
    settings = {"redis_url": REDIS_URL, "inference": "celery"}  # the web tier without torch
    with alignloop_web(committed_engine, tmp_path / "data", tmp_path / "web.log", settings) as web:
        yield web.base_url


@pytest.fixture
def page(browser: Browser, base_url: str) -> Iterator[Page]:
    context = new_context(browser, base_url, SCREENS["desktop"])
    yield context.new_page()
    context.close()


@SQLITE
def test_a_constant_series_is_a_flat_line_in_the_middle_of_its_axes(
    page: Page, round_id: int, committed_engine: Engine
):
    errors = record_errors(page)
    log_in(page, ADMIN, PASSWORD)
    page.goto(f"/admin/rounds/{round_id}")
    expect(page.locator("#curves figure.curve")).to_have_count(3)

    beta = page.evaluate(READ_CHART, "policy · beta")
    assert len(set(beta["heights"])) == 1  # every point at one height: flat
    assert beta["min"] < BETA < beta["max"]
    assert abs((BETA - beta["min"]) - (beta["max"] - BETA)) < 1e-9  # in the middle
    assert len(beta["xTicks"]) >= 2 and len(beta["yTicks"]) >= 2
    assert beta["labels"] == ["Step", "beta"]
    assert beta["points"]  # twelve points are few enough to show each

    reward = page.evaluate(READ_CHART, "policy · reward")
    assert reward["min"] < min(reward["values"]) and max(reward["values"]) < reward["max"]
    loss = page.evaluate(READ_CHART, "reward_model · loss")
    assert loss["points"] and len(loss["values"]) == 2
    save_screenshot(page, "admin-round-charts.png")

    add_policy_points(committed_engine, round_id, step=REWARD_STEPS + 1)
    page.wait_for_function(
        """(count) => [...document.querySelectorAll("#curves figure.curve")]
          .find((figure) => figure.dataset.name === "policy · beta")
          .querySelector(".plot").chart.data[0].length === count""",
        arg=REWARD_STEPS + 1,
        timeout=LIVE_TIMEOUT_MS,
    )
    assert len(set(page.evaluate(READ_CHART, "policy · beta")["heights"])) == 1
    assert errors == []


@SQLITE
def test_the_dashboard_charts_days_names_jobs_and_links_the_api_docs(page: Page):
    errors = record_errors(page)
    log_in(page, ADMIN, PASSWORD)
    page.goto("/admin")
    expect(page.locator("#chart-judgements .plot canvas")).to_be_visible()
    scale = page.evaluate(
        """() => { const plot = document.querySelector("#chart-judgements .plot").chart;
          return [plot.scales.y.min, plot.scales.y.max, plot.axes[0]._values.length]; }"""
    )
    assert scale[0] == 0 and scale[1] > 2 and scale[2] >= 2  # from zero, above today's 2
    job = page.locator("#jobs tbody tr").first
    expect(job.locator("td").nth(1)).to_have_text("Generate candidates")
    expect(job.locator("td").last).to_have_text("2 min 05 s")
    save_screenshot(page, "admin-dashboard-charts.png")

    page.click(".admin-nav a[href='/docs']")
    expect(page.locator(".swagger-ui .info .title")).to_contain_text("alignloop")
    expect(page.locator(".opblock").first).to_be_visible()
    save_screenshot(page, "api-docs.png", full_page=False)  # the whole API is many screens
    assert errors == []


def add_policy_points(engine: Engine, round_id: int, *, step: int) -> None:
    """What a worker would record next, committed behind the page's back."""
    with session_scope(make_session_factory(engine)) as db:
        values = {"beta": BETA, "reward": 0.1 * step}
        rounds.record_points(
            db, round_id=round_id, stage=RoundStage.POLICY, step=step, values=values
        )
