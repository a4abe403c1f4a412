"""Alembic migrations: they build the schema the models describe, and go down and up again."""

from __future__ import annotations

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import inspect, select

from app import crud, migrate
from app.db import make_engine, make_session_factory, session_scope
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
        crud.create_user(db, username="keeper", password="long enough pw", role=Role.ADMIN)
    migrate.upgrade(empty_engine)
    with session_scope(factory) as db:
        assert db.scalars(select(User.username)).all() == ["keeper"]
