"""Test helpers that act like a browser or a script: forms, logins, API keys."""

from __future__ import annotations

import itertools
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from bs4 import BeautifulSoup
from fastapi.testclient import TestClient
from sqlalchemy import Engine, create_engine, event, make_url, text
from sqlalchemy.orm import Session

from app.domain import accounts, model_readiness, model_registry
from app.domain.preferences import build_snapshot, split_of, write_snapshot
from app.models import (
    Judgement,
    KeyScope,
    ModelKind,
    ModelStatus,
    ModelVersion,
    Prompt,
    Response,
    Role,
    Round,
    Task,
    TaskKind,
    TaskResponse,
    User,
)

TEST_SECRET = "test-secret-key-that-is-long-enough-0123456789"
PASSWORD = "correct horse battery staple"


def html(response) -> BeautifulSoup:
    return BeautifulSoup(response.text, "html.parser")


def submit_login(client: TestClient, username: str, password: str, next_path: str = "/"):
    """Fill in and post the login form as a browser would; returns the POST's response."""
    form = html(client.get("/login"))
    token = form.select_one("input[name=login_token]")["value"]
    return client.post(
        "/login",
        data={"username": username, "password": password, "login_token": token, "next": next_path},
        follow_redirects=False,
    )


def problem(response) -> str:
    """The message of a 422 in the API's documented shape (FastAPI's `HTTPValidationError`)."""
    assert response.status_code == 422, response.text
    return response.json()["detail"][0]["msg"]


def browser_login(client: TestClient, username: str, password: str = PASSWORD) -> str:
    """Sign in through the form; returns the session's CSRF token as the pages carry it."""
    response = submit_login(client, username, password)
    assert response.status_code == 303, response.text
    page = html(client.get("/account"))
    return page.select_one("input[name=csrf_token]")["value"]


def cookie_domain(client: TestClient) -> str:
    """The domain the client's cookies are stored under (to plant one back)."""
    return next(cookie.domain for cookie in client.cookies.jar)


def bearer(client: TestClient, username: str, password: str = PASSWORD, **extra) -> dict[str, str]:
    """Bearer headers with a login token from `POST /api/auth/token` (`extra`: e.g. a scope)."""
    response = client.post(
        "/api/auth/token", json={"username": username, "password": password, **extra}
    )
    assert response.status_code == 200, response.text
    return {"Authorization": f"Bearer {response.json()['access_token']}"}


def api_key_for(db: Session, user: User, scope: KeyScope | None = None) -> dict[str, str]:
    """Bearer headers with a new key of `user`'s, with all their role's power unless `scope`."""
    scope = scope or KeyScope.of_role(user.role)
    _, key = accounts.create_api_key(db, user=user, name="test", scope=scope)
    db.commit()
    return {"Authorization": f"Bearer {key}"}


def create_task(
    db: Session,
    *,
    responses: int = 2,
    overlap: int = 2,
    prompt: str | None = None,
    texts: list[str] | None = None,
    dedup_hash: str | None = None,
) -> Task:
    """A prompt with `responses` answers as an open task needing `overlap` judgements (the
    prompt's `dedup_hash`, which decides its train/held-out split, is random unless given)."""
    content = prompt or f"prompt {uuid.uuid4().hex[:8]}"
    row = Prompt(
        messages=[{"role": "user", "content": content}],
        dedup_hash=dedup_hash or uuid.uuid4().hex,
    )
    db.add(row)
    db.flush()
    answers = [
        Response(prompt_id=row.id, text=text)
        for text in (texts or [f"answer {index} to {content}" for index in range(responses)])
    ]
    db.add_all(answers)
    db.flush()
    task = Task(prompt_id=row.id, required_judgements=overlap)
    task.responses = [
        TaskResponse(response_id=answer.id, position=index) for index, answer in enumerate(answers)
    ]
    db.add(task)
    db.flush()
    return task


def refused_while_the_model_is_prepared(
    client: TestClient, settings, path: str, headers: dict[str, str]
) -> None:
    """Mark the bundled base model as being prepared (it stays so), and check that `POST path`
    with an empty body is refused (409) saying why."""
    model_readiness.preparing(settings.models_dir, "bundled")
    refused = client.post(path, json={}, headers=headers)
    assert refused.status_code == 409
    assert "the base model (bundled) is being prepared" in refused.json()["detail"]


def policy_versions(db: Session, *names: str) -> dict[str, ModelVersion]:
    """Ready policy versions by name."""
    made = {
        name: ModelVersion(name=name, kind=ModelKind.POLICY, status=ModelStatus.READY, path=name)
        for name in names
    }
    db.add_all(made.values())
    db.flush()
    return made


def ab_judgement(
    db: Session, rater: User, made: dict, first: str, second: str, *, prefer: str | None
) -> None:
    """A blind A/B task between two versions' answers, judged by `rater` (None: a tie)."""
    task = create_task(db)
    task.kind = TaskKind.AB_EVAL
    first_id, second_id = (link.response_id for link in task.responses)
    db.get(Response, first_id).model_version_id = made[first].id
    db.get(Response, second_id).model_version_id = made[second].id
    if prefer is None:
        ranking = [[first_id, second_id]]
    else:
        ranking = [first_id, second_id] if prefer == first else [second_id, first_id]
    db.add(Judgement(task_id=task.id, rater_id=rater.id, ranking=ranking))
    db.flush()


def judged_tasks_with_rewrites(db: Session, count: int = 12) -> User:
    """`count` tasks judged kind-over-rude by a new rater, each with the rater's rewrite of
    the kind answer; returns the rater. The first task's prompt is held out, the others train."""
    rater = accounts.create_user(db, username="rita", password="long enough pw", role=Role.RATER)
    for index, key in enumerate(prompt_keys(count, held_out=1)):
        texts = [f"Kind answer {index}.", f"Rude answer {index}."]
        task = create_task(db, texts=texts, dedup_hash=key)
        good, bad = (link.response_id for link in task.responses)
        rewrite = Response(
            prompt_id=task.prompt_id,
            author_id=rater.id,
            text=f"Kindest answer {index}.",
            generation_params={"replaces_response_id": good},
        )
        db.add(rewrite)
        db.flush()
        db.add(
            Judgement(
                task_id=task.id,
                rater_id=rater.id,
                ranking=[good, bad],
                rewrite_response_id=rewrite.id,
            )
        )
    return rater


def ready_for_a_round(db: Session, *, pairs: int = 32) -> None:
    """A ready `base` policy and `pairs` judged training comparisons: what a `quick` round
    needs before it may start."""
    if model_registry.get_model_version(db, name="base") is None:
        model_registry.register_model_version(
            db, name="base", kind=ModelKind.POLICY, path="base", config={}
        )
    judge = accounts.create_user(
        db, username=f"judge-{uuid.uuid4().hex[:8]}", password="long enough pw", role=Role.RATER
    )
    for key in prompt_keys(pairs, held_out=0):
        task = create_task(db, dedup_hash=key)
        ranking = [link.response_id for link in task.responses]
        db.add(Judgement(task_id=task.id, rater_id=judge.id, ranking=ranking))
    db.flush()


def prompt_keys(count: int, *, held_out: int) -> list[str]:
    """`count` prompt dedup keys, the first `held_out` of them in the held-out split."""
    keys = (uuid.uuid4().hex for _ in itertools.count())
    wanted = ["held_out"] * held_out + ["train"] * (count - held_out)
    return [next(key for key in keys if split_of(key) == split) for split in wanted]


def snapshot_round(db: Session, snapshots_dir: Path) -> Round:
    """A committed round whose snapshot (written to `snapshots_dir`) holds today's data."""
    snapshot = build_snapshot(db)
    write_snapshot(snapshot, snapshots_dir)
    round_ = Round(
        snapshot_sha256=snapshot.sha256,
        config={"snapshot": {"up_to_judgement_id": snapshot.up_to_judgement_id}},
    )
    db.add(round_)
    db.commit()
    return round_


@contextmanager
def scratch_postgres_database(server_url: str, *, prefix: str) -> Iterator[str]:
    """The URL of a new, empty database on the server of `server_url`, dropped afterwards."""
    name = f"{prefix}_{uuid.uuid4().hex[:12]}"
    server = create_engine(server_url, isolation_level="AUTOCOMMIT")
    with server.connect() as connection:
        connection.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield make_url(server_url).set(database=name).render_as_string(hide_password=False)
    finally:
        with server.connect() as connection:
            connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        server.dispose()


def tiny_model_database(settings, path: Path, scope: KeyScope) -> tuple[Engine, str]:
    """A fresh SQLite database at `path` whose model store (`settings`', which must hold the
    converted tokenizer) has the tiny model as version `base`, and a rater's API key of
    `scope`: the engine and the key."""
    from app import migrate
    from app.db import make_engine, make_session_factory, session_scope
    from worker.model_store import ModelStore

    engine = make_engine(f"sqlite:///{path}")
    migrate.upgrade(engine)
    factory = make_session_factory(engine)
    ModelStore(settings).ensure_base_version(factory)
    with session_scope(factory) as db:
        user = accounts.create_user(db, username="sdk", password="long enough pw", role=Role.RATER)
        _, key = accounts.create_api_key(db, user=user, name="sdk", scope=scope)
    return engine, key


@contextmanager
def serving_tiny_model(settings) -> Iterator[dict]:
    """A live server on a fresh SQLite database in `settings.data_dir`, whose model store holds
    the tiny model as version `base`, with a rater's API key: `{"url", "key", "app",
    "factory"}`. `settings` must hold the converted tokenizer."""
    from app.db import make_session_factory
    from app.web.main import create_app
    from tests.live_server import serve_in_thread

    engine, key = tiny_model_database(settings, settings.data_dir / "serving.db", KeyScope.RATER)
    factory = make_session_factory(engine)
    app = create_app(settings.model_copy(update={"v1_requests_per_minute": 600}), engine=engine)
    try:
        with serve_in_thread(app) as url:
            yield {"url": url, "key": key, "app": app, "factory": factory}
    finally:
        engine.dispose()


@contextmanager
def statements_on(connection) -> Iterator[list[str]]:
    """The SQL statements sent on `connection` (the tests' one connection) inside the block."""
    sent: list[str] = []

    def record(_conn, _cursor, statement, *_):
        sent.append(statement)

    event.listen(connection, "before_cursor_execute", record)
    try:
        yield sent
    finally:
        event.remove(connection, "before_cursor_execute", record)
