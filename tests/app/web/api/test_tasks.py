"""`/api/tasks` leases over HTTP: the held task comes back, `mine` lists leases, `DELETE .../lease`
releases one, and the 429 names what the caller holds."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from app.models import Assignment, AssignmentStatus, Role, Task
from tests.helpers import api_key_for, create_task


@pytest.fixture
def headers(db, rater):
    return api_key_for(db, rater)


@pytest.fixture
def tasks(db) -> list[Task]:
    """Five open tasks: one more than a rater may hold at once (`max_open_leases` is 4)."""
    created = [create_task(db, overlap=2) for _ in range(5)]
    db.commit()
    return created


def lease(client, headers, **params) -> dict:
    answer = client.get("/api/tasks/next", headers=headers, params=params)
    assert answer.status_code == 200, answer.text
    return answer.json()


def leases_of(db, rater) -> list[Assignment]:
    db.expire_all()
    return list(db.scalars(select(Assignment).where(Assignment.rater_id == rater.id)))


def test_next_gives_back_the_held_task_instead_of_a_new_one(client, db, rater, headers, tasks):
    first = lease(client, headers)
    assert lease(client, headers) == first  # same task, order and expiry: a retry loses nothing
    assert len(leases_of(db, rater)) == 1


def test_another_leases_a_further_task_and_mine_lists_them_oldest_first(client, headers, tasks):
    first = lease(client, headers)
    second = lease(client, headers, another="true")
    assert second["task_id"] != first["task_id"]
    assert client.get("/api/tasks/mine", headers=headers).json() == [first, second]
    assert lease(client, headers) == first


def test_mine_is_empty_for_a_rater_who_holds_nothing(client, headers, tasks):
    answer = client.get("/api/tasks/mine", headers=headers)
    assert answer.status_code == 200 and answer.json() == []


def test_the_429_for_too_many_leases_names_the_held_tasks(client, headers, tasks):
    held = [lease(client, headers, another="true")["task_id"] for _ in range(4)]
    refused = client.get("/api/tasks/next", headers=headers, params={"another": "true"})
    assert refused.status_code == 429 and int(refused.headers["Retry-After"]) > 0
    body = refused.json()
    assert body["held_task_ids"] == held
    assert ", ".join(map(str, held)) in body["detail"]
    assert body["detail"].startswith("Finish, skip or release the tasks you hold")


def test_releasing_a_lease_frees_its_slot_and_the_task_may_come_back(
    client, db, rater, headers, tasks
):
    task = lease(client, headers)
    task_id, ranking = task["task_id"], [response["id"] for response in task["responses"]]
    assert client.delete(f"/api/tasks/{task_id}/lease", headers=headers).status_code == 204
    assert client.get("/api/tasks/mine", headers=headers).json() == []
    judgement = {"ranking": ranking}
    late = client.post(f"/api/tasks/{task_id}/judgement", json=judgement, headers=headers)
    assert late.status_code == 409  # a released lease is no lease
    [ended] = leases_of(db, rater)
    assert ended.status == AssignmentStatus.EXPIRED
    assert db.get(Task, task_id).lease_count == 0
    assert lease(client, headers)["task_id"] == task_id  # released, not skipped


def test_releasing_a_task_you_do_not_hold_is_a_404_that_spares_its_holder(
    client, db, rater, headers, make_user, tasks
):
    task_id = lease(client, headers)["task_id"]
    intruder = api_key_for(db, make_user(Role.RATER, "ivan"))
    refused = client.delete(f"/api/tasks/{task_id}/lease", headers=intruder)
    assert refused.status_code == 404
    assert f"You hold no lease on task {task_id}" in refused.json()["detail"]
    assert [each.status for each in leases_of(db, rater)] == [AssignmentStatus.ACTIVE]
    assert db.get(Task, task_id).lease_count == 1
    assert client.delete("/api/tasks/999999/lease", headers=headers).status_code == 404


def test_the_lease_routes_need_a_rater(client, tasks):
    assert client.get("/api/tasks/mine").status_code == 401
    assert client.delete(f"/api/tasks/{tasks[0].id}/lease").status_code == 401
