"""Celery: the same tasks run on the embedded worker and on a real Redis-backed worker process."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from datetime import timedelta

import pytest
import redis
from sqlalchemy import func, select

from app.db import make_session_factory, session_scope
from app.domain import accounts
from app.models import Role, WebSession
from app.tasks_contract import (
    DEFAULT_QUEUE,
    INFERENCE_QUEUE,
    PING,
    PURGE_EXPIRED_CREDENTIALS,
    TRAIN_QUEUE,
    TRAIN_TIME_LIMIT_S,
)
from tests.conftest import REDIS_URL, make_settings
from worker.celery_app import create_celery
from worker.embedded import EmbeddedWorker

RESULT_TIMEOUT_S = 60


def test_messages_are_json_only_and_delivery_is_late_acknowledged(tmp_path):
    conf = create_celery(make_settings(tmp_path)).conf
    assert conf.task_serializer == conf.result_serializer == "json"
    assert conf.accept_content == ["json"]
    assert conf.task_acks_late and conf.task_reject_on_worker_lost
    assert conf.worker_prefetch_multiplier == 1
    assert conf.task_time_limit and conf.task_soft_time_limit < conf.task_time_limit
    assert {queue.name for queue in conf.task_queues} == {
        DEFAULT_QUEUE,
        TRAIN_QUEUE,
        INFERENCE_QUEUE,
    }
    assert conf.beat_scheduler == "celery.beat:Scheduler"  # not the shelve (pickle) one


def test_production_uses_redis_as_broker_and_result_backend(tmp_path):
    celery = create_celery(make_settings(tmp_path, redis_url=REDIS_URL))
    assert celery.conf.broker_url == REDIS_URL
    assert celery.conf.result_backend == REDIS_URL


def test_a_long_round_outlives_redis_timeouts_and_connection_losses(tmp_path):
    conf = create_celery(make_settings(tmp_path, redis_url=REDIS_URL)).conf
    visibility = conf.broker_transport_options["visibility_timeout"]
    assert conf.result_backend_transport_options["visibility_timeout"] == visibility
    assert visibility > TRAIN_TIME_LIMIT_S
    assert conf.worker_cancel_long_running_tasks_on_connection_loss is False


@pytest.mark.parametrize("queue", [DEFAULT_QUEUE, TRAIN_QUEUE])
def test_the_embedded_worker_answers_ping_without_a_broker_server(tmp_path, queue):
    celery = create_celery(make_settings(tmp_path))
    with EmbeddedWorker(celery, with_beat=False):
        result = celery.send_task(PING, queue=queue)
        assert result.get(timeout=RESULT_TIMEOUT_S, interval=0.05) == "pong"


def test_the_embedded_worker_runs_one_train_task_at_a_time_beside_the_default_queue(tmp_path):
    """Two model-sized job processes at once would double the peak memory (bench/RESULTS.md)."""
    celery = create_celery(make_settings(tmp_path))
    running: list[int] = []
    overlaps: list[int] = []
    lock = threading.Lock()

    @celery.task(name="test.hold_the_train_queue")
    def hold() -> None:
        with lock:
            running.append(1)
            overlaps.append(len(running))
        time.sleep(0.5)
        with lock:
            running.pop()

    with EmbeddedWorker(celery, with_beat=False):
        held = [celery.send_task(hold.name, queue=TRAIN_QUEUE) for _ in range(3)]
        started = time.monotonic()
        # The default queue answers while the train queue is busy.
        assert celery.send_task(PING, queue=DEFAULT_QUEUE).get(timeout=5, interval=0.05) == "pong"
        assert time.monotonic() - started < 1.0
        for result in held:
            result.get(timeout=RESULT_TIMEOUT_S, interval=0.05)
    assert overlaps == [1, 1, 1]


def test_the_embedded_scheduler_keeps_no_pickled_state(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    celery = create_celery(make_settings(tmp_path / "data"))
    with EmbeddedWorker(celery):
        time.sleep(2)  # the default scheduler writes its shelve file within a second of starting
    assert list(tmp_path.glob("celerybeat-schedule*")) == []


@pytest.fixture
def redis_worker(tmp_path):
    """`alignloop worker` as a real subprocess on the local Redis (a scratch database number)."""
    redis.Redis.from_url(REDIS_URL).flushdb()
    env = {
        **os.environ,
        "ALIGNLOOP_REDIS_URL": REDIS_URL,
        "ALIGNLOOP_DATA_DIR": str(tmp_path),
        "ALIGNLOOP_LOG_LEVEL": "WARNING",
    }
    process = subprocess.Popen(
        [sys.executable, "-m", "app.cli", "worker", "-Q", "default,train", "-c", "1"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    yield process
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        process.kill()
    redis.Redis.from_url(REDIS_URL).flushdb()


def test_a_redis_worker_process_answers_ping(tmp_path, redis_worker):
    celery = create_celery(make_settings(tmp_path, redis_url=REDIS_URL))
    for queue in (DEFAULT_QUEUE, TRAIN_QUEUE):
        result = celery.send_task(PING, queue=queue)
        try:
            assert result.get(timeout=RESULT_TIMEOUT_S) == "pong"
        except Exception:
            redis_worker.kill()
            print(redis_worker.stdout.read().decode(errors="replace"))
            raise


def test_purging_removes_expired_sessions_only(tmp_path, committed_engine):
    factory = make_session_factory(committed_engine)
    with session_scope(factory) as db:
        user = accounts.create_user(db, username="sam", password="long enough pw", role=Role.RATER)
        accounts.create_web_session(db, user=user, ttl=timedelta(hours=1))
        accounts.create_web_session(db, user=user, ttl=timedelta(seconds=-1))
    celery = create_celery(make_settings(tmp_path), engine=committed_engine)
    assert celery.tasks[PURGE_EXPIRED_CREDENTIALS].apply().get() == 1
    with factory() as db:
        assert db.scalar(select(func.count()).select_from(WebSession)) == 1
