"""Alembic environment: migrates the database that alignloop's settings point at.

`app.migrate` passes an open connection in `config.attributes["connection"]`; the plain
`alembic` command falls back to the configured URL.
"""

from logging.config import fileConfig

from alembic import context

from app.config import Settings
from app.db import make_engine
from app.migrate import migration_connection
from app.models import Base, UTCDateTime

config = context.config
if config.config_file_name is not None and not config.attributes.get("connection"):
    fileConfig(config.config_file_name, disable_existing_loggers=False)


def render_item(type_: str, obj, autogen_context) -> str | bool:
    """Render alignloop's column types as plain SQLAlchemy ones, so migrations never import app."""
    if type_ == "type" and isinstance(obj, UTCDateTime):
        return "sa.DateTime(timezone=True)"
    return False


def run_migrations(connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=Base.metadata,
        render_as_batch=True,  # SQLite can only alter tables by copying them
        compare_type=True,
        render_item=render_item,
    )
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        run_migrations(connection)
        return
    engine = make_engine(Settings().resolved_database_url)
    with migration_connection(engine) as connection:
        run_migrations(connection)
    engine.dispose()


if context.is_offline_mode():
    raise SystemExit(
        "alignloop migrations run online only; point ALIGNLOOP_DATABASE_URL at a database"
    )
run_migrations_online()
