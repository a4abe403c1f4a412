"""Database engines and sessions, with the per-backend settings that keep the data safe.

SQLite gets foreign keys, WAL and `BEGIN IMMEDIATE` transactions: SQLite ignores
`SELECT ... FOR UPDATE`, so taking the write lock when a transaction starts is what makes
read-then-write sequences (leasing a task slot, claiming a job) safe between threads and
processes. PostgreSQL uses row locks in the queries themselves.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TypeVar

import anyio
from sqlalchemy import Connection, Engine, Row, Select, create_engine, event, make_url, select
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.sql.dml import Delete, Insert, Update

from app.config import Settings
from app.errors import NotFound

T = TypeVar("T")
SQLITE_BUSY_TIMEOUT_MS = 30_000
DEFAULT_POOL_SIZE = 40  # the web tier's thread pool runs up to 40 requests at once


def make_engine(url: str, *, pool_size: int = DEFAULT_POOL_SIZE) -> Engine:
    """An engine for `url`, configured for the backend it points at."""
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite":
        return create_engine(url, pool_pre_ping=True, pool_size=pool_size, max_overflow=10)
    if parsed.database and parsed.database != ":memory:":
        Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
    engine = create_engine(url, connect_args={"check_same_thread": False})
    _configure_sqlite(engine)
    return engine


def engine_for(settings: Settings) -> Engine:
    """The engine for the configured database."""
    return make_engine(settings.resolved_database_url, pool_size=settings.database_pool_size)


def _configure_sqlite(engine: Engine) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection, _record) -> None:
        # Let SQLAlchemy's "begin" event below decide how transactions start.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA foreign_keys = ON")
        cursor.execute("PRAGMA journal_mode = WAL")
        cursor.execute("PRAGMA synchronous = NORMAL")
        cursor.execute(f"PRAGMA busy_timeout = {SQLITE_BUSY_TIMEOUT_MS}")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(connection) -> None:
        connection.exec_driver_sql("BEGIN IMMEDIATE")


def make_session_factory(engine: Engine) -> sessionmaker[Session]:
    return sessionmaker(engine, expire_on_commit=False)


@contextmanager
def session_scope(factory: sessionmaker[Session]) -> Iterator[Session]:
    """A session that commits when the block succeeds and rolls back when it raises."""
    with factory() as session, session.begin():
        yield session


def ping(engine: Engine) -> None:
    """Raise when the database cannot answer a trivial query.

    Uses a raw connection so that on SQLite no `BEGIN IMMEDIATE` waits behind a busy writer.
    """
    connection = engine.raw_connection()
    try:
        cursor = connection.cursor()
        cursor.execute("SELECT 1")
        cursor.close()
    finally:
        connection.close()


def get_row(db: Session, entity: type[T], row_id: int, *, missing: str) -> T:
    """The row of `entity` with this id, or NotFound(`missing`): a 404 on the web, a clean
    error in the CLI."""
    row = db.get(entity, row_id)
    if row is None:
        raise NotFound(missing)
    return row


def execute_together(
    connection: Connection,
    parameters: dict,
    first: Insert | Update | Delete,
    *others: Insert | Update | Delete,
) -> Row:
    """Run `first` (a statement with RETURNING) and `others` with `parameters` as one unit,
    returning `first`'s row: on PostgreSQL one statement (the others as data-modifying CTEs:
    one round trip), on SQLite one after another in the caller's transaction."""
    if connection.dialect.name == "postgresql":
        return connection.execute(_together(first, *others), parameters).one()
    row = connection.execute(first, parameters).one()
    for statement in others:
        connection.execute(statement, parameters)
    return row


@functools.cache
def _together(first: Insert | Update | Delete, *others: Insert | Update | Delete) -> Select:
    """One statement for `execute_together`, built once per combination of statements."""
    main = first.cte("main")
    also = [statement.cte(f"also_{index}") for index, statement in enumerate(others)]
    return select(main).add_cte(*also)


async def in_transaction(factory: sessionmaker[Session], work: Callable[[Connection], T]) -> T:
    """`work(connection)` in one transaction on one pooled connection, in a worker thread: the
    request makes one thread hop and one connection checkout, however many statements it runs.
    (A session only lends the connection: it loads no objects.)"""

    def run() -> T:
        with session_scope(factory) as session:
            return work(session.connection())

    return await anyio.to_thread.run_sync(run)
