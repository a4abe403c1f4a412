"""Shared fixtures: real databases (SQLite and PostgreSQL), per-test rollback, app and users.

Database tests run once per backend. Each backend gets a scratch database for the session,
migrated with Alembic; each test runs inside a transaction that is rolled back afterwards, and
the app under test shares that transaction through savepoints.
"""

from __future__ import annotations

import os

# Under pytest-xdist (`make test` runs 2 workers), one torch thread per worker, for this process
# and every process it starts: two workers of 2 threads each on 2 cores thrash.
if "PYTEST_XDIST_WORKER" in os.environ:
    os.environ["OMP_NUM_THREADS"] = os.environ["MKL_NUM_THREADS"] = "1"

import itertools
import shutil
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import pytest
from argon2 import PasswordHasher
from fastapi import FastAPI
from fastapi.testclient import TestClient
from playwright.sync_api import Browser, sync_playwright
from sqlalchemy import Connection, Engine
from sqlalchemy.orm import Session, sessionmaker

from app import migrate, security
from app.config import Settings
from app.db import make_engine
from app.domain import accounts
from app.models import Role, User
from app.web.main import create_app
from tests.browser import CHROMIUM, CHROMIUM_ARGS
from tests.helpers import PASSWORD, TEST_SECRET, scratch_postgres_database

# The test server's own configuration (not alignloop's): where the local PostgreSQL runs.
POSTGRES_URL = os.environ.get(
    "ALIGNLOOP_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)


def _redis_url_of_this_worker(base: str) -> str:
    """`base` for the first pytest-xdist worker (gw0); the database below it for gw1, and so
    on: a test that flushes its database or consumes a queue never touches another worker's."""
    worker = int(os.environ.get("PYTEST_XDIST_WORKER", "gw0").removeprefix("gw"))
    url = urlsplit(base)
    database = int(url.path.strip("/") or 0) - worker
    if database < 0:
        raise pytest.UsageError(f"{base}: too few Redis databases below it for worker {worker}")
    return urlunsplit(url._replace(path=f"/{database}"))


REDIS_URL = _redis_url_of_this_worker(
    os.environ.get("ALIGNLOOP_TEST_REDIS_URL", "redis://127.0.0.1:6379/15")
)
BACKENDS = ["sqlite", "postgresql"]


# The modules that take longest, started first so that pytest-xdist's workers end together
# rather than one running them alone at the end.
LONGEST_MODULES = ("test_reward_learning.py", "test_admin_browser.py", "test_rounds.py")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    items.sort(key=lambda item: item.path.name not in LONGEST_MODULES)


@pytest.fixture(scope="session", autouse=True)
def cheap_password_hashing() -> Iterator[None]:
    """argon2id at its lowest cost in this process: 2 ms a hash instead of 200 (a test creates
    and logs in users by the hundred). The algorithm and code paths stay the real ones; only
    the work factor meant to slow down attackers goes."""
    with pytest.MonkeyPatch.context() as patch:
        cheap = PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1)
        patch.setattr(security, "_hasher", cheap)
        patch.setattr(security, "_DUMMY_HASH", cheap.hash("unknown user"))
        yield


@contextmanager
def scratch_database(backend: str, folder: Path) -> Iterator[str]:
    """The URL of a new, empty database on `backend`, dropped afterwards."""
    if backend == "sqlite":
        yield f"sqlite:///{folder / f'{uuid.uuid4().hex}.db'}"
        return
    with scratch_postgres_database(POSTGRES_URL, prefix="alignloop_test") as url:
        yield url


@pytest.fixture(scope="session")
def scratch_folder(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("databases")


@pytest.fixture(scope="session", params=BACKENDS)
def engine(request, scratch_folder) -> Iterator[Engine]:
    with scratch_database(request.param, scratch_folder) as url:
        engine = make_engine(url)
        migrate.upgrade(engine)
        yield engine
        engine.dispose()


@pytest.fixture
def connection(engine) -> Iterator[Connection]:
    with engine.connect() as connection:
        transaction = connection.begin()
        yield connection
        transaction.rollback()


@pytest.fixture
def session_factory(connection) -> sessionmaker[Session]:
    return sessionmaker(
        bind=connection, join_transaction_mode="create_savepoint", expire_on_commit=False
    )


@pytest.fixture
def db(session_factory) -> Iterator[Session]:
    with session_factory() as session:
        yield session


def make_settings(data_dir: Path, **overrides) -> Settings:
    values = {
        "data_dir": data_dir,
        "secret_key": TEST_SECRET,
        "redis_url": None,
        "base_model": "tiny-random",
        "device": "cpu",
        **overrides,
    }
    return Settings(_env_file=None, **values)


@pytest.fixture
def settings(tmp_path, engine) -> Settings:
    return make_settings(tmp_path / "data", database_url=engine.url.render_as_string(False))


@pytest.fixture
def app(settings, engine, session_factory) -> FastAPI:
    application = create_app(settings, engine=engine)
    application.state.session_factory = session_factory
    return application


@pytest.fixture
def client(app) -> Iterator[TestClient]:
    with TestClient(app) as test_client:
        yield test_client


@pytest.fixture
def make_user(db) -> Callable[..., User]:
    numbers = itertools.count(1)

    def make(role: Role = Role.RATER, username: str | None = None, password: str = PASSWORD):
        name = username or f"{role.value}{next(numbers)}"
        user = accounts.create_user(db, username=name, password=password, role=role)
        db.commit()
        return user

    return make


@pytest.fixture
def admin(make_user) -> User:
    return make_user(Role.ADMIN, "ada")


@pytest.fixture
def rater(make_user) -> User:
    return make_user(Role.RATER, "rita")


@pytest.fixture(params=BACKENDS)
def committed_engine(request, tmp_path) -> Iterator[Engine]:
    """A migrated scratch database whose writes really commit (for code that opens its own
    connections: tasks, CLI commands, concurrent clients)."""
    with scratch_database(request.param, tmp_path) as url:
        engine = make_engine(url)
        migrate.upgrade(engine)
        yield engine
        engine.dispose()


@pytest.fixture(scope="session")
def bundled_tokenizer_dir(tmp_path_factory) -> Path:
    """SmolLM2's tokenizer converted from the GGUF file once per test session (about 10 s)."""
    from worker.model_store import ModelStore

    data_dir = tmp_path_factory.mktemp("tokenizer")
    store = ModelStore(make_settings(data_dir))
    store.bundled_tokenizer()
    return store.tokenizer_cache


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory, bundled_tokenizer_dir) -> Path:
    """The 3M-parameter `tiny-random` policy with the bundled tokenizer, saved once per session."""
    from worker.model_store import ModelStore

    store = ModelStore(make_settings(tmp_path_factory.mktemp("tiny")))
    shutil.copytree(bundled_tokenizer_dir, store.tokenizer_cache)
    model, tokenizer = store.load_source("tiny-random")
    return store.save("base", model, tokenizer)


@pytest.fixture(scope="session")
def bundled_model_dir(tmp_path_factory) -> Path:
    """The real default model (SmolLM2-135M-Instruct) converted from its GGUF file once per
    test session (about 30 s), for the slow tests."""
    from worker.model_store import ModelStore

    store = ModelStore(make_settings(tmp_path_factory.mktemp("bundled")))
    model, tokenizer = store.load_source("bundled")
    return store.save("bundled", model, tokenizer)


def settings_with_tokenizer(data_dir: Path, tokenizer_dir: Path) -> Settings:
    """Settings whose model store already holds the converted tokenizer."""
    settings = make_settings(data_dir)
    shutil.copytree(tokenizer_dir, settings.models_dir / tokenizer_dir.name)
    return settings


@pytest.fixture
def model_settings(tmp_path, bundled_tokenizer_dir) -> Settings:
    """Settings whose model store already holds the converted tokenizer."""
    return settings_with_tokenizer(tmp_path / "data", bundled_tokenizer_dir)


@pytest.fixture(scope="session")
def chromium() -> Path:
    """Debian's Chromium; browser test modules use it first (`pytestmark`) to skip fast."""
    if CHROMIUM.is_file():
        return CHROMIUM
    reason = f"{CHROMIUM} is missing (apt-get install chromium); the browser tests need it"
    if os.environ.get("ALIGNLOOP_REQUIRE_BROWSER") == "1":
        pytest.fail(f"{reason}, and ALIGNLOOP_REQUIRE_BROWSER=1")
    pytest.skip(reason)


@pytest.fixture
def browser(chromium: Path) -> Iterator[Browser]:
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=str(chromium), args=CHROMIUM_ARGS)
        yield launched
        launched.close()
