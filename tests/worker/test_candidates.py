"""Candidate generation: from prompts to rating tasks, including A/B tasks between versions."""

from __future__ import annotations

import threading

import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import selectinload

from app.db import make_session_factory, session_scope
from app.domain import jobs
from app.models import (
    Job,
    ModelVersion,
    Prompt,
    Response,
    RunStatus,
    Task,
    TaskKind,
    TaskResponse,
    utcnow,
)
from app.tasks_contract import GENERATE_CANDIDATES
from tests.live_server import wait_for
from worker.candidates import samples_per_version
from worker.celery_app import create_celery
from worker.model_store import ModelStore

QUICK = {"max_new_tokens": 8}


@pytest.mark.parametrize(
    ("per_prompt", "versions", "expected"),
    [(2, 1, [2]), (2, 2, [1, 1]), (3, 2, [2, 1]), (4, 2, [2, 2])],
)
def test_responses_are_split_evenly_between_versions(per_prompt, versions, expected):
    assert samples_per_version(per_prompt, versions) == expected


@pytest.fixture
def world(model_settings, committed_engine):
    """A committed database with three prompts (one held out), the tiny base model, a worker."""
    factory = make_session_factory(committed_engine)
    with session_scope(factory) as db:
        db.add_all(
            Prompt(messages=[{"role": "user", "content": text}], dedup_hash=text, split=split)
            for text, split in (("one", "train"), ("two", "train"), ("held out", "eval"))
        )
    ModelStore(model_settings).ensure_base_version(factory)
    celery = create_celery(model_settings, engine=committed_engine)
    return factory, celery


def run_generation(world, **params) -> Job:
    factory, celery = world
    with session_scope(factory) as db:
        job = jobs.create_job(
            db,
            kind=jobs.GENERATE_CANDIDATES,
            params={"sampling": QUICK, **params},
            created_by=None,
        )
    celery.tasks[GENERATE_CANDIDATES].apply(args=[job.id])
    with factory() as db:
        return db.get(Job, job.id)


def tasks_with_responses(factory) -> list[Task]:
    with factory() as db:
        return list(
            db.scalars(select(Task).options(selectinload(Task.responses)).order_by(Task.id))
        )


def test_training_prompts_without_open_tasks_get_compare_tasks(world):
    job = run_generation(world, overlap=2)
    assert job.status == RunStatus.SUCCEEDED, job.error
    assert job.result["tasks"] == 2 and job.progress == 1.0
    tasks = tasks_with_responses(world[0])
    assert [task.kind for task in tasks] == [TaskKind.COMPARE] * 2
    assert all(task.required_judgements == 2 and len(task.responses) == 2 for task in tasks)
    again = run_generation(world)  # the same prompts now have open tasks
    assert again.result["tasks"] == 0


def test_the_same_seed_samples_the_same_candidates(world):
    factory, _ = world

    def answers(seed: int) -> list[str]:
        job = run_generation(world, prompt_ids=[1, 2], sampling={**QUICK, "seed": seed})
        assert job.status == RunStatus.SUCCEEDED, job.error
        with factory() as db:
            query = select(Response.text).join(TaskResponse).join(Task)
            return list(
                db.scalars(query.where(Task.generation_job_id == job.id).order_by(Response.id))
            )

    first = answers(5)
    assert len(first) == 4 and answers(5) == first and answers(6) != first


def test_a_promoted_version_is_rated_blind_against_its_parent(world, model_settings):
    factory, _ = world
    store = ModelStore(model_settings)
    model, tokenizer = store.load_source("tiny-random")
    store.save("v1", model, tokenizer)
    with session_scope(factory) as db:
        base = db.scalar(select(ModelVersion).where(ModelVersion.name == "base"))
        child = ModelVersion(
            name="v1",
            kind="policy",
            status="ready",
            path="v1",
            parent_id=base.id,
            promoted_at=utcnow(),
        )
        db.add(child)
    job = run_generation(world, per_prompt=2)
    assert job.result["versions"] == ["v1", "base"]
    with factory() as db:
        for task in db.scalars(select(Task).options(selectinload(Task.responses))):
            assert task.kind == TaskKind.AB_EVAL
            authors = {
                db.get(Response, link.response_id).model_version_id for link in task.responses
            }
            assert len(authors) == 2


def test_a_redelivered_message_does_nothing(world):
    factory, celery = world
    job = run_generation(world)
    assert celery.tasks[GENERATE_CANDIDATES].apply(args=[job.id]).get() == "skipped"
    assert len(tasks_with_responses(factory)) == job.result["tasks"]


def test_a_retry_after_the_tasks_were_committed_creates_no_duplicates(world):
    factory, celery = world
    job = run_generation(world)
    with session_scope(factory) as db:  # as if the worker died right after committing tasks
        db.get(Job, job.id).status = RunStatus.QUEUED
    assert celery.tasks[GENERATE_CANDIDATES].apply(args=[job.id]).get() == "succeeded"
    with factory() as db:
        assert db.get(Job, job.id).result["resumed"] is True
    assert len(tasks_with_responses(factory)) == job.result["tasks"]


def test_a_job_that_keeps_killing_its_worker_ends_failed(world):
    factory, celery = world
    with session_scope(factory) as db:
        job = jobs.create_job(db, kind=jobs.GENERATE_CANDIDATES, params={}, created_by=None)
        job.attempts = jobs.MAX_ATTEMPTS
    assert celery.tasks[GENERATE_CANDIDATES].apply(args=[job.id]).get() == "skipped"
    with factory() as db:
        failed = db.get(Job, job.id)
    assert failed.status == RunStatus.FAILED and "Gave up" in failed.error


def test_a_failing_job_records_its_error(world):
    job = run_generation(world, model_versions=["missing"])
    assert job.status == RunStatus.FAILED
    assert job.error


def test_tasks_appear_batch_by_batch_while_the_job_runs(world):
    factory, celery = world
    with session_scope(factory) as db:
        db.add_all(
            Prompt(messages=[{"role": "user", "content": f"q{n}"}], dedup_hash=f"q{n}")
            for n in range(12)
        )
        job = jobs.create_job(
            db,
            kind=jobs.GENERATE_CANDIDATES,
            params={"sampling": {"max_new_tokens": 48}},
            created_by=None,
        )
    running = threading.Thread(target=celery.tasks[GENERATE_CANDIDATES].apply, args=[[job.id]])
    running.start()

    def tasks_while_running() -> int:
        with factory() as db:
            running_now = db.get(Job, job.id).status == RunStatus.RUNNING
            return running_now and db.scalar(select(func.count()).select_from(Task))

    early = wait_for(tasks_while_running, 120, "tasks while the job runs")
    running.join()
    assert 0 < early < 14  # the first batch: 4 prompts
    with factory() as db:
        done = db.get(Job, job.id)
    assert done.status == RunStatus.SUCCEEDED and done.result["tasks"] == 14
    assert done.progress_detail == "14 of 14 prompts answered, 14 tasks ready"
