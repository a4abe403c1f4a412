"""Schema migrations: runs Alembic programmatically on an engine (used by the CLI and tests).

On SQLite, Alembic alters a table by copying it into a new one and dropping the old. With
foreign keys enforced, dropping a table deletes every row that refers to it (ON DELETE
CASCADE), so migrations run with enforcement off and check every reference before committing.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from contextlib import contextmanager

from alembic import command
from alembic.config import Config
from sqlalchemy import Connection, Engine
from sqlalchemy.exc import SAWarning

from app.bundled import bundled_dir

EXPRESSION_INDEX_WARNING = "Skipped unsupported reflection of expression-based index"


class MigrationBrokeReferences(RuntimeError):
    """A migration left rows pointing at rows that do not exist; it was rolled back."""


def alembic_config(engine: Engine) -> Config:
    config = Config()
    config.set_main_option("script_location", str(bundled_dir("migrations")))
    config.set_main_option("sqlalchemy.url", engine.url.render_as_string(hide_password=False))
    return config


def upgrade(engine: Engine, revision: str = "head") -> None:
    _run(engine, command.upgrade, revision)


def downgrade(engine: Engine, revision: str) -> None:
    _run(engine, command.downgrade, revision)


def _run(engine: Engine, action, revision: str) -> None:
    config = alembic_config(engine)
    with migration_connection(engine) as connection, warnings.catch_warnings():
        # Alembic's batch mode on SQLite reflects the tables a migration alters and those they
        # refer to; SQLAlchemy cannot reflect the expression index of open tasks and warns at
        # every first start. A migration that copies `tasks` recreates that index itself (0004).
        warnings.filterwarnings("ignore", EXPRESSION_INDEX_WARNING, SAWarning)
        config.attributes["connection"] = connection
        action(config, revision)


@contextmanager
def migration_connection(engine: Engine) -> Iterator[Connection]:
    """A connection in a transaction that is safe for migrations on either database."""
    with engine.connect() as connection:
        sqlite = connection.dialect.name == "sqlite"
        if sqlite:  # must happen outside a transaction, where SQLite ignores it
            connection.connection.driver_connection.execute("PRAGMA foreign_keys = OFF")
        try:
            with connection.begin():
                yield connection
                if sqlite and (
                    broken := connection.exec_driver_sql("PRAGMA foreign_key_check").all()
                ):
                    raise MigrationBrokeReferences(f"rows with dangling references: {broken[:5]}")
        finally:
            if sqlite:
                connection.connection.driver_connection.execute("PRAGMA foreign_keys = ON")
