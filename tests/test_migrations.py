"""Alembic migrations: they build the schema the models describe, and go down and up again."""

from __future__ import annotations

import json

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import inspect, select, text

from app import migrate
from app.db import make_engine, make_session_factory, session_scope
from app.domain import accounts
from app.models import Base, Role, User
from tests.conftest import BACKENDS, scratch_database


@pytest.fixture(params=BACKENDS)
def empty_engine(request, tmp_path):
    with scratch_database(request.param, tmp_path) as url:
        engine = make_engine(url)
        yield engine
        engine.dispose()


def schema_drift(engine) -> list:
    with engine.connect() as connection:
        context = MigrationContext.configure(connection, opts={"compare_type": True})
        return compare_metadata(context, Base.metadata)


def test_migrations_match_the_models(empty_engine):
    migrate.upgrade(empty_engine)
    assert schema_drift(empty_engine) == []


def test_upgrade_downgrade_upgrade(empty_engine):
    migrate.upgrade(empty_engine)
    migrate.downgrade(empty_engine, "base")
    assert set(inspect(empty_engine).get_table_names()) <= {"alembic_version"}
    migrate.upgrade(empty_engine)
    assert "judgements" in inspect(empty_engine).get_table_names()


def test_the_migration_chain_is_linear():
    script = ScriptDirectory.from_config(migrate.alembic_config(make_engine("sqlite://")))
    assert len(script.get_heads()) == 1


def test_upgrading_again_keeps_every_row(empty_engine):
    migrate.upgrade(empty_engine)
    factory = make_session_factory(empty_engine)
    with session_scope(factory) as db:
        accounts.create_user(db, username="keeper", password="long enough pw", role=Role.ADMIN)
    migrate.upgrade(empty_engine)
    with session_scope(factory) as db:
        assert db.scalars(select(User.username)).all() == ["keeper"]


def upgrade_past(engine, revision: str, seed: list[str]) -> None:
    """Upgrade to `revision`, store the `seed` rows as that schema holds them, then upgrade to
    the head."""
    migrate.upgrade(engine, revision)
    with engine.begin() as connection:
        for statement in seed:
            connection.execute(text(statement))
    migrate.upgrade(engine)


def test_the_rating_workflow_migration_keeps_and_backfills_existing_rows(empty_engine):
    upgrade_past(empty_engine, "0001", SEED_0001)
    with empty_engine.connect() as connection:
        task = connection.execute(text("SELECT judgement_count, lease_count FROM tasks")).one()
        judgement = connection.execute(text("SELECT all_bad, flags FROM judgements")).one()
        leases = connection.execute(text("SELECT count(*) FROM assignments")).scalar()
    assert tuple(task) == (1, 1)  # one judgement, one lease still active
    flags = judgement.flags if isinstance(judgement.flags, dict) else json.loads(judgement.flags)
    assert not judgement.all_bad and flags == {}
    assert leases == 2


SEED_0001 = [
    "INSERT INTO users (id, username, password_hash, role, is_active, locale, created_at) VALUES "
    "(1, 'ann', 'x', 'rater', true, 'en', CURRENT_TIMESTAMP), "
    "(2, 'bob', 'x', 'rater', true, 'en', CURRENT_TIMESTAMP)",
    "INSERT INTO prompts (id, messages, source, tags, split, dedup_hash, created_at) VALUES "
    "(1, '[]', '', '[]', 'train', 'h', CURRENT_TIMESTAMP)",
    "INSERT INTO responses (id, prompt_id, text, generation_params, created_at) VALUES "
    "(1, 1, 'a', '{}', CURRENT_TIMESTAMP), (2, 1, 'b', '{}', CURRENT_TIMESTAMP)",
    "INSERT INTO tasks (id, prompt_id, kind, status, required_judgements, is_gold, created_at) "
    "VALUES (1, 1, 'compare', 'open', 3, false, CURRENT_TIMESTAMP)",
    "INSERT INTO assignments (id, task_id, rater_id, status, response_order, leased_at, "
    "expires_at) VALUES (1, 1, 1, 'submitted', '[1, 2]', CURRENT_TIMESTAMP, CURRENT_TIMESTAMP), "
    "(2, 1, 2, 'active', '[2, 1]', CURRENT_TIMESTAMP, CURRENT_TIMESTAMP)",
    "INSERT INTO judgements (id, task_id, rater_id, assignment_id, ranking, flags, created_at) "
    "VALUES (1, 1, 1, 1, '[1, 2]', '[]', CURRENT_TIMESTAMP)",
]


def test_the_round_line_migration_keeps_one_active_round_per_line_and_every_row(empty_engine):
    migrate.upgrade(empty_engine, "0004")
    with empty_engine.begin() as connection:
        connection.execute(
            text(
                "INSERT INTO rounds (id, line, algorithm, preset, status, stage, progress, config,"
                " metrics, timings, attempts, cancel_requested, created_at) VALUES "
                + ", ".join(
                    f"({id_}, '{line}', 'ppo', 'quick', '{status}', 'pending', 0, '{{}}', '{{}}',"
                    " '{}', 0, false, CURRENT_TIMESTAMP)"
                    for id_, line, status in [
                        (1, "main", "running"),
                        (2, "main", "queued"),
                        (3, "main", "succeeded"),
                        (4, "other", "queued"),
                    ]
                )
            )
        )
    migrate.upgrade(empty_engine)
    with empty_engine.connect() as connection:
        statuses = dict(connection.execute(text("SELECT id, status FROM rounds")).all())
    assert statuses == {1: "running", 2: "failed", 3: "succeeded", 4: "queued"}


def test_the_key_scope_migration_gives_each_existing_key_its_owners_role(empty_engine):
    upgrade_past(empty_engine, "0006", SEED_0006)
    with empty_engine.connect() as connection:
        scopes = dict(connection.execute(text("SELECT id, scope FROM api_keys")).all())
    assert scopes == {1: "rater", 2: "admin", 3: "admin"}


SEED_0006 = [
    "INSERT INTO users (id, username, password_hash, role, is_active, locale, created_at) VALUES "
    "(1, 'ann', 'x', 'rater', true, 'en', CURRENT_TIMESTAMP), "
    "(2, 'ada', 'x', 'admin', true, 'en', CURRENT_TIMESTAMP)",
    "INSERT INTO api_keys (id, user_id, name, prefix, key_hash, created_at) VALUES "
    "(1, 1, 'a', 'al_1', 'h1', CURRENT_TIMESTAMP), (2, 2, 'b', 'al_2', 'h2', CURRENT_TIMESTAMP), "
    "(3, 2, 'c', 'al_3', 'h3', CURRENT_TIMESTAMP)",
]
