"""docker-compose.yml's Redis, started here exactly as compose starts it: it takes no client
without the password, and a full broker refuses writes rather than evicting queued messages."""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from pathlib import Path

import pytest
import redis
import yaml

from tests.live_server import free_port

COMPOSE = Path(__file__).resolve().parents[1] / "docker-compose.yml"


@pytest.fixture
def compose_redis(tmp_path):
    if shutil.which("redis-server") is None:
        pytest.skip("redis-server is not installed")
    service = yaml.safe_load(COMPOSE.read_text())["services"]["redis"]
    password, port = "a-url-safe-password", free_port()
    command = service["command"][-1].replace("$$REDIS_PASSWORD", password)
    command += f" --port {port} --bind 127.0.0.1 --dir {tmp_path}"
    server = subprocess.Popen(["sh", "-c", command], stdout=subprocess.DEVNULL)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            break
        except OSError:
            time.sleep(0.05)
    yield port, password
    server.terminate()
    server.wait(timeout=10)


def test_the_broker_needs_its_password_and_never_evicts(compose_redis):
    port, password = compose_redis
    with pytest.raises(redis.AuthenticationError):
        redis.Redis(port=port).ping()
    url = yaml.safe_load(COMPOSE.read_text())["x-alignloop"]["environment"]["ALIGNLOOP_REDIS_URL"]
    assert url.startswith("redis://:${REDIS_PASSWORD")
    client = redis.Redis.from_url(f"redis://:{password}@127.0.0.1:{port}/0")
    assert client.ping()
    assert client.config_get("maxmemory-policy") == {"maxmemory-policy": "noeviction"}
    assert int(client.config_get("maxmemory")["maxmemory"]) > 0
