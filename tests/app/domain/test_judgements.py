"""`POST /api/tasks/{id}/judgement` and `/skip`: validation, leases, idempotency, rewrites."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import func, select

from app.domain import guidelines
from app.models import Assignment, AssignmentStatus, Judgement, Response, Role, utcnow
from tests.helpers import api_key_for, create_task, problem


@pytest.fixture
def headers(db, rater):
    return api_key_for(db, rater)


@pytest.fixture
def leased(client, db, headers):
    """A two-response task leased to the rater: (task id, response ids as shown)."""
    create_task(db, texts=["first answer", "second answer"])
    db.commit()
    body = client.get("/api/tasks/next", headers=headers).json()
    return body["task_id"], [response["id"] for response in body["responses"]]


def post(client, task_id, headers, **body):
    return client.post(f"/api/tasks/{task_id}/judgement", json=body, headers=headers)


def judgements(db) -> list[Judgement]:
    db.expire_all()
    return list(db.scalars(select(Judgement)))


def test_a_judgement_is_stored_with_everything_the_rater_said(client, db, headers, leased):
    task_id, (a, b) = leased
    response = post(
        client,
        task_id,
        headers,
        ranking=[b, a],
        strength=3,
        ratings={str(a): {"helpfulness": 2}, str(b): {"helpfulness": 6, "honesty": 7}},
        critique="A ignores the question.",
        flags={str(a): ["off_topic"]},
        time_spent_ms=4200,
    )
    assert response.status_code == 201
    [stored] = judgements(db)
    assert stored.ranking == [b, a] and stored.strength == 3
    assert stored.ratings == {str(a): {"helpfulness": 2}, str(b): {"helpfulness": 6, "honesty": 7}}
    assert stored.flags == {str(a): ["off_topic"]}
    assert stored.critique == "A ignores the question." and stored.time_spent_ms == 4200
    assignment = db.get(Assignment, stored.assignment_id)
    assert assignment.status == AssignmentStatus.SUBMITTED


def test_ties_are_stored_as_inner_lists(client, db, headers, leased):
    task_id, (a, b) = leased
    assert post(client, task_id, headers, ranking=[[b, a]], all_bad=True).status_code == 201
    [stored] = judgements(db)
    assert stored.ranking == [sorted([a, b])] and stored.all_bad


@pytest.mark.parametrize(
    "ranking", [lambda a, b: [a], lambda a, b: [a, a], lambda a, b: [a, b, 999999], lambda a, b: []]
)
def test_the_ranking_must_order_exactly_the_tasks_responses(client, db, headers, leased, ranking):
    task_id, (a, b) = leased
    assert post(client, task_id, headers, ranking=ranking(a, b)).status_code == 422
    assert judgements(db) == []


@pytest.mark.parametrize(
    "extra",
    [
        {"ratings": {"999999": {"helpfulness": 3}}},
        {"ratings": {"A": {"helpfulness": 3}}},
        {"strength": 4},
        {"flags": {"1": ["rude"]}},
        {"critique": "x" * 10_001},
        {"owner_id": 1},
    ],
)
def test_invalid_details_are_a_422(client, db, headers, leased, extra):
    task_id, (a, b) = leased
    assert post(client, task_id, headers, ranking=[a, b], **extra).status_code == 422


def test_ratings_must_use_configured_aspects_and_the_1_to_7_scale(client, db, headers, leased):
    task_id, (a, b) = leased
    unknown = post(client, task_id, headers, ranking=[a, b], ratings={str(a): {"wit": 5}})
    too_high = post(client, task_id, headers, ranking=[a, b], ratings={str(a): {"honesty": 8}})
    assert unknown.status_code == too_high.status_code == 422
    assert "wit" in problem(unknown)


def test_a_strength_needs_a_single_winner(client, headers, leased):
    task_id, (a, b) = leased
    assert post(client, task_id, headers, ranking=[[a, b]], strength=2).status_code == 422


def test_a_second_judgement_is_a_conflict(client, db, headers, leased):
    task_id, (a, b) = leased
    assert post(client, task_id, headers, ranking=[a, b]).status_code == 201
    second = post(client, task_id, headers, ranking=[b, a])
    assert second.status_code == 409
    assert [stored.ranking for stored in judgements(db)] == [[a, b]]


def test_a_retry_with_the_same_idempotency_key_returns_the_original(client, db, headers, leased):
    task_id, (a, b) = leased
    keyed = {**headers, "Idempotency-Key": "retry-me"}
    first = post(client, task_id, keyed, ranking=[a, b], critique="ok")
    # The same body, its fields in another order and spaced otherwise, is the same request.
    content = f'{{ "critique": "ok",  "ranking": [{a}, {b}] }}'
    retry = client.post(
        f"/api/tasks/{task_id}/judgement",
        content=content,
        headers={**keyed, "Content-Type": "application/json"},
    )
    assert first.status_code == retry.status_code == 201
    assert retry.json() == first.json()
    assert len(judgements(db)) == 1


def test_the_same_idempotency_key_with_another_body_is_refused(client, db, headers, leased):
    task_id, (a, b) = leased
    keyed = {**headers, "Idempotency-Key": "retry-me"}
    assert post(client, task_id, keyed, ranking=[a, b]).status_code == 201
    other = post(client, task_id, keyed, ranking=[b, a])
    assert other.status_code == 422
    assert "already used with a different body" in problem(other)
    assert [stored.ranking for stored in judgements(db)] == [[a, b]]


def test_an_empty_idempotency_key_is_refused(client, db, headers, leased):
    task_id, (a, b) = leased
    refused = post(client, task_id, {**headers, "Idempotency-Key": ""}, ranking=[a, b])
    assert refused.status_code == 422
    assert refused.json()["detail"][0]["loc"] == ["header", "Idempotency-Key"]
    assert judgements(db) == []
    assert post(client, task_id, headers, ranking=[a, b]).status_code == 201  # lease intact


def test_an_idempotency_key_cannot_be_reused_for_another_task(client, db, headers, leased):
    task_id, (a, b) = leased
    keyed = {**headers, "Idempotency-Key": "once"}
    assert post(client, task_id, keyed, ranking=[a, b]).status_code == 201
    create_task(db)
    db.commit()
    other = client.get("/api/tasks/next", headers=headers).json()
    ids = [response["id"] for response in other["responses"]]
    assert post(client, other["task_id"], keyed, ranking=ids).status_code == 409


def test_a_late_submission_after_the_lease_expired_is_refused(client, db, headers, leased):
    task_id, (a, b) = leased
    assignment = db.scalar(select(Assignment))
    assignment.expires_at = utcnow() - timedelta(seconds=1)
    db.commit()
    response = post(client, task_id, headers, ranking=[a, b])
    assert response.status_code == 409 and "lease" in response.json()["detail"]
    assert judgements(db) == []


def test_judging_a_task_leased_to_someone_else_is_refused(client, db, make_user, leased):
    task_id, (a, b) = leased
    intruder = api_key_for(db, make_user(Role.RATER, "ivan"))
    assert post(client, task_id, intruder, ranking=[a, b]).status_code == 409
    assert post(client, 999999, intruder, ranking=[a, b]).status_code == 404
    assert judgements(db) == []


def test_a_rewrite_becomes_a_human_response_replacing_the_winner(
    client, db, headers, rater, leased
):
    task_id, (a, b) = leased
    response = post(client, task_id, headers, ranking=[b, a], rewrite="  A much better answer.  ")
    assert response.status_code == 201
    [stored] = judgements(db)
    rewrite = db.get(Response, stored.rewrite_response_id)
    assert rewrite.author_id == rater.id and rewrite.model_version_id is None
    assert rewrite.text == "A much better answer."
    assert rewrite.generation_params["replaces_response_id"] == b


def test_an_unchanged_rewrite_is_not_stored(client, db, headers, leased):
    task_id, (a, b) = leased
    winner_text = db.get(Response, a).text
    assert post(client, task_id, headers, ranking=[a, b], rewrite=winner_text).status_code == 201
    assert judgements(db)[0].rewrite_response_id is None
    assert db.scalar(select(func.count()).select_from(Response)) == 2


def test_the_current_guideline_version_is_recorded(client, db, headers, leased):
    task_id, (a, b) = leased
    guidelines.publish_guidelines(db, body="Be kind.", author=None)
    latest = guidelines.publish_guidelines(db, body="Be kind and exact.", author=None)
    db.commit()
    assert post(client, task_id, headers, ranking=[a, b], guideline_version=99).status_code == 422
    assert post(client, task_id, headers, ranking=[a, b]).status_code == 201
    assert judgements(db)[0].guideline_version_id == latest.id


def test_oversized_text_is_refused(client, headers, leased):
    task_id, (a, b) = leased
    assert post(client, task_id, headers, ranking=[a, b], rewrite="x" * 32_001).status_code == 422


def test_skipping_records_the_reason_and_ends_the_lease(client, db, headers, leased):
    task_id, _ = leased
    response = client.post(
        f"/api/tasks/{task_id}/skip", json={"reason": "I do not read French"}, headers=headers
    )
    assert response.json() == {"task_id": task_id, "status": "skipped"}
    db.expire_all()
    assignment = db.scalar(select(Assignment))
    assert assignment.status == AssignmentStatus.SKIPPED
    assert assignment.skip_reason == "I do not read French"
    again = client.post(f"/api/tasks/{task_id}/skip", json={}, headers=headers)
    assert again.status_code == 409


def test_a_rewrite_names_the_response_it_started_from(client, db, headers, leased):
    task_id, (a, b) = leased
    unchanged = db.get(Response, b).text  # prefilled from B, then the rater chose a tie
    body = {"ranking": [[a, b]], "rewrite": unchanged, "rewrite_of": b}
    assert post(client, task_id, headers, **body).status_code == 201
    assert judgements(db)[0].rewrite_response_id is None


def test_rewrite_of_must_be_one_of_the_tasks_responses(client, headers, leased):
    task_id, (a, b) = leased
    body = {"ranking": [a, b], "rewrite": "new", "rewrite_of": 424242}
    assert post(client, task_id, headers, **body).status_code == 422
