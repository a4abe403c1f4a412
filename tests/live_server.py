"""Real `alignloop run` and `alignloop web` processes on free ports, for tests that talk to them
over HTTP."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import httpx
from sqlalchemy import Engine

from tests.helpers import TEST_SECRET

STARTUP_TIMEOUT_S = 60
# Ctrl+C is a warm shutdown: a job still running (a promoted model's A/B answers) ends first.
SHUTDOWN_TIMEOUT_S = 90

T = TypeVar("T")


@dataclass(frozen=True)
class LiveServer:
    base_url: str
    env: dict[str, str]
    output: Path  # the process's stdout and stderr


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def wait_for(condition: Callable[[], T], timeout_s: float, what: str) -> T:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if result := condition():
            return result
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


@contextmanager
def alignloop_run(
    data_dir: Path, output: Path, settings: dict[str, str] | None = None
) -> Iterator[LiveServer]:
    """`alignloop run` on the tiny model over `data_dir` (with `ALIGNLOOP_` `settings` on top),
    answering /healthz; on leaving, it is stopped with Ctrl+C and must exit cleanly."""
    settings = {"base_model": "tiny-random", **(settings or {})}
    with _alignloop_server("run", data_dir, output, settings) as server:
        yield server


@contextmanager
def alignloop_web(
    engine: Engine, data_dir: Path, output: Path, settings: dict[str, str] | None = None
) -> Iterator[LiveServer]:
    """`alignloop web`, the production web tier, over `engine`'s database (committed rows
    only) with the tests' secret key, logging warnings only (`ALIGNLOOP_` `settings` on top);
    stopped and checked as `alignloop_run` is."""
    settings = {
        "database_url": engine.url.render_as_string(hide_password=False),
        "secret_key": TEST_SECRET,
        "log_level": "WARNING",
        **(settings or {}),
    }
    with _alignloop_server("web", data_dir, output, settings) as server:
        yield server


@contextmanager
def _alignloop_server(
    command: str, data_dir: Path, output: Path, settings: dict[str, str]
) -> Iterator[LiveServer]:
    port = free_port()
    env = {
        **{key: value for key, value in os.environ.items() if not key.startswith("ALIGNLOOP_")},
        "ALIGNLOOP_DATA_DIR": str(data_dir),
        **{f"ALIGNLOOP_{name.upper()}": value for name, value in settings.items()},
    }
    with open(output, "wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "app.cli", command, "--host", "127.0.0.1", "--port", str(port)],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    server = LiveServer(base_url=f"http://127.0.0.1:{port}", env=env, output=output)

    def healthy() -> bool:
        try:
            return httpx.get(f"{server.base_url}/healthz", timeout=1).status_code == 200
        except httpx.TransportError:
            assert process.poll() is None, output.read_text()
            return False

    try:
        wait_for(healthy, STARTUP_TIMEOUT_S, f"alignloop {command} to answer /healthz")
        yield server
    finally:
        exit_code = _interrupt(process)
    assert exit_code == 0, output.read_text()


def _interrupt(process: subprocess.Popen) -> int:
    """Stop the process as Ctrl+C would (killing it if that hangs); returns its exit code."""
    process.send_signal(signal.SIGINT)
    try:
        return process.wait(timeout=SHUTDOWN_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
        raise


@contextmanager
def serve_in_thread(app, **options) -> Iterator[str]:
    """`app` under a real uvicorn server on a thread of this process (with uvicorn `options`,
    such as `app.cli.uvicorn_options`); yields its base URL."""
    import threading

    import uvicorn

    port = free_port()
    config = uvicorn.Config(app, host="127.0.0.1", port=port, **{"log_level": "warning", **options})
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        wait_for(lambda: server.started, STARTUP_TIMEOUT_S, "the in-process server")
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(SHUTDOWN_TIMEOUT_S)
