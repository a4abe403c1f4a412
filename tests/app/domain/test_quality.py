"""Quality control: the raters' figures and trust, gold tasks, escalation, pausing, the page."""

from __future__ import annotations

import math
import random
import re
from collections import Counter
from itertools import combinations

import pytest
from sqlalchemy import event, func, select

from app.domain.assignment import RaterPaused, assign_next_task
from app.domain.escalation import Escalation, pair_agreement
from app.domain.judgements import submit_judgement
from app.domain.preferences import build_snapshot
from app.domain.quality import (
    Verdict,
    fractional_ranks,
    kendall_tau_b,
    mark_gold,
    matches_gold,
    rater_figures,
    refresh_quality,
    snapshot_weights,
)
from app.models import (
    Assignment,
    AssignmentStatus,
    Judgement,
    QualityReport,
    RaterQuality,
    Task,
    TaskStatus,
)
from app.schemas import JudgementIn
from app.tasks_contract import REFRESH_QUALITY
from tests.conftest import make_settings
from tests.helpers import api_key_for, browser_login, create_task, html
from worker.celery_app import create_celery

LEASE = {"lease_minutes": 30, "max_open_leases": 10}


def responses_of(task: Task) -> list[int]:
    return [link.response_id for link in task.responses]


def lease_and_judge(db, rater, ranking_of, *, gold_rate=0.0, escalation=None) -> Assignment:
    """Lease the rater's next task and judge it with `ranking_of(response ids in task order)`."""
    assignment = assign_next_task(db, rater=rater, gold_rate=gold_rate, **LEASE)
    ranking = ranking_of(responses_of(db.get(Task, assignment.task_id)))
    submit_judgement(
        db,
        rater=rater,
        task_id=assignment.task_id,
        body=JudgementIn(ranking=ranking),
        aspects=[],
        escalation=escalation,
    )
    return assignment


def in_order(ids):
    return list(ids)


def reversed_order(ids):
    return list(reversed(ids))


def seed_judgement(db, task, rater, ranking, **fields) -> Judgement:
    judgement = Judgement(task_id=task.id, rater_id=rater.id, ranking=ranking, **fields)
    db.add(judgement)
    db.flush()
    return judgement


# --- the figures on fixed data -----------------------------------------------------------------


def reference_tau_b(x: list[float], y: list[float]) -> float:
    """Tau-b from its textbook parts: (C - D) / sqrt((n0 - n1)(n0 - n2)), with n1 and n2 summed
    over the groups of tied values in each sample."""
    n0 = len(x) * (len(x) - 1) / 2
    n1 = sum(t * (t - 1) / 2 for t in Counter(x).values())
    n2 = sum(t * (t - 1) / 2 for t in Counter(y).values())
    concordant = discordant = 0
    for i, j in combinations(range(len(x)), 2):
        product = (x[i] - x[j]) * (y[i] - y[j])
        concordant += product > 0
        discordant += product < 0
    return (concordant - discordant) / math.sqrt((n0 - n1) * (n0 - n2))


def test_kendall_tau_b_equals_the_textbook_formula_with_and_without_ties():
    rng = random.Random(7)
    for _ in range(200):
        size = rng.randint(2, 8)
        x = [rng.randint(1, 4) for _ in range(size)]
        y = [rng.randint(1, 4) for _ in range(size)]
        if len(set(x)) == 1 or len(set(y)) == 1:
            assert kendall_tau_b(x, y) is None
            continue
        assert kendall_tau_b(x, y) == pytest.approx(reference_tau_b(x, y))


def test_kendall_tau_b_known_values():
    assert kendall_tau_b([1, 2, 3], [1, 2, 3]) == 1.0
    assert kendall_tau_b([1, 2, 3], [3, 2, 1]) == -1.0
    # SciPy's documented example of `kendalltau` (tau-b, ties in both samples)
    assert kendall_tau_b([12, 2, 1, 12, 2], [1, 4, 7, 1, 0]) == pytest.approx(-0.47140452079103173)


def test_fractional_ranks_give_tied_responses_the_mean_of_their_places():
    assert fractional_ranks([3, [1, 2], 4]) == {3: 1.0, 1: 2.5, 2: 2.5, 4: 4.0}
    assert fractional_ranks([[5, 6]]) == {5: 1.5, 6: 1.5}


def test_gold_counts_as_correct_when_every_strict_gold_pair_is_ordered_the_same_way():
    gold = [6, [7, 8]]
    assert matches_gold([6, 8, 7], gold)  # 7 and 8 are tied in gold: either order is fine
    assert matches_gold([6, [7, 8]], gold)
    assert not matches_gold([7, 6, 8], gold)
    assert not matches_gold([[6, 7], 8], gold)  # a tie where gold has an order is wrong
    assert matches_gold([2, 1], [2, 1]) and not matches_gold([1, 2], [2, 1])


def verdict(task, rater, ranking, shown=None, ms=None, gold=None) -> Verdict:
    return Verdict(task, rater, ranking, shown, ms, gold)


def test_figures_and_trust_match_hand_computed_values():
    a, b, c, d = 1, 2, 3, 4
    verdicts = [
        # task 1: three raters, responses 1 2 3
        verdict(1, a, [1, 2, 3], shown=[1, 2, 3], ms=4000),
        verdict(1, b, [1, 3, 2], shown=[2, 1, 3], ms=2000),
        verdict(1, c, [2, 1, 3], shown=[2, 3, 1]),
        # task 2: a pair the two raters order oppositely
        verdict(2, a, [4, 5], shown=[5, 4], ms=10000),
        verdict(2, b, [5, 4], shown=[4, 5], ms=3000),
        # task 3: gold, known answer 6 > 7 = 8; b judged it without a lease
        verdict(3, a, [6, 8, 7], shown=[6, 7, 8], ms=6000, gold=[6, [7, 8]]),
        verdict(3, b, [7, 6, 8], gold=[6, [7, 8]]),
        # task 4: d alone, all tied
        verdict(4, d, [[9, 10]], shown=[9, 10]),
    ]
    figures = rater_figures(verdicts)
    # a: tau 1 (task 1: others' rank sums 3 4 5), -1 (task 2), -1/3 (task 3, against b)
    assert figures[a].consensus_tau == pytest.approx((1 - 1 - 1 / 3) / 3)
    assert figures[a].consensus_tasks == 3
    assert (figures[a].gold_answered, figures[a].gold_correct) == (1, 1)
    assert figures[a].first_shown_rate == pytest.approx(2 / 3)
    assert figures[a].median_seconds == 6.0
    # accuracy (4/9 + 1) / 2 = 13/18; chance of first-shown (1/3 + 1/2 + 1/3) / 3 = 7/18, so
    # position 1 - (2/3 - 7/18) / (11/18) = 6/11; median 6 s is plausible: speed 1
    assert figures[a].trust == pytest.approx(13 / 18 * 6 / 11)
    # b: tau 0 (task 1: 1 3 2 against sums 3 3 6), -1, -1/3; never picked the first shown
    assert figures[b].consensus_tau == pytest.approx(-4 / 9)
    assert (figures[b].gold_answered, figures[b].gold_correct) == (1, 0)
    assert figures[b].first_shown_rate == 0.0
    assert figures[b].median_seconds == 2.5
    # accuracy ((1 - 4/9) / 2 + 0) / 2 = 5/36; position 1; speed 2.5 / 5
    assert figures[b].trust == pytest.approx(5 / 36 * 0.5)
    # c: always the first shown, so position 0
    assert figures[c].consensus_tau == 0.0 and figures[c].first_shown_rate == 1.0
    assert figures[c].median_seconds is None and figures[c].trust == 0.0
    # d: nothing to compare with, no single top choice, no trust
    assert figures[d].judgements == 1 and figures[d].consensus_tasks == 0
    assert figures[d].first_shown_rate is None and figures[d].trust is None


def test_pair_agreement_is_the_share_of_agreeing_rater_pairs_per_response_pair():
    assert pair_agreement([[1, 2], [1, 2]]) == 1.0
    assert pair_agreement([[1, 2], [2, 1]]) == 0.0
    assert pair_agreement([[1, 2], [1, 2], [2, 1]]) == pytest.approx(1 / 3)
    assert pair_agreement([[1, 2, 3], [1, 3, 2]]) == pytest.approx(2 / 3)
    assert pair_agreement([[[1, 2]], [1, 2]]) == 0.0  # a tie is a verdict of its own
    assert pair_agreement([[1, 2]]) is None


# --- refreshing from the database --------------------------------------------------------------


def test_refresh_stores_rows_and_a_report_and_counts_only_current_judgements(
    db, settings, make_user
):
    first, second = make_user(), make_user()
    task = create_task(db, overlap=2)
    x, y = responses_of(task)
    original = seed_judgement(db, task, first, [x, y], time_spent_ms=8000)
    seed_judgement(db, task, first, [y, x], supersedes_id=original.id, time_spent_ms=9000)
    seed_judgement(db, task, second, [y, x])
    db.commit()
    assert refresh_quality(db, settings) == {"raters": 2, "paused": 0}
    row = db.get(RaterQuality, first.id)
    assert (row.judgements, row.consensus_tau, row.consensus_tasks) == (1, 1.0, 1)
    assert row.median_seconds == 9.0 and row.trust == 1.0
    report = db.scalar(select(QualityReport))
    assert report.report["preferences"] == {"alpha": None, "units": 1}  # they agree, no variation


def test_a_second_refresh_updates_rows_in_place(db, settings, make_user):
    first, second = make_user(), make_user()
    task = create_task(db, overlap=2)
    x, y = responses_of(task)
    seed_judgement(db, task, first, [x, y])
    seed_judgement(db, task, second, [y, x])
    refresh_quality(db, settings)
    assert db.get(RaterQuality, first.id).consensus_tau == -1.0
    third = make_user()
    seed_judgement(db, task, third, [x, y])
    refresh_quality(db, settings)
    assert db.scalar(select(func.count()).select_from(RaterQuality)) == 3
    row = db.get(RaterQuality, first.id)  # the other two split: the consensus orders nothing
    assert (row.consensus_tau, row.consensus_tasks, row.judgements) == (None, 0, 1)
    assert db.scalar(select(func.count()).select_from(QualityReport)) == 2


def seed_low_and_high_trust(db, make_user):
    """Three pairwise tasks on which `good` and two others agree and `bad` dissents: trust 1
    for the majority, 0 for `bad`."""
    good, bad, *others = (make_user() for _ in range(4))
    for _ in range(3):
        task = create_task(db, overlap=4)
        x, y = responses_of(task)
        for rater in (good, *others):
            seed_judgement(db, task, rater, [x, y])
        seed_judgement(db, task, bad, [y, x])
    db.commit()
    return good, bad


def test_a_refresh_pauses_raters_whose_counted_trust_is_too_low(db, settings, make_user):
    good, bad = seed_low_and_high_trust(db, make_user)
    strict = settings.model_copy(update={"trust_pause_below": 0.5, "trust_min_judgements": 3})
    assert refresh_quality(db, strict)["paused"] == 1
    assert bad.paused_at is not None and "trust score 0.00 is below 0.50" in bad.pause_reason
    assert good.paused_at is None
    with pytest.raises(RaterPaused):
        assign_next_task(db, rater=bad, **LEASE)


def test_trust_below_the_minimum_judgements_pauses_nobody(db, settings, make_user):
    good, bad = seed_low_and_high_trust(db, make_user)
    strict = settings.model_copy(update={"trust_pause_below": 0.5, "trust_min_judgements": 4})
    assert refresh_quality(db, strict)["paused"] == 0 and bad.paused_at is None
    assert db.get(RaterQuality, bad.id).trust == 0.0  # shown, but too few judgements to act on


def test_a_resumed_rater_stays_resumed_until_new_work_scores_low(db, settings, make_user):
    good, bad = seed_low_and_high_trust(db, make_user)
    strict = settings.model_copy(update={"trust_pause_below": 0.5, "trust_min_judgements": 3})
    refresh_quality(db, strict)
    bad.paused_at = bad.pause_reason = None  # an admin resumed them
    db.commit()
    assert refresh_quality(db, strict)["paused"] == 0
    task = create_task(db, overlap=1)
    seed_judgement(db, task, bad, responses_of(task))
    assert refresh_quality(db, strict)["paused"] == 1


def test_snapshot_weights_come_from_counted_trust(db, settings, make_user):
    good, bad = seed_low_and_high_trust(db, make_user)
    newcomer = make_user()
    task = create_task(db, overlap=1)
    seed_judgement(db, task, newcomer, responses_of(task))
    refresh_quality(db, settings.model_copy(update={"trust_min_judgements": 3}))
    weights = snapshot_weights(db, settings.model_copy(update={"trust_min_judgements": 3}))
    assert weights[good.id] == 1.0 and weights[bad.id] == 0.0
    assert newcomer.id not in weights  # one judgement is too few: weighs 1.0
    snapshot = build_snapshot(db, rater_weights=weights)
    by_rater = {pair.rater_id: pair.weight for pair in snapshot.pairs}
    assert by_rater[bad.id] == 0.0 and by_rater[good.id] == by_rater[newcomer.id] == 1.0


def test_the_celery_task_refreshes_on_a_committed_database(tmp_path, committed_engine):
    celery = create_celery(make_settings(tmp_path), engine=committed_engine)
    assert celery.conf.beat_schedule["refresh-quality"]["task"] == REFRESH_QUALITY
    assert celery.tasks[REFRESH_QUALITY].apply().get() == {"raters": 0, "paused": 0}
    with committed_engine.connect() as connection:
        assert connection.scalar(select(func.count()).select_from(QualityReport)) == 1


# --- gold tasks --------------------------------------------------------------------------------


def test_gold_rate_one_serves_gold_first_and_zero_never(db, make_user):
    regular = create_task(db, overlap=5)
    gold = create_task(db, overlap=1)
    mark_gold(db, task_id=gold.id, ranking=responses_of(gold))
    never, always = make_user(), make_user()
    assert assign_next_task(db, rater=never, gold_rate=0.0, **LEASE).task_id == regular.id
    assert assign_next_task(db, rater=never, gold_rate=0.0, **LEASE) is None  # gold is left
    assert assign_next_task(db, rater=always, gold_rate=1.0, **LEASE).task_id == gold.id
    assert assign_next_task(db, rater=always, gold_rate=1.0, **LEASE).task_id == regular.id


def test_gold_tasks_take_any_number_of_raters_and_never_complete(db, make_user):
    gold = create_task(db, overlap=1)
    mark_gold(db, task_id=gold.id, ranking=responses_of(gold))
    for _ in range(3):
        assignment = lease_and_judge(db, make_user(), in_order, gold_rate=1.0)
        assert assignment.task_id == gold.id
    task = db.get(Task, gold.id)
    assert (task.status, task.judgement_count, task.lease_count) == (TaskStatus.OPEN, 3, 0)


def test_gold_tasks_stay_out_of_snapshots_until_unmarked(client, db, admin, make_user):
    regular, gold = create_task(db, overlap=1), create_task(db, overlap=1)
    rater = make_user()
    seed_judgement(db, regular, rater, responses_of(regular))
    seed_judgement(db, gold, rater, responses_of(gold))
    gold.judgement_count = 1
    db.commit()
    headers = api_key_for(db, admin)
    answer = client.post(
        f"/api/tasks/{gold.id}/gold", json={"ranking": responses_of(gold)}, headers=headers
    )
    assert answer.status_code == 200 and answer.json()["is_gold"] is True
    assert {pair.task_id for pair in build_snapshot(db).pairs} == {regular.id}
    assert client.delete(f"/api/tasks/{gold.id}/gold", headers=headers).json()["is_gold"] is False
    db.expire_all()
    assert {pair.task_id for pair in build_snapshot(db).pairs} == {regular.id, gold.id}
    assert db.get(Task, gold.id).status == TaskStatus.COMPLETE  # it had its one judgement


def test_marking_gold_checks_the_task_and_the_ranking(client, db, admin, rater):
    task = create_task(db, responses=3)
    a, b, c = responses_of(task)
    retired = create_task(db)
    retired.status = TaskStatus.RETIRED
    db.commit()
    headers = api_key_for(db, admin)

    def mark(task_id, ranking, as_headers=headers):
        return client.post(
            f"/api/tasks/{task_id}/gold", json={"ranking": ranking}, headers=as_headers
        )

    assert mark(task.id, [a, b]).status_code == 422  # c is missing
    assert mark(task.id, [a, b, c, 999]).status_code == 422
    assert mark(999_999, [a, b, c]).status_code == 404
    assert mark(retired.id, responses_of(retired)).status_code == 409
    assert mark(task.id, [a, [b, c]], api_key_for(db, rater)).status_code == 403
    answer = mark(task.id, [a, [c, b]])
    assert answer.json() == {"id": task.id, "is_gold": True, "gold_ranking": [a, [b, c]]}
    assert client.delete("/api/tasks/999999/gold", headers=headers).status_code == 404


# --- escalation --------------------------------------------------------------------------------


def test_disagreement_adds_exactly_one_slot_until_the_cap(db, make_user):
    task = create_task(db, overlap=2)
    escalation = Escalation(threshold=0.5, max_extra=1)
    lease_and_judge(db, make_user(), in_order, escalation=escalation)
    lease_and_judge(db, make_user(), reversed_order, escalation=escalation)
    db.refresh(task)
    assert (task.status, task.required_judgements, task.extra_judgements) == (
        TaskStatus.OPEN,
        3,
        1,
    )
    lease_and_judge(db, make_user(), in_order, escalation=escalation)  # 2-1: still below 0.5
    db.refresh(task)
    assert (task.status, task.required_judgements, task.extra_judgements) == (
        TaskStatus.COMPLETE,
        3,
        1,
    )


def test_agreeing_raters_complete_the_task_without_escalation(db, make_user):
    task = create_task(db, overlap=2)
    escalation = Escalation(threshold=0.5, max_extra=2)
    for _ in range(2):
        lease_and_judge(db, make_user(), in_order, escalation=escalation)
    db.refresh(task)
    assert (task.status, task.required_judgements, task.extra_judgements) == (
        TaskStatus.COMPLETE,
        2,
        0,
    )


def test_the_api_escalates_with_the_configured_threshold(client, db, make_user):
    task = create_task(db, overlap=2)
    db.commit()
    for order in (in_order, reversed_order):
        headers = api_key_for(db, make_user())
        shown = client.get("/api/tasks/next", headers=headers).json()
        ranking = order(sorted(response["id"] for response in shown["responses"]))
        answer = client.post(
            f"/api/tasks/{task.id}/judgement", json={"ranking": ranking}, headers=headers
        )
        assert answer.status_code == 201
    db.expire_all()
    task = db.get(Task, task.id)
    assert (task.status, task.required_judgements, task.extra_judgements) == (
        TaskStatus.OPEN,
        3,
        1,
    )


# --- pausing -----------------------------------------------------------------------------------


def test_a_paused_rater_gets_403_no_lease_and_loses_held_ones(client, db, admin, rater):
    held = create_task(db)
    db.commit()
    rater_headers = api_key_for(db, rater)
    assert client.get("/api/tasks/next", headers=rater_headers).json()["task_id"] == held.id
    admin_headers = api_key_for(db, admin)
    paused = client.post(
        f"/api/users/{rater.id}/pause", json={"reason": "too fast"}, headers=admin_headers
    )
    assert paused.status_code == 200 and paused.json()["pause_reason"] == "too fast"
    answer = client.get("/api/tasks/next", headers=rater_headers)
    assert answer.status_code == 403 and "paused: too fast" in answer.json()["detail"]
    db.expire_all()
    leases = db.scalars(select(Assignment).where(Assignment.rater_id == rater.id)).all()
    assert [lease.status for lease in leases] == [AssignmentStatus.EXPIRED]
    assert db.get(Task, held.id).lease_count == 0
    resumed = client.post(f"/api/users/{rater.id}/resume", headers=admin_headers)
    assert resumed.json()["paused_at"] is None
    assert client.get("/api/tasks/next", headers=rater_headers).status_code == 200
    assert client.post("/api/users/999999/pause", headers=admin_headers).status_code == 404
    assert client.post(f"/api/users/{admin.id}/pause", headers=rater_headers).status_code == 403


def test_a_paused_rater_sees_why_on_the_rate_page(client, db, admin, rater):
    create_task(db)
    rater.paused_at, rater.pause_reason = rater.created_at, "please reread the guidelines"
    db.commit()
    browser_login(client, rater.username)
    page = html(client.get("/rate"))
    assert "Your rating is paused" in page.select_one(".paused h1").text
    assert "please reread the guidelines" in page.select_one(".paused").text
    assert page.select_one("form#judgement") is None


# --- the admin page and /api/stats -------------------------------------------------------------


@pytest.fixture
def judged(db, make_user):
    """Two raters who disagree on one gold and one ordinary task."""
    first, second = make_user(), make_user()
    ordinary, gold = create_task(db, overlap=2), create_task(db, overlap=2)
    for task in (ordinary, gold):
        x, y = responses_of(task)
        seed_judgement(db, task, first, [x, y], time_spent_ms=12000)
        seed_judgement(db, task, second, [y, x], time_spent_ms=3000)
    mark_gold(db, task_id=gold.id, ranking=responses_of(gold))
    ordinary.extra_judgements = 1
    db.commit()
    return {"first": first, "second": second, "gold": gold}


def test_the_page_shows_the_stored_figures_and_reads_no_judgements(
    client, db, connection, settings, admin, judged
):
    refresh_quality(db, settings)
    db.commit()
    browser_login(client, admin.username)
    statements: list[str] = []
    listener = lambda *args: statements.append(args[2])  # noqa: E731 (conn, cursor, statement)
    event.listen(connection, "before_cursor_execute", listener)
    try:
        response = client.get("/admin/quality")
    finally:
        event.remove(connection, "before_cursor_execute", listener)
    assert response.status_code == 200 and statements
    assert not [s for s in statements if re.search(r"(FROM|JOIN)\s+judgements\b", s)]
    page = html(response)
    first = page.select_one(f"#rater-{judged['first'].id}").text
    assert "1/1" in first and "12.0 s" in first  # gold answered correctly, median time
    assert "0/1" in page.select_one(f"#rater-{judged['second'].id}").text
    assert page.select_one(f"#gold-{judged['gold'].id}") is not None
    assert "1 task got extra raters" in page.select_one("#agreement").text
    assert "Preferences, overall" in page.select_one("table.quality-alpha").text


def test_the_page_says_when_nothing_was_computed_yet(client, admin):
    browser_login(client, admin.username)
    assert html(client.get("/admin/quality")).select_one("#no-report") is not None


def test_raters_cannot_open_the_quality_page(client, rater):
    browser_login(client, rater.username)
    assert client.get("/admin/quality").status_code == 403


def test_admins_pause_resume_and_mark_gold_from_the_page(client, db, admin, rater):
    task = create_task(db, responses=3)
    a, b, c = responses_of(task)
    db.commit()
    csrf = browser_login(client, admin.username)
    pause_form = {"csrf_token": csrf, "reason": "spot check"}
    assert client.post(f"/admin/quality/raters/{rater.id}/pause", data={}).status_code == 403
    answer = client.post(
        f"/admin/quality/raters/{rater.id}/pause", data=pause_form, follow_redirects=False
    )
    assert answer.status_code == 303
    db.expire_all()
    assert rater.pause_reason == "spot check"
    client.post(f"/admin/quality/raters/{rater.id}/resume", data={"csrf_token": csrf})
    db.expire_all()
    assert rater.paused_at is None
    bad = client.post(
        "/admin/quality/gold", data={"csrf_token": csrf, "task_id": task.id, "ranking": "1 >"}
    )
    assert bad.status_code == 422 and "best first" in html(bad).select_one(".error").text
    client.post(
        "/admin/quality/gold",
        data={"csrf_token": csrf, "task_id": task.id, "ranking": f"{c} > {a} = {b}"},
    )
    db.expire_all()
    assert db.get(Task, task.id).gold_ranking == [c, [a, b]]
    assert f"{c} &gt; {a} = {b}" in client.get("/admin/quality").text
    client.post(f"/admin/quality/gold/{task.id}/unmark", data={"csrf_token": csrf})
    db.expire_all()
    assert db.get(Task, task.id).is_gold is False


def test_recompute_now_sends_the_refresh_task(client, app, admin, monkeypatch):
    sent = []
    monkeypatch.setattr(app.state.celery, "send_task", lambda name, **_: sent.append(name))
    csrf = browser_login(client, admin.username)
    answer = client.post("/admin/quality/refresh", data={"csrf_token": csrf})
    assert sent == [REFRESH_QUALITY]
    assert "Recomputing" in html(answer).select_one(".notice").text


def test_stats_read_the_stored_report_and_the_raters_figures(client, db, settings, admin, judged):
    headers = api_key_for(db, admin)
    before = client.get("/api/stats", headers=headers).json()
    assert before["agreement"] is None and before["raters"] == []
    refresh_quality(db, settings)
    db.commit()
    after = client.get("/api/stats", headers=headers).json()
    assert after["agreement"]["preferences"]["units"] == 2 and after["agreement"]["computed_at"]
    first = next(row for row in after["raters"] if row["rater_id"] == judged["first"].id)
    assert first["gold_accuracy"] == 1.0 and first["consensus_tau"] == -1.0
    assert first["username"] == judged["first"].username and first["paused"] is False


def test_roles_are_checked_on_the_quality_api(client, db, rater):
    headers = api_key_for(db, rater)
    assert client.post(f"/api/users/{rater.id}/resume", headers=headers).status_code == 403
    assert client.delete("/api/tasks/1/gold", headers=headers).status_code == 403
