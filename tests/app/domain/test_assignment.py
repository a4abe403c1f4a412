"""Leasing task slots: who gets which task, for how long, and how often."""

from __future__ import annotations

import random
from datetime import timedelta

import pytest
from sqlalchemy import func, select

from app.domain.assignment import assign_next_task, expire_stale_leases, rating_progress
from app.domain.judgements import skip_task, submit_judgement
from app.errors import RateLimited
from app.models import Assignment, AssignmentStatus, Judgement, Role, Task, TaskStatus, utcnow
from app.schemas import JudgementIn
from tests.helpers import api_key_for, create_task

LEASE = {"lease_minutes": 30, "max_open_leases": 3}
ASPECTS = ["helpfulness"]


def next_for(db, rater, **overrides) -> Assignment | None:
    return assign_next_task(db, rater=rater, **{**LEASE, **overrides})


def judge(db, rater, assignment: Assignment):
    body = JudgementIn(ranking=assignment.response_order)
    return submit_judgement(db, rater=rater, task_id=assignment.task_id, body=body, aspects=ASPECTS)


def test_a_lease_records_a_shuffled_response_order_and_an_expiry(db, rater):
    task = create_task(db, responses=4)
    assignment = next_for(db, rater, rng=random.Random(3))
    shown = [link.response_id for link in task.responses]
    assert assignment.task_id == task.id
    assert sorted(assignment.response_order) == sorted(shown)
    assert assignment.response_order != shown  # this seed shuffles
    remaining = assignment.expires_at - utcnow()
    assert timedelta(minutes=29) < remaining <= timedelta(minutes=30)


def test_tasks_closest_to_completion_come_first(db, rater, make_user):
    half_done = create_task(db, overlap=2)
    untouched = create_task(db, overlap=2)
    other = make_user(Role.RATER, "otto")
    judge(db, other, next_for(db, other))  # ties go by id: otto judges `half_done`
    assert next_for(db, rater).task_id == half_done.id  # one slot left beats two
    assert next_for(db, rater).task_id == untouched.id


def test_a_rater_never_gets_the_same_task_twice(db, rater):
    judged, skipped, held, left = (create_task(db) for _ in range(4))
    judge(db, rater, next_for(db, rater))
    skip_task(db, rater=rater, task_id=next_for(db, rater).task_id, reason="not my language")
    assert next_for(db, rater).task_id == held.id
    assert next_for(db, rater).task_id == left.id
    assert next_for(db, rater) is None


def test_holding_too_many_leases_is_a_429_with_retry_after(db, rater):
    for _ in range(4):
        create_task(db)
    for _ in range(3):
        next_for(db, rater)
    with pytest.raises(RateLimited) as raised:
        next_for(db, rater)
    assert int(raised.value.headers["Retry-After"]) > 0


def test_a_reclaimed_lease_frees_the_slot_for_someone_else(db, rater, make_user):
    task = create_task(db, overlap=1)
    assignment = next_for(db, rater)
    other = make_user(Role.RATER, "otto")
    assert next_for(db, other) is None  # the only slot is leased
    assignment.expires_at = utcnow() - timedelta(seconds=1)
    db.flush()
    assert expire_stale_leases(db) == 1
    assert db.get(Assignment, assignment.id).status == AssignmentStatus.EXPIRED
    assert next_for(db, other).task_id == task.id


def test_a_rater_may_take_back_a_task_whose_lease_ran_out(db, rater):
    task = create_task(db)
    first = next_for(db, rater)
    first.expires_at = utcnow() - timedelta(seconds=1)
    db.flush()
    second = next_for(db, rater)
    assert second.task_id == task.id and second.id != first.id


def test_a_task_is_complete_once_it_has_its_judgements(db, rater, make_user):
    task = create_task(db, overlap=2)
    judge(db, rater, next_for(db, rater))
    other = make_user(Role.RATER, "otto")
    judge(db, other, next_for(db, other))
    assert db.get(Task, task.id).status == TaskStatus.COMPLETE
    third = make_user(Role.RATER, "tess")
    assert next_for(db, third) is None


def test_progress_counts_judged_skipped_and_waiting_tasks(db, rater):
    for _ in range(3):
        create_task(db)
    judge(db, rater, next_for(db, rater))
    skip_task(db, rater=rater, task_id=next_for(db, rater).task_id, reason=None)
    assert rating_progress(db, rater_id=rater.id) == {
        "judged": 1,
        "today": 1,
        "skipped": 1,
        "available": 1,
    }


def test_next_over_http_returns_the_contract_shape_or_204(client, db, rater):
    task = create_task(db, prompt="What is RLHF?")
    db.commit()
    headers = api_key_for(db, rater)
    body = client.get("/api/tasks/next", headers=headers).json()
    assert body["task_id"] == task.id
    assert body["prompt"] == {
        "id": task.prompt_id,
        "messages": [{"role": "user", "content": "What is RLHF?"}],
    }
    assert {response["id"] for response in body["responses"]} == {
        link.response_id for link in task.responses
    }
    assert body["lease_expires_at"].endswith("Z")
    assert client.get("/api/tasks/next", headers=headers).json() == body  # the held task
    another = client.get("/api/tasks/next", headers=headers, params={"another": "true"})
    assert another.status_code == 204
    stored = db.scalar(select(Assignment).where(Assignment.task_id == task.id))
    assert [response["id"] for response in body["responses"]] == stored.response_order


def test_admins_rate_too_but_anonymous_callers_do_not(client, db, admin):
    create_task(db)
    db.commit()
    assert client.get("/api/tasks/next").status_code == 401
    assert client.get("/api/tasks/next", headers=api_key_for(db, admin)).status_code == 200


def test_slot_counters_match_the_rows_they_count(db, rater, make_user):
    tasks = [create_task(db, overlap=2) for _ in range(3)]
    judge(db, rater, next_for(db, rater))
    skip_task(db, rater=rater, task_id=next_for(db, rater).task_id, reason=None)
    other = make_user(Role.RATER, "otto")
    stale = next_for(db, other)
    stale.expires_at = utcnow() - timedelta(seconds=1)
    next_for(db, other)
    expire_stale_leases(db)
    db.expire_all()
    for task in tasks:
        task = db.get(Task, task.id)
        judged = db.scalar(select(func.count()).where(Judgement.task_id == task.id))
        active = db.scalar(
            select(func.count()).where(
                Assignment.task_id == task.id, Assignment.status == AssignmentStatus.ACTIVE
            )
        )
        assert (task.judgement_count, task.lease_count) == (judged, active)
