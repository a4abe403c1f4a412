"""`/v1` per-key limits shared through Redis: by limiters of different processes, by two real
`alignloop web` processes, and what happens when Redis is down."""

from __future__ import annotations

import logging
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from itertools import cycle

import httpx
import pytest
import redis

from app.db import make_session_factory, session_scope
from app.domain import accounts
from app.errors import RateLimited
from app.models import Role
from app.web import ratelimit
from app.web.ratelimit import KEY_PREFIX, KeyLimiter
from tests.conftest import REDIS_URL
from tests.helpers import api_key_for
from tests.live_server import alignloop_web, free_port, wait_for

CLOSED_PORT_URL = "redis://127.0.0.1:1/0"


@pytest.fixture
def clean_redis():
    """The limiters' keys gone from the test Redis database before and after."""

    def clean() -> None:
        client = redis.Redis.from_url(REDIS_URL)
        for key in client.scan_iter(f"{KEY_PREFIX}:*"):
            client.delete(key)
        client.close()

    clean()
    yield
    clean()


def shared_limiters(count: int = 2, **limits) -> list[KeyLimiter]:
    """`count` limiters on one Redis, as `count` web processes hold them."""
    options = {"max_concurrent": 10, "per_minute": 100, **limits}
    return [KeyLimiter(redis_url=REDIS_URL, **options) for _ in range(count)]


def test_two_limiters_on_one_redis_share_the_rate(clean_redis):
    limiters = cycle(shared_limiters(per_minute=3))
    for _ in range(3):
        limiter = next(limiters)
        limiter.release("key:1", limiter.acquire("key:1"))
    with pytest.raises(RateLimited) as refused:
        next(limiters).acquire("key:1")
    assert 50 <= int(refused.value.headers["Retry-After"]) <= 60
    next(limiters).acquire("key:2")  # another key has its own limit


def test_two_limiters_on_one_redis_share_the_concurrency_cap(clean_redis):
    first, second = shared_limiters(max_concurrent=2)
    held = [first.acquire("key:1"), second.acquire("key:1")]
    with pytest.raises(RateLimited, match="at most 2"):
        first.acquire("key:1")
    second.release("key:1", held.pop())
    assert first.acquire("key:1")


def test_the_slots_of_a_process_that_died_end_with_their_lease(clean_redis):
    crashed, survivor = shared_limiters(max_concurrent=1, slot_lease_s=1)
    crashed.acquire("key:1")  # never released
    with pytest.raises(RateLimited):
        survivor.acquire("key:1")
    time.sleep(1.1)
    assert survivor.acquire("key:1")


def test_a_request_refused_for_concurrency_spends_no_rate(clean_redis):
    [limiter] = shared_limiters(1, max_concurrent=1, per_minute=2)
    slot = limiter.acquire("key:1")
    for _ in range(3):
        with pytest.raises(RateLimited, match="concurrent"):
            limiter.acquire("key:1")
    limiter.release("key:1", slot)
    limiter.acquire("key:1")


def test_with_redis_down_requests_pass_and_the_outage_is_logged_once(caplog):
    limiter = KeyLimiter(max_concurrent=1, per_minute=1, redis_url=CLOSED_PORT_URL)
    with caplog.at_level(logging.WARNING, logger="app.web.ratelimit"):
        slots = [limiter.acquire("key:1") for _ in range(3)]
        for slot in slots:
            limiter.release("key:1", slot)
    assert slots == ["", "", ""]
    [logged] = [record.message for record in caplog.records if record.name == "app.web.ratelimit"]
    assert "not enforced: Redis is unreachable" in logged


@contextmanager
def redis_server(port: int) -> Iterator[None]:
    """A Redis server of this test's own on `port`, stopped on leaving."""
    process = subprocess.Popen(
        ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", ""],
        stdout=subprocess.DEVNULL,
    )
    try:
        wait_for(lambda: _answers(port), 10, "redis-server to start")
        yield
    finally:
        process.terminate()
        process.wait(10)


def _answers(port: int) -> bool:
    try:
        return redis.Redis(port=port, socket_connect_timeout=0.2).ping()
    except redis.ConnectionError:
        return False


def test_limits_fail_open_while_redis_is_down_and_hold_again_once_it_is_back(caplog, monkeypatch):
    port = free_port()
    limiter = KeyLimiter(max_concurrent=5, per_minute=1, redis_url=f"redis://127.0.0.1:{port}/0")
    monkeypatch.setattr(ratelimit, "OUTAGE_RETRY_S", 0.0)
    with caplog.at_level(logging.WARNING, logger="app.web.ratelimit"):
        with redis_server(port):
            assert limiter.acquire("key:1")
        assert limiter.acquire("key:1") == ""  # over the limit, but Redis is down
        with redis_server(port):  # back, empty
            assert limiter.acquire("key:1")
            with pytest.raises(RateLimited):
                limiter.acquire("key:1")
    logged = [record.message for record in caplog.records if record.name == "app.web.ratelimit"]
    assert len(logged) == 2
    assert "not enforced" in logged[0] and "enforced again" in logged[1]


def test_without_redis_the_limits_hold_in_this_process():
    limiter = KeyLimiter(max_concurrent=1, per_minute=2)
    limiter.release("key:1", limiter.acquire("key:1"))
    slot = limiter.acquire("key:1")
    with pytest.raises(RateLimited, match="concurrent"):
        limiter.acquire("key:1")
    limiter.release("key:1", slot)
    with pytest.raises(RateLimited, match="per minute"):
        limiter.acquire("key:1")


@pytest.mark.parametrize("committed_engine", ["sqlite"], indirect=True)
def test_two_web_processes_on_one_redis_share_one_limit(committed_engine, tmp_path, clean_redis):
    """N + k requests alternating between two `alignloop web` processes: exactly k get 429.
    The model is unknown, so the N within the limit answer 404 without loading one."""
    per_minute, excess = 4, 3
    with session_scope(make_session_factory(committed_engine)) as db:
        user = accounts.create_user(db, username="cli", password="long enough pw", role=Role.RATER)
        headers = api_key_for(db, user)
    settings = {
        "redis_url": REDIS_URL,
        "inference": "celery",  # the web tier without torch
        "v1_requests_per_minute": str(per_minute),
    }
    body = {"model": "no-such-model", "messages": [{"role": "user", "content": "Hi"}]}
    with (
        alignloop_web(committed_engine, tmp_path / "data", tmp_path / "one.log", settings) as one,
        alignloop_web(committed_engine, tmp_path / "data", tmp_path / "two.log", settings) as two,
    ):
        servers = cycle([one.base_url, two.base_url])
        responses = [
            httpx.post(f"{next(servers)}/v1/chat/completions", json=body, headers=headers)
            for _ in range(per_minute + excess)
        ]
    assert [response.status_code for response in responses] == [404] * per_minute + [429] * excess
    assert all(int(response.headers["retry-after"]) >= 1 for response in responses[per_minute:])
