"""The admin console's dashboard, round and model pages: what they show, and their buttons."""

from __future__ import annotations

import json
import re
from datetime import timedelta

import pytest
from sqlalchemy import func, select

from app.domain import dashboard, leaderboard, rounds
from app.models import (
    Algorithm,
    Job,
    Judgement,
    ModelKind,
    ModelStatus,
    ModelVersion,
    Round,
    RoundStage,
    RunStatus,
    utcnow,
)
from app.web.i18n import translate
from tests.console_zh import english_left, seed_console
from tests.helpers import (
    ab_judgement,
    browser_login,
    create_task,
    html,
    policy_versions,
    ready_for_a_round,
)

ADMIN_PAGES = ["/admin", "/admin/rounds", "/admin/models"]


@pytest.mark.parametrize("path", ADMIN_PAGES)
def test_raters_cannot_open_the_console(client, rater, path):
    browser_login(client, rater.username)
    assert client.get(path).status_code == 403


def test_the_dashboard_counts_what_was_collected_per_day(client, db, admin, make_user):
    raters = [make_user(username=f"counted-{index}") for index in range(3)]
    now = utcnow()
    for days_ago, rater in [(0, raters[0]), (0, raters[1]), (2, raters[0]), (12, raters[2])]:
        task = create_task(db)
        first, second = (link.response_id for link in task.responses)
        db.add(
            Judgement(
                task_id=task.id,
                rater_id=rater.id,
                ranking=[first, second],
                created_at=now - timedelta(days=days_ago),
            )
        )
    db.commit()

    figures = dashboard.collection(db)
    assert figures.judgements == 4 and figures.active_raters == 2 and figures.last_24h == 2
    assert len(figures.days) == dashboard.HISTORY_DAYS and figures.days[-1].day == now.date()
    by_day = {day.day: (day.judgements, day.raters) for day in figures.days}
    assert by_day[now.date()] == (2, 2) and by_day[(now - timedelta(days=2)).date()] == (1, 1)
    assert sum(day.judgements for day in figures.days) == 4

    browser_login(client, admin.username)
    page = html(client.get("/admin"))
    tiles = {div.dt.text: div.dd.text for div in page.select("dl.tiles div")}
    assert tiles["Judgements"] == "4" and tiles["Active raters (7 days)"] == "2"
    chart = json.loads(page.select_one("figure#chart-judgements")["data-chart"])
    assert len(chart["x"]) == len(chart["y"]) == dashboard.HISTORY_DAYS
    assert chart["x"][-1] == now.date().isoformat() and chart["y"][-1] == 2
    assert chart["time"] and chart["bars"] and chart["yLabel"] == "Judgements per day"


def test_the_dashboard_names_work_that_lost_its_worker(client, db, admin):
    stale = utcnow() - timedelta(minutes=5)
    db.add(
        Job(
            kind="generate_candidates",
            status=RunStatus.RUNNING,
            lease_owner="gone",
            lease_expires_at=stale,
        )
    )
    db.add(Round(status=RunStatus.QUEUED, created_at=utcnow() - timedelta(hours=1)))
    db.commit()
    health = dashboard.queue_health(db)
    assert health.lost_leases == 1 and health.rounds == {"queued": 1}
    assert len(health.problems) == 1  # a job runs (lost or not), so the queue is not stalled

    browser_login(client, admin.username)
    page = html(client.get("/admin"))
    problems = [item.text for item in page.select("ul.health li.bad")]
    assert problems[1:] == ["1 running job(s) or round(s) lost their worker"]
    assert problems[0].startswith("Model: No model yet")


def test_a_queue_that_nobody_takes_is_reported():
    health = dashboard.QueueHealth(
        jobs={"queued": 2}, rounds={}, lost_leases=0, oldest_queued=utcnow() - timedelta(hours=1)
    )
    assert health.problems == [dashboard.Problem("stalled_queue", 10)]
    assert translate("en", "admin.problem.stalled_queue", count=10) == (
        "work has waited in the queue for over 10 minutes: is a worker running?"
    )


def a_round(db, **fields) -> Round:
    round_ = Round(algorithm=Algorithm.PPO, preset="quick", config={}, **fields)
    db.add(round_)
    db.flush()
    return round_


def test_a_round_page_shows_its_stages_curves_and_log_and_cancels(client, db, admin):
    round_ = a_round(db, status=RunStatus.QUEUED)
    db.commit()
    claimed = rounds.claim_stage(db, round_id=round_.id, stage=RoundStage.SNAPSHOT, worker="w1")
    rounds.complete_stage(db, round_id=claimed.id, worker="w1", seconds=3.0)
    rounds.claim_stage(db, round_id=round_.id, stage=RoundStage.SFT, worker="w1")
    rounds.record_points(db, round_id=round_.id, stage=RoundStage.SFT, step=1, values={"loss": 2.5})
    rounds.add_log(db, round_id=round_.id, stage=RoundStage.SFT, message="<b>epoch</b> 1")
    db.commit()

    csrf = browser_login(client, admin.username)
    page = html(client.get(f"/admin/rounds/{round_.id}"))
    stages = {item["data-stage"]: item.get("class", []) for item in page.select("#pipeline li")}
    assert stages["snapshot"] == ["done"] and stages["sft"] == ["current"]
    assert page.select_one("#round-status").text == "running"
    log = [item.select_one("span").text for item in page.select("#log li")]
    assert log[0] == "started on w1" and log[1] == "finished in 3.0 s"
    assert "<b>epoch</b> 1" in log  # shown as text, not markup
    assert page.select_one("#round")["data-last-log"] == str(
        rounds.read_log(db, round_id=round_.id)[-1].id
    )
    after = client.get(
        f"/api/rounds/{round_.id}/log?after={page.select_one('#round')['data-last-log']}"
    )
    assert after.status_code == 200 and after.json() == []

    cancelled = client.post(
        f"/admin/rounds/{round_.id}/cancel", data={"csrf_token": csrf}, follow_redirects=False
    )
    assert cancelled.status_code == 303
    db.expire_all()
    assert db.get(Round, round_.id).cancel_requested
    page = html(client.get(f"/admin/rounds/{round_.id}"))
    assert page.select_one("#round form button")["disabled"] is not None
    assert client.post(f"/admin/rounds/{round_.id}/cancel").status_code == 403  # no CSRF token


def test_a_round_page_shows_both_win_rates_with_their_intervals(client, db, admin, rater):
    made = policy_versions(db, "base", "round-1")
    evaluation = {"win_rate": 0.75, "win_rate_low": 0.55, "win_rate_high": 0.88, "n": 24}
    round_ = a_round(
        db,
        status=RunStatus.SUCCEEDED,
        stage=RoundStage.DONE,
        parent_version_id=made["base"].id,
        metrics={"evaluation": evaluation, "register": {"version": "round-1"}},
    )
    for prefer in ("round-1", "round-1", "base"):
        ab_judgement(db, rater, made, "round-1", "base", prefer=prefer)
    db.commit()
    browser_login(client, admin.username)
    tiles = {
        div.dt.text: " ".join(div.dd.text.split())
        for div in html(client.get(f"/admin/rounds/{round_.id}")).select("dl.tiles div")
    }
    assert tiles["Win rate against the parent (reward model)"] == "0.75 [0.55, 0.88], n = 24"
    assert tiles["Win rate against the parent (raters, blind A/B)"] == "0.67 [0.21, 0.94], n = 3"


def test_a_figure_over_too_few_examples_is_not_a_headline(client, db, admin):
    metrics = {
        "reward_model": {"eval_accuracy": 0.923, "eval_pairs": 13},
        "evaluation": {"win_rate": 0.8, "n": 60, "prompts": 30, "prompt_source": "eval prompts"},
    }
    round_ = a_round(db, status=RunStatus.SUCCEEDED, stage=RoundStage.DONE, metrics=metrics)
    db.commit()
    browser_login(client, admin.username)
    page = html(client.get(f"/admin/rounds/{round_.id}"))
    accuracy = page.select_one("#reward-accuracy dd")
    assert "too-few" in accuracy["class"]
    assert " ".join(accuracy.text.split()) == "0.92 over 13 held-out pairs: too few to judge"
    assert "too-few" not in page.select_one("#win-rate dd").get("class", [])
    assert "on 30 eval prompts" in page.select_one("#win-rate").text


def test_a_failed_round_shows_its_error_in_the_page_and_the_log(client, db, admin):
    partial = {"evaluation": {"win_rate": 0.6}, "reward_model": {"version": "reward-r1"}}
    round_ = a_round(db, status=RunStatus.RUNNING, stage=RoundStage.POLICY, metrics=partial)
    rounds.fail_round(db, round_id=round_.id, error="policy: out of memory")
    db.commit()
    browser_login(client, admin.username)
    page = html(client.get(f"/admin/rounds/{round_.id}"))
    assert page.select_one("p.error").text == "policy: out of memory"
    assert page.select_one("#log li.level-error span").text == "policy: out of memory"
    assert not page.select("#round form")  # nothing left to cancel
    shown = [div.dt.text for div in page.select("dl.tiles div")]
    assert shown == ["Win rate against the parent (reward model)"]  # a partial result: no more
    assert client.get("/admin/rounds/999999").status_code == 404


def test_the_round_list_pages_and_its_form_starts_a_round(client, db, admin):
    made = [a_round(db, status=RunStatus.SUCCEEDED).id for _ in range(52)]
    db.commit()
    csrf = browser_login(client, admin.username)
    first = html(client.get("/admin/rounds"))
    shown = [int(row.td.text) for row in first.select("table.jobs tbody tr")]
    assert shown == sorted(made, reverse=True)[:50]
    older = first.select_one("a[href^='/admin/rounds?before=']")["href"]
    rest = [int(row.td.text) for row in html(client.get(older)).select("table.jobs tbody tr")]
    assert rest == sorted(made, reverse=True)[50:]

    # the form's round waits in the queue: there is no worker in this test
    db.query(Round).delete()
    db.commit()
    no_model = client.post("/admin/rounds", data={"csrf_token": csrf, "preset": "quick"})
    assert no_model.status_code == 409
    assert "No model yet" in html(no_model).select_one("p.error").text
    ready_for_a_round(db)
    db.commit()
    assert "32 judged pairs to train on" in html(client.get("/admin/rounds")).text
    started = client.post(
        "/admin/rounds",
        data={"csrf_token": csrf, "algorithm": "rloo", "preset": "quick"},
        follow_redirects=False,
    )
    assert started.status_code == 303
    round_ = db.query(Round).one()
    assert started.headers["location"] == f"/admin/rounds/{round_.id}"
    assert round_.algorithm == Algorithm.RLOO
    bad = client.post("/admin/rounds", data={"csrf_token": csrf, "preset": "enormous"})
    assert bad.status_code == 422 and "enormous" in bad.text
    busy = html(client.post("/admin/rounds", data={"csrf_token": csrf, "preset": "quick"}))
    assert "already queued or running" in busy.select_one("p.error").text
    assert busy.select_one("p.error a")["href"] == f"/admin/rounds/{round_.id}"
    assert busy.select_one("form[action='/admin/rounds']")  # the admin stays on the page


def test_the_models_page_shows_lineage_leaderboard_and_promotes(client, db, admin, rater):
    made = policy_versions(db, "base", "round-1", "round-2")
    made["round-1"].parent_id = made["base"].id
    made["round-2"].parent_id = made["round-1"].id
    made["round-2"].snapshot_sha256 = "ab" * 32
    reward = ModelVersion(
        name="reward-r2", kind=ModelKind.REWARD, status=ModelStatus.READY, path="reward-r2"
    )
    db.add(reward)
    for _ in range(6):
        ab_judgement(db, rater, made, "round-2", "base", prefer="round-2")
        ab_judgement(db, rater, made, "round-1", "base", prefer="base")
    db.commit()

    csrf = browser_login(client, admin.username)
    assert "not computed yet" in client.get("/admin/models").text
    leaderboard.store(db)
    db.commit()
    page = html(client.get("/admin/models"))
    row = page.select_one(f"#version-{made['round-2'].id}")
    assert "← round-1 ← base" in row.text and "abababab" in row.text
    assert page.select_one("tr.current strong").text == "base"
    promotable = {form["action"] for form in page.select("form[action$='/promote']")}
    assert promotable == {
        f"/admin/models/{made[name].id}/promote" for name in ("round-1", "round-2")
    }
    standings = [tr.select("td")[1].text for tr in page.select("table.leaderboard tbody tr")]
    assert standings[0] == "round-2" and standings[-1] == "round-1"
    low, high = page.select("table.leaderboard tbody tr")[0].select("td")[3].text.split(" – ")
    assert float(low) < float(high)
    api = client.get("/api/models/leaderboard").json()  # fitted on request: the same standings
    assert [standing["version"] for standing in api] == standings

    promoted = client.post(
        f"/admin/models/{made['round-2'].id}/promote",
        data={"csrf_token": csrf},
        follow_redirects=False,
    )
    assert promoted.status_code == 303
    assert html(client.get("/admin/models")).select_one("tr.current strong").text == "round-2"
    rolled = client.post(
        "/admin/models/rollback", data={"csrf_token": csrf}, follow_redirects=False
    )
    assert rolled.status_code == 303
    page = html(client.get("/admin/models"))
    assert page.select_one("tr.current strong").text == "base"
    assert not page.select("form[action='/admin/models/rollback']")
    refused = client.post(f"/admin/models/{reward.id}/promote", data={"csrf_token": csrf})
    assert refused.status_code in (404, 409)


def test_the_dashboard_follows_running_jobs_and_refuses_generation_without_a_model(
    client, db, admin
):
    job = Job(
        kind="generate_candidates",
        status=RunStatus.RUNNING,
        progress=0.25,
        progress_detail="8 of 32 prompts answered, 8 tasks ready",
        started_at=utcnow() - timedelta(minutes=1),
    )
    db.add(job)
    db.commit()
    csrf = browser_login(client, admin.username)
    page = html(client.get("/admin"))
    assert page.select_one("#jobs")["data-live"] == "active"  # live.js polls while it runs
    cell = " ".join(page.select_one("#jobs tbody td:nth-of-type(4)").text.split())
    assert cell == "25% · 8 of 32 prompts answered, 8 tasks ready · about 3 min left"
    cells = page.select("#jobs tbody tr td")
    assert cells[1].text == "Generate candidates" and cells[1]["title"] == "generate_candidates"
    assert re.fullmatch(r"1 min 0\d s", cells[-1].text)  # elapsed so far
    refused = client.post("/admin/generations", data={"csrf_token": csrf, "per_prompt": 2})
    assert refused.status_code == 409
    assert "No model yet" in html(refused).select_one("p.error").text
    assert db.scalar(select(func.count()).select_from(Job)) == 1


def test_the_jobs_table_names_each_job_and_says_how_long_it_took(client, db, admin):
    start = utcnow() - timedelta(hours=3)
    finished = Job(
        kind="train_reward_model",
        status=RunStatus.SUCCEEDED,
        started_at=start,
        finished_at=start + timedelta(hours=1, minutes=2, seconds=5),
        result={"tasks": 1},
    )
    db.add_all([finished, Job(kind="train_sft", status=RunStatus.QUEUED)])
    db.commit()
    browser_login(client, admin.username)
    rows = [
        [cell.text.strip() for cell in row.select("td")]
        for row in html(client.get("/admin")).select("#jobs tbody tr")
    ]
    by_name = {row[1]: row for row in rows}
    assert by_name["Train a reward model"][-1] == "1 h 02 min"
    assert by_name["Train a reward model"][4] == "1 task"  # not "1 tasks"
    assert by_name["Fine-tune on rewrites (SFT)"][-1] == "—"  # not started


def test_a_chinese_admin_reads_every_console_page_in_chinese(client, db, settings, admin, rater):
    ids = seed_console(db, settings, admin, rater)
    db.commit()
    browser_login(client, admin.username)
    pages = ["/admin", "/admin/rounds", "/admin/models", "/admin/quality?requested=true"]
    pages += ["/admin/users"]
    pages += [f"/admin/rounds/{ids['finished']}", f"/admin/rounds/{ids['running']}"]
    for path in pages:
        page = html(client.get(path))
        assert page.html["lang"] == "zh-CN"
        attributes = [tag.get(name, "") for tag in page.find_all() for name in TEXT_ATTRIBUTES]
        assert english_left(page.get_text(" ") + " ".join(attributes)) == [], path
    running = html(client.get(f"/admin/rounds/{ids['running']}"))
    assert running.select_one("#round-status").text == "运行中"
    assert running.select_one("#round-eta").text == "约剩 10 分钟"
    words = json.loads(running.select_one("#round")["data-text"])  # for round.js
    assert words["stage"]["policy"] == "策略优化" and words["eta"]["minutes"] == "约剩 {n} 分钟"
    model_line = html(client.get("/admin")).select_one("#model-state li").text
    assert model_line == "模型：当前提供服务的是 base"
    rater_row = html(client.get("/admin/users")).select_one(f"#user-{rater.id}")
    assert [cell.text for cell in rater_row.select("td")][1:4] == ["评分员", "已启用", "否"]


TEXT_ATTRIBUTES = ("placeholder", "title", "aria-label", "alt", "value")


def test_a_chinese_admin_reads_why_there_is_no_model_and_what_the_queue_lacks_in_chinese(
    client, db, admin
):
    admin.locale = "zh"
    lost = utcnow() - timedelta(minutes=5)
    db.add(
        Job(kind="train_sft", status=RunStatus.RUNNING, lease_owner="gone", lease_expires_at=lost)
    )
    db.commit()
    browser_login(client, admin.username)
    page = html(client.get("/admin"))
    assert page.select_one("#model-state li").text.startswith("模型：还没有模型：基础模型（")
    problems = [item.text for item in page.select("ul.health li.bad")][1:]
    assert problems == ["1 个运行中的任务或训练轮次失去了工作进程"]
    rounds_page = html(client.get("/admin/rounds"))
    assert rounds_page.select_one("#readiness").text.startswith("还没有模型：")
    assert english_left(page.get_text(" ") + rounds_page.get_text(" ")) == []
