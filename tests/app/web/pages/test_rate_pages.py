"""Rater and admin pages: plain-form flow, fragments for the script, languages, safety."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from app.domain import guidelines
from app.models import (
    Assignment,
    AssignmentStatus,
    Job,
    Judgement,
    RaterQuality,
    Response,
    Round,
)
from tests.helpers import browser_login, create_task, html, ready_for_a_round

FETCH = {"X-Requested-With": "fetch"}
XSS = [
    "<script>alert('prompt')</script>",
    "<img src=x onerror=alert(1)>",
    "[click me](javascript:alert(1))",
    '<a href="javascript:alert(2)">link</a>',
    "<svg onload=alert(3)>",
]


def judgement_form(page) -> dict[str, str]:
    """The hidden fields of the task form, as a browser would send them."""
    form = page.select_one("form#judgement")
    return {field["name"]: field.get("value", "") for field in form.select("input[type=hidden]")}


def response_ids(page) -> list[int]:
    return [int(card["data-response-id"]) for card in page.select("article.response")]


@pytest.fixture
def csrf(client, rater):
    return browser_login(client, rater.username)


def test_home_shows_progress_and_the_guidelines(client, db, csrf):
    guidelines.publish_guidelines(db, body="# Be fair\nJudge the content.", author=None)
    create_task(db)
    db.commit()
    page = html(client.get("/"))
    assert page.select_one("#stat-available").text == "1"
    assert page.select_one(".markdown h1").text == "Be fair"


def test_the_task_page_shows_the_task_and_survives_a_reload(client, db, csrf):
    task = create_task(db, prompt="Explain leases", texts=["first", "second"])
    db.commit()
    page = html(client.get("/rate"))
    assert page.select_one("form#judgement")["action"] == f"/rate/tasks/{task.id}/judgement"
    assert "Explain leases" in page.select_one(".prompt").text
    assert sorted(
        card.select_one(".response-text").text.strip() for card in page.select("article.response")
    ) == ["first", "second"]
    assert response_ids(html(client.get("/rate"))) == response_ids(page)  # same lease


def test_a_plain_form_submission_stores_the_judgement_and_redirects(client, db, csrf, rater):
    task = create_task(db)
    db.commit()
    page = html(client.get("/rate"))
    a, b = response_ids(page)
    form = {
        **judgement_form(page),
        "preference": f"better:{b}",
        "strength": "2",
        f"rating_{b}_helpfulness": "6",
        f"flag_{a}": "off_topic",
        "critique": "A misses the point.",
    }
    response = client.post(f"/rate/tasks/{task.id}/judgement", data=form, follow_redirects=False)
    assert response.status_code == 303 and response.headers["location"] == "/rate?done=saved"
    stored = db.scalar(select(Judgement))
    assert stored.ranking == [b, a] and stored.strength == 2
    assert stored.ratings == {str(b): {"helpfulness": 6}}
    assert stored.flags == {str(a): ["off_topic"]}
    assert stored.critique == "A misses the point."


def test_the_script_gets_the_next_task_as_a_fragment(client, db, csrf):
    first, second = create_task(db), create_task(db)
    db.commit()
    page = html(client.get("/rate"))
    shown = page.select_one("form#judgement")["data-task-id"]
    form = {**judgement_form(page), "preference": "tie"}
    response = client.post(f"/rate/tasks/{shown}/judgement", data=form, headers=FETCH)
    fragment = html(response)
    assert response.status_code == 200
    assert fragment.select_one("html") is None  # a fragment, not a page
    assert fragment.select_one(".notice").text == "Saved. Here is the next task."
    remaining = {first.id, second.id} - {int(shown)}
    assert int(fragment.select_one("form#judgement")["data-task-id"]) in remaining


def test_three_responses_are_ranked_with_numbers_and_ties(client, db, csrf):
    task = create_task(db, responses=3)
    db.commit()
    page = html(client.get("/rate"))
    a, b, c = response_ids(page)
    form = {**judgement_form(page), f"rank_{a}": "2", f"rank_{b}": "1", f"rank_{c}": "2"}
    client.post(f"/rate/tasks/{task.id}/judgement", data=form)
    assert db.scalar(select(Judgement.ranking)) == [b, sorted([a, c])]


def test_a_form_mistake_keeps_what_the_rater_wrote(client, db, csrf):
    task = create_task(db, responses=3)
    db.commit()
    page = html(client.get("/rate"))
    a, *_ = response_ids(page)
    form = {**judgement_form(page), f"rank_{a}": "1", "critique": "Careful words"}
    response = client.post(f"/rate/tasks/{task.id}/judgement", data=form, headers=FETCH)
    fragment = html(response)
    assert response.status_code == 422
    assert fragment.select_one(".error").text == "Give every response a rank."
    assert fragment.select_one("#critique").text == "Careful words"
    assert fragment.select_one(f"select[name=rank_{a}] option[selected]")["value"] == "1"
    assert db.scalar(select(Judgement)) is None


def test_a_replayed_form_is_stored_once(client, db, csrf):
    task = create_task(db)
    db.commit()
    page = html(client.get("/rate"))
    form = {**judgement_form(page), "preference": "tie"}
    for _ in range(2):
        client.post(f"/rate/tasks/{task.id}/judgement", data=form, follow_redirects=False)
    assert len(db.scalars(select(Judgement)).all()) == 1


def test_a_rewrite_from_the_page_is_kept(client, db, csrf, rater):
    task = create_task(db, texts=["draft answer", "other"])
    db.commit()
    page = html(client.get("/rate"))
    a, b = response_ids(page)
    winner = a if db.get(Response, a).text == "draft answer" else b
    form = {
        **judgement_form(page),
        "preference": f"better:{winner}",
        "rewrite": "draft answer, now complete",
    }
    client.post(f"/rate/tasks/{task.id}/judgement", data=form)
    rewrite = db.get(Response, db.scalar(select(Judgement.rewrite_response_id)))
    assert rewrite.text == "draft answer, now complete" and rewrite.author_id == rater.id


def test_skipping_from_the_page(client, db, csrf):
    task = create_task(db)
    db.commit()
    page = html(client.get("/rate"))
    form = {"csrf_token": judgement_form(page)["csrf_token"], "reason": "Cannot judge code"}
    response = client.post(f"/rate/tasks/{task.id}/skip", data=form, headers=FETCH)
    assert html(response).select_one(".empty") is not None  # nothing else to rate
    skipped = db.scalar(select(Assignment))
    assert skipped.status == AssignmentStatus.SKIPPED and skipped.skip_reason == "Cannot judge code"


def test_with_nothing_to_rate_the_page_says_so(client, csrf):
    assert html(client.get("/rate")).select_one(".empty h1").text == "Nothing to rate right now"


def test_a_plain_form_post_says_saved_and_after_the_last_task_only_saved(client, db, csrf):
    create_task(db), create_task(db)
    db.commit()
    notices = []
    for _ in range(2):
        page = html(client.get("/rate"))
        task_id = page.select_one("form#judgement")["data-task-id"]
        form = {**judgement_form(page), "preference": "tie"}
        after = html(client.post(f"/rate/tasks/{task_id}/judgement", data=form))
        notices.append(after.select_one(".notice").text)
    assert notices == ["Saved. Here is the next task.", "Saved."]
    assert after.select_one(".empty h1").text == "Nothing to rate right now"


def test_the_task_page_shows_progress_and_agreement_once_known(client, db, csrf, rater):
    create_task(db), create_task(db)
    db.commit()
    page = html(client.get("/rate"))
    assert page.select_one("#progress-today").text == "0"
    assert page.select_one("#progress-left").text == "1"  # besides the one on the page
    assert page.select_one("#progress-agreement") is None
    db.add(RaterQuality(rater_id=rater.id, judgements=4, consensus_tau=0.5, consensus_tasks=3))
    db.commit()
    form = {**judgement_form(page), "preference": "tie"}
    task_id = page.select_one("form#judgement")["data-task-id"]
    after = html(client.post(f"/rate/tasks/{task_id}/judgement", data=form, headers=FETCH))
    assert after.select_one("#progress-today").text == "1"
    assert after.select_one("#progress-judged").text == "1"
    assert after.select_one("#progress-agreement").text == "75%"


def test_the_lease_end_is_a_utc_time_that_scripts_can_localise(client, db, csrf):
    create_task(db)
    db.commit()
    moment = html(client.get("/rate")).select_one(".lease time[data-local=clock]")
    assert moment["datetime"].endswith("Z") and moment.text.endswith(" UTC")
    assert moment["datetime"][11:16] == moment.text.removesuffix(" UTC")


def test_a_rater_switches_the_interface_to_chinese(client, db, csrf):
    create_task(db)
    db.commit()
    client.post("/account/language", data={"language": "zh", "csrf_token": csrf})
    page = html(client.get("/rate"))
    assert page.select_one("html")["lang"] == "zh-CN"
    assert "哪个回答更好？" in page.select_one(".verdict").text
    assert "评分准则" in html(client.get("/guidelines")).select_one("h1").text
    assert html(client.get("/playground")).select_one("h1").text == "试用"
    assert page.select_one(".progress-strip")["aria-label"] == "你的进度"
    bad = client.post("/account/language", data={"language": "xx", "csrf_token": csrf})
    assert bad.status_code == 422


def test_the_language_switch_stays_on_the_page_and_only_on_this_site(client, db, csrf):
    switch = html(client.get("/guidelines?x=1")).select_one("form.language input[name=next]")
    assert switch["value"] == "/guidelines?x=1"
    for target, location in [
        ("/guidelines?x=1", "/guidelines?x=1"),
        ("//evil.example/", "/"),
        ("https://evil.example/", "/"),
        ("/\\evil.example", "/"),
    ]:
        form = {"language": "zh", "next": target, "csrf_token": csrf}
        response = client.post("/account/language", data=form, follow_redirects=False)
        assert (response.status_code, response.headers["location"]) == (303, location), target


def inert(page) -> None:
    """No script, event handler or javascript: link got through."""
    ours = {
        "/static/rate.js",
        "/static/live.js",
        "/static/charts.js",
        "/static/vendor/uplot/uPlot.iife.min.js",
    }
    assert [tag for tag in page.select("script") if tag.get("src") not in ours] == []
    for tag in page.find_all(True):
        assert not any(name.lower().startswith("on") for name in tag.attrs), tag
        for attribute in ("href", "src", "action"):
            assert not str(tag.get(attribute, "")).lower().startswith("javascript:"), tag
    assert page.select("img, iframe") == []
    charts = [svg for svg in page.select("svg") if svg.find_parent(class_=["chart", "interval"])]
    assert page.select("svg") == charts  # only the console's own charts


def test_hostile_prompts_responses_and_guidelines_render_inert(client, db, admin):
    create_task(db, prompt="\n\n".join(XSS), texts=["\n".join(XSS), "<b>bold</b> " + XSS[1]])
    guidelines.publish_guidelines(db, body="\n\n".join(XSS), author=None)
    db.add(Job(kind="generate_candidates", error="<script>alert('job')</script>"))
    db.commit()
    browser_login(client, admin.username)
    for path in ("/", "/rate", "/guidelines", "/admin", "/admin/guidelines", "/account"):
        response = client.get(path)
        assert response.status_code == 200, path
        inert(html(response))
    assert "&lt;script&gt;alert(&#39;prompt&#39;)&lt;/script&gt;" in client.get("/rate").text


def test_admins_start_generation_and_publish_guidelines_from_the_pages(client, db, admin):
    ready_for_a_round(db, pairs=0)  # a ready model is all generation needs
    db.commit()
    csrf = browser_login(client, admin.username)
    response = client.post(
        "/admin/generations",
        data={"per_prompt": "3", "overlap": "2", "csrf_token": csrf},
        follow_redirects=False,
    )
    assert response.status_code == 303
    job = db.scalar(select(Job))
    assert job.params["per_prompt"] == 3 and job.params["overlap"] == 2
    client.post("/admin/guidelines", data={"body": "Version two", "csrf_token": csrf})
    client.post("/admin/guidelines", data={"body": "Version three", "csrf_token": csrf})
    assert guidelines.current_guidelines(db).version == 2
    assert "Version three" in client.get("/guidelines").text


def test_admins_start_a_training_round_from_the_admin_page(client, db, admin):
    ready_for_a_round(db)
    db.commit()
    csrf = browser_login(client, admin.username)
    response = client.post(
        "/admin/rounds",
        data={"algorithm": "dpo", "preset": "quick", "csrf_token": csrf},
        follow_redirects=False,
    )
    assert response.status_code == 303
    round_ = db.scalar(select(Round))
    assert round_.algorithm.value == "dpo" and round_.status.value == "queued"
    page = html(client.get("/admin"))
    assert "dpo (quick)" in page.select_one("table.jobs").text
    again = client.post("/admin/rounds", data={"algorithm": "ppo", "csrf_token": csrf})
    assert again.status_code == 409  # one round per line at a time


def test_raters_cannot_reach_admin_pages(client, csrf):
    assert client.get("/admin").status_code == 403
