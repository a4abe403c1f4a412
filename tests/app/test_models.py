"""The constraints that protect the data hold on both databases."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import text
from sqlalchemy.exc import IntegrityError

from app.db import make_engine
from app.models import (
    Assignment,
    AssignmentStatus,
    Judgement,
    ModelKind,
    ModelStatus,
    ModelVersion,
    Prompt,
    Response,
    Role,
    Task,
    TaskResponse,
    utcnow,
)


@pytest.fixture
def task(db, make_user):
    prompt = Prompt(messages=[{"role": "user", "content": "hi"}], dedup_hash="h1")
    db.add(prompt)
    db.flush()
    responses = [Response(prompt_id=prompt.id, text=text_) for text_ in ("a", "b")]
    db.add_all(responses)
    db.flush()
    task = Task(prompt_id=prompt.id)
    task.responses = [
        TaskResponse(response_id=response.id, position=index)
        for index, response in enumerate(responses)
    ]
    db.add(task)
    db.flush()
    return task


def lease(task, rater, status=AssignmentStatus.ACTIVE) -> Assignment:
    return Assignment(
        task_id=task.id,
        rater_id=rater.id,
        status=status,
        response_order=[1, 2],
        expires_at=utcnow() + timedelta(minutes=30),
    )


def judgement(task, rater, **fields) -> Judgement:
    return Judgement(task_id=task.id, rater_id=rater.id, ranking=[1, 2], **fields)


def test_foreign_keys_are_enforced(db):
    db.add(Response(prompt_id=987654, text="orphan"))
    with pytest.raises(IntegrityError):
        db.flush()


def test_one_original_judgement_per_task_and_rater(db, task, rater):
    db.add(judgement(task, rater))
    db.flush()
    db.add(judgement(task, rater))
    with pytest.raises(IntegrityError):
        db.flush()


def test_a_correction_is_a_new_row_that_supersedes_the_original(db, task, rater):
    original = judgement(task, rater)
    db.add(original)
    db.flush()
    db.add(judgement(task, rater, supersedes_id=original.id))
    db.flush()
    db.add(judgement(task, rater, supersedes_id=original.id))
    with pytest.raises(IntegrityError):  # a judgement is corrected at most once
        db.flush()


def test_an_idempotency_key_is_used_once_per_rater(db, task, rater, make_user):
    db.add(judgement(task, rater, idempotency_key="k1"))
    other = make_user(Role.RATER, "otto")
    db.add(judgement(task, other, idempotency_key="k1"))
    db.flush()
    db.add(judgement(task, rater, idempotency_key="k1", supersedes_id=None))
    with pytest.raises(IntegrityError):
        db.flush()


def test_one_live_lease_per_task_and_rater(db, task, rater):
    db.add(lease(task, rater, AssignmentStatus.EXPIRED))
    db.add(lease(task, rater))
    db.flush()
    db.add(lease(task, rater))
    with pytest.raises(IntegrityError):
        db.flush()


def test_a_response_has_at_most_one_author(db, task, rater):
    version = ModelVersion(name="v", kind=ModelKind.POLICY, status=ModelStatus.READY, path="v")
    db.add(version)
    db.flush()
    db.add(
        Response(
            prompt_id=task.prompt_id, text="x", model_version_id=version.id, author_id=rater.id
        )
    )
    with pytest.raises(IntegrityError):
        db.flush()


def test_enumerations_are_checked_by_the_database(db):
    with pytest.raises(IntegrityError):
        db.execute(
            text(
                "INSERT INTO users (username, password_hash, role, is_active, locale, created_at) "
                "VALUES ('x', 'h', 'superuser', true, 'en', CURRENT_TIMESTAMP)"
            )
        )


def test_timestamps_come_back_timezone_aware(db, rater):
    db.expire_all()
    assert db.get(type(rater), rater.id).created_at.tzinfo is not None


def test_naive_timestamps_are_refused(db, rater):
    rater.last_login_at = datetime(2026, 1, 1)
    with pytest.raises(Exception, match="naive datetime"):
        db.flush()
    db.rollback()
    rater.last_login_at = datetime(2026, 1, 1, tzinfo=UTC)
    db.flush()


def test_sqlite_runs_in_wal_mode_with_foreign_keys(tmp_path):
    engine = make_engine(f"sqlite:///{tmp_path / 'pragmas.db'}")
    with engine.connect() as connection:
        assert connection.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        assert connection.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
