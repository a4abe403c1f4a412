"""Background jobs: the API that starts them, and the database leases that run them once."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import select

from app.domain import jobs, model_registry
from app.models import Job, ModelKind, Prompt, RunStatus, utcnow
from tests.helpers import api_key_for, problem, refused_while_the_model_is_prepared


def register_base(db) -> None:
    model_registry.register_model_version(
        db, name="base", kind=ModelKind.POLICY, path="base", config={}
    )


def test_admins_start_candidate_generation_and_follow_the_job(client, db, admin):
    db.add(Prompt(messages=[{"role": "user", "content": "hi"}], dedup_hash="hi"))
    register_base(db)
    db.commit()
    headers = api_key_for(db, admin)
    prompt_id = db.scalar(select(Prompt.id))
    response = client.post(
        "/api/generations", json={"prompt_ids": [prompt_id], "per_prompt": 3}, headers=headers
    )
    assert response.status_code == 202
    job = client.get(f"/api/jobs/{response.json()['job_id']}", headers=headers).json()
    assert job["kind"] == "generate_candidates" and job["status"] == "queued"
    assert job["params"]["prompt_ids"] == [prompt_id] and job["params"]["per_prompt"] == 3
    db.expire_all()
    assert db.get(Job, job["id"]).dispatched_at is not None  # sent after the commit
    assert [listed["id"] for listed in client.get("/api/jobs", headers=headers).json()] == [
        job["id"]
    ]


def test_generation_requests_are_checked(client, db, admin, rater):
    headers = api_key_for(db, admin)
    cases = [
        {"prompt_ids": [424242]},
        {"model_versions": ["nope"]},
        {"per_prompt": 5},
        {"per_prompt": 1},
        {"temperature": 3},
        {"unexpected": True},
    ]
    for body in cases:
        assert client.post("/api/generations", json=body, headers=headers).status_code == 422
    assert (
        client.post("/api/generations", json={}, headers=api_key_for(db, rater)).status_code == 403
    )
    assert client.get("/api/jobs/999", headers=headers).status_code == 404
    assert db.scalar(select(Job)) is None


def test_no_job_starts_before_a_model_is_ready(client, db, admin, settings):
    headers = api_key_for(db, admin)
    refused_while_the_model_is_prepared(client, settings, "/api/generations", headers)
    body = {"kind": "reward_model", "config": {}}
    assert client.post("/api/training-jobs", json=body, headers=headers).status_code == 409
    assert db.scalar(select(Job)) is None
    register_base(db)
    db.commit()
    assert client.post("/api/generations", json={}, headers=headers).status_code == 202


def new_job(db, **fields) -> Job:
    job = jobs.create_job(db, kind=jobs.GENERATE_CANDIDATES, params={}, created_by=None)
    for name, value in fields.items():
        setattr(job, name, value)
    db.flush()
    return job


def test_a_job_is_claimed_by_one_worker_at_a_time(db):
    job = new_job(db)
    assert jobs.claim_job(db, job_id=job.id, worker="w1") is not None
    assert jobs.claim_job(db, job_id=job.id, worker="w2") is None
    assert jobs.renew_lease(db, job_id=job.id, worker="w2", progress=0.5) is False
    assert jobs.renew_lease(db, job_id=job.id, worker="w1", progress=0.5) is True
    job.lease_expires_at = utcnow() - timedelta(seconds=1)  # w1 died
    assert jobs.claim_job(db, job_id=job.id, worker="w2").attempts == 2
    jobs.finish_job(db, job_id=job.id, worker="w1", result={"late": True})  # ignored
    jobs.finish_job(db, job_id=job.id, worker="w2", result={"tasks": 3})
    assert (job.status, job.result, job.progress) == (RunStatus.SUCCEEDED, {"tasks": 3}, 1.0)


def test_lost_jobs_are_found_for_re_sending(db):
    now = utcnow()
    never_sent = new_job(db)
    sent_long_ago = new_job(db, dispatched_at=now - timedelta(hours=1))
    sent_just_now = new_job(db, dispatched_at=now)
    running = {"status": RunStatus.RUNNING, "lease_owner": "host:1:1"}
    dead_worker = new_job(db, **running, lease_expires_at=now - timedelta(minutes=1))
    healthy = new_job(db, **running, lease_expires_at=now + timedelta(minutes=1))
    new_job(db, status=RunStatus.SUCCEEDED)
    lost = jobs.jobs_to_redispatch(db)
    assert {job.id for job in lost} == {never_sent.id, sent_long_ago.id, dead_worker.id}
    assert dead_worker.status == RunStatus.QUEUED
    after_restart = jobs.jobs_to_redispatch(db, after_restart=True)
    assert {job.id for job in after_restart} == {
        never_sent.id,
        sent_long_ago.id,
        sent_just_now.id,
        dead_worker.id,
        healthy.id,
    }


def test_admins_start_training_jobs_and_bad_requests_are_refused(client, db, admin, rater):
    register_base(db)
    db.commit()
    headers = api_key_for(db, admin)
    accepted = client.post(
        "/api/training-jobs",
        json={"kind": "reward_model", "ties": "half", "config": {"epochs": 1}},
        headers=headers,
    )
    assert accepted.status_code == 202
    job = client.get(f"/api/jobs/{accepted.json()['job_id']}", headers=headers).json()
    assert job["kind"] == "train_reward_model"
    assert job["params"] == {"base": None, "ties": "half", "config": {"epochs": 1}}
    post = lambda body, key=headers: client.post("/api/training-jobs", json=body, headers=key)  # noqa: E731
    assert post({"kind": "ppo"}).status_code == 422
    assert post({"kind": "sft", "base": "missing"}).status_code == 404
    assert post({"kind": "sft", "config": {"epochs": "many"}}).status_code == 422
    unknown = post({"kind": "reward_model", "config": {"epochz": 1}})
    assert unknown.status_code == 422 and "epochz" in problem(unknown)
    assert post({"kind": "sft"}, api_key_for(db, rater)).status_code == 403
