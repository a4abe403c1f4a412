"""Broker loss: with Redis down, work the database accepted answers 202 at once and is sent by
the reclaim task when Redis is back; requests that need the broker now get a quick 503.

The broker is a real `redis-server` on a free port, started and killed by the test.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import time
from collections.abc import Iterator

import pytest
import redis
from fastapi.testclient import TestClient
from sqlalchemy import select

from app.db import make_session_factory
from app.domain import accounts
from app.models import Job, Role, Round
from app.tasks_contract import RECLAIM, TRAIN_QUEUE
from app.web.main import create_app
from tests.conftest import make_settings
from tests.helpers import api_key_for, ready_for_a_round
from tests.live_server import free_port, wait_for
from worker.celery_app import create_celery

QUICK_S = 3.0
"""A request the broker cannot serve answers within this (it took 19 s before)."""

pytestmark = pytest.mark.skipif(
    shutil.which("redis-server") is None, reason="needs redis-server (apt-get install redis)"
)


class PrivateRedis:
    """A `redis-server` of this test's own, on a free port, that the test stops and restarts
    (empty: nothing is saved, as after a crash of a Redis without persistence)."""

    def __init__(self) -> None:
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.process: subprocess.Popen | None = None

    def start(self) -> None:
        self.process = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1"]
            + ["--save", "", "--appendonly", "no"],
            stdout=subprocess.DEVNULL,
        )
        wait_for(self._answers, 10, f"redis-server on port {self.port}")

    def kill(self) -> None:
        if self.process is not None:
            self.process.kill()
            self.process.wait()
            self.process = None

    def queued(self, queue: str) -> list[tuple[str, str]]:
        """(task name, its arguments) of each message waiting in `queue`."""
        messages = redis.Redis.from_url(self.url).lrange(queue, 0, -1)
        headers = [json.loads(message)["headers"] for message in messages]
        return sorted((header["task"], header["argsrepr"]) for header in headers)

    def _answers(self) -> bool:
        try:
            return redis.Redis.from_url(self.url, socket_timeout=1).ping()
        except redis.ConnectionError:
            return False


@pytest.fixture
def private_redis() -> Iterator[PrivateRedis]:
    server = PrivateRedis()
    server.start()
    yield server
    server.kill()


@pytest.fixture
def production(tmp_path, committed_engine, private_redis):
    """Settings for Redis as broker, over a committed database holding a ready `base` model,
    enough judged pairs for a round, and an admin; yields (settings, admin's headers)."""
    settings = make_settings(
        tmp_path / "data",
        database_url=committed_engine.url.render_as_string(False),
        redis_url=private_redis.url,
    )
    with make_session_factory(committed_engine)() as db:
        ready_for_a_round(db)
        admin = accounts.create_user(db, username="ada", password="long enough pw", role=Role.ADMIN)
        headers = api_key_for(db, admin)  # commits
    return settings, headers


def timed_post(client: TestClient, path: str, body: dict, headers: dict) -> tuple[int, float]:
    started = time.monotonic()
    status = client.post(path, json=body, headers=headers).status_code
    return status, time.monotonic() - started


ACCEPTED_WORK = [
    ("/api/generations", {}),
    ("/api/training-jobs", {"kind": "reward_model", "config": {}}),
    ("/api/rounds", {}),
]


def test_with_the_broker_down_work_is_accepted_at_once_and_sent_when_it_is_back(
    production, committed_engine, private_redis
):
    settings, headers = production
    factory = make_session_factory(committed_engine)
    private_redis.kill()
    with TestClient(create_app(settings, engine=committed_engine)) as client:
        answers = [timed_post(client, path, body, headers) for path, body in ACCEPTED_WORK]
        assert [status for status, _ in answers] == [202, 202, 202]
        assert max(seconds for _, seconds in answers) < QUICK_S, answers
        with factory() as db:
            queued = db.scalars(select(Job).order_by(Job.id)).all()
            assert [job.kind for job in queued] == ["generate_candidates", "train_reward_model"]
            assert [job.dispatched_at for job in queued] == [None, None]  # marked as unsent
            round_id, sent_until = db.execute(select(Round.id, Round.lease_expires_at)).one()
            assert sent_until is None

        private_redis.start()  # empty, like a Redis restarted without persistence
        reclaim = create_celery(settings, engine=committed_engine).tasks[RECLAIM]
        reclaimed = reclaim.apply().get()
        assert (reclaimed["resent_jobs"], reclaimed["resent_rounds"]) == (2, 1)
        assert private_redis.queued(TRAIN_QUEUE) == [
            ("alignloop.generate_candidates", f"[{queued[0].id}]"),
            ("alignloop.round_stage", f"({round_id}, 'snapshot')"),
            ("alignloop.train_reward_model", f"[{queued[1].id}]"),
        ]
        assert reclaim.apply().get()["resent_jobs"] == 0  # sent once, not at every run

        # The web tier's own connection recovers: the next job is sent at once.
        assert timed_post(client, *ACCEPTED_WORK[0], headers)[0] == 202
    with factory() as db:
        assert None not in db.scalars(select(Job.dispatched_at)).all()
        assert len(private_redis.queued(TRAIN_QUEUE)) == 4


def test_chat_completions_answer_503_at_once_while_the_broker_is_down(
    production, committed_engine, private_redis
):
    settings, headers = production
    settings = settings.model_copy(update={"inference": "celery"})
    private_redis.kill()
    body = {"model": "base", "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 4}
    with TestClient(create_app(settings, engine=committed_engine)) as client:
        started = time.monotonic()
        response = client.post("/v1/chat/completions", json=body, headers=headers)
    assert response.status_code == 503, response.text
    assert "unavailable" in response.json()["error"]["message"]
    assert time.monotonic() - started < QUICK_S
