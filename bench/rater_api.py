"""Rater API throughput: `GET /api/tasks/next` + `POST /api/tasks/{id}/judgement`, on PostgreSQL
or SQLite.

What it measures
    64 concurrent raters (by default), each with its own API key, loop "fetch the next task,
    submit a ranking for it" against the real web tier (`alignloop web`, uvicorn) on a scratch
    PostgreSQL database, or with `--database sqlite` on the app's embedded default, a SQLite
    file in a temporary folder. The reference is the same clients hitting the app's no-op
    endpoint (`GET /healthz`) on the same server in the same run, measured before and after the
    rating workload; the result is a ratio, because absolute numbers on our shared 2-core
    machines vary from run to run far more than the ratio does.

    With `--think LOW-HIGH` the raters are people rather than scripts: each pauses a random
    LOW..HIGH seconds after every submit (their arrivals spread over the first pause), so the
    load is what a crowd of that size sends and the figures that matter are the latencies.
    The no-op reference then runs `--reference-seconds` per phase.

    Reported: requests/s and pairs/s (one pair = next + submit), the ratio of the workload's
    request rate to the no-op request rate (the figure the target refers to) and the stricter
    pair-rate ratio, p50/p99 latency per endpoint, CPU used by server, PostgreSQL (on SQLite the
    server does the database's work) and client, every non-2xx response, and SQL checks that no
    task got more judgements than it needs and no rater judged a task twice. Targets: request
    ratio >= 0.5 and p99 < 100 ms for the closed loop; p99 < 100 ms and no errors with think
    time.

    Then the server's CPU ms per request of each route (mean and p50 for no-op, next and
    submit): after the measured phases, one rater sends `--calibration-requests` no-op requests
    and as many next+submit pairs, each after the last answer, and the kernel's run time of
    every server thread (/proc/<pid>/task/*/schedstat, in ns) is read before and after each.
    With no other load that difference is the request's cost, free of queueing and of the
    10 ms ticks of the CPU table: the figure that bounds the ratio while one server process is
    the limit, steadier than the rates on a shared machine. It includes the database's work on
    SQLite, not PostgreSQL's. Linux only: elsewhere the calibration is skipped.

Why this shape
    The load generator runs in its own process (asyncio on uvloop, HTTP/1.1 parsed by
    httptools), so it never competes with the server for its GIL, and is cheap enough per
    request that the no-op reference measures the server rather than the client (the CPU table
    shows both). Each client holds one keep-alive connection, like a script rater.

Usage
    .venv/bin/python bench/rater_api.py [--clients 64] [--seconds 20] [--workers 1]
        [--think 2-5 [--reference-seconds 20]]
        [--database-url postgresql+psycopg://postgres@127.0.0.1:5432/test]
        [--calibration-requests 300]
    .venv/bin/python bench/rater_api.py --database sqlite [--clients 64] [--seconds 20] ...

    200 raters with think time for 10 minutes (issue 14's load test; `pytest -m long
    tests/app/web/api/test_rater_load.py` runs it and fails on any error or violated check):
    .venv/bin/python bench/rater_api.py --clients 200 --think 2-5 --seconds 600 --tasks 20000

`--database-url` names a database on the PostgreSQL server to use; the benchmark creates a
scratch database beside it (dropped at the end) and never touches the named one. Where that
server's autovacuum is off (our test machines), the bench vacuums the rating tables every
`--vacuum-every` seconds in its place, and says so: every lease and judgement updates a task
row, and the dead rows that pile up without vacuum slow each `next` more and more. The SQLite
database is deleted with its folder at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import multiprocessing
import os
import platform
import random
import secrets
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from array import array
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from multiprocessing.connection import Connection as PipeEnd
from pathlib import Path
from typing import Literal

import httptools
import psutil
import uvloop
from sqlalchemy import Connection as SqlConnection
from sqlalchemy import create_engine, insert, make_url, text
from sqlalchemy.pool import NullPool

# The app itself is imported inside the functions that seed the database, not here: the client
# processes import this module too and should stay small and quick to start.

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))  # run as a script from bench/: make `tests` importable
from tests.helpers import scratch_postgres_database  # noqa: E402

HOST = "127.0.0.1"
DEFAULT_DATABASE_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
REDIS_URL = "redis://127.0.0.1:6379/14"  # the web tier only uses it for /readyz
TARGET_RATIO = 0.5
TARGET_P99_MS = 100.0
SERVER_START_TIMEOUT_S = 60.0
REQUEST_TIMEOUT_S = 30.0
START_DELAY_S = 1.0  # between "all clients ready" and the common start time
IDLE_PAUSE_S = 0.05  # a client that got no task waits this long before asking again
MAX_ERROR_EXAMPLES = 5  # error bodies kept per client process

Workload = Literal["noop", "rate"]
ENDPOINTS = ("noop", "next", "submit")


# --- database: scratch database, seed data, checks -------------------------------------------


def prepare_database(url: str, *, raters: int, tasks: int) -> list[str]:
    """Migrate the database, seed raters and tasks; returns one API key per rater."""
    from app import migrate
    from app.db import make_engine, make_session_factory, session_scope

    engine = make_engine(url)
    try:
        migrate.upgrade(engine)
        with session_scope(make_session_factory(engine)) as session:
            keys = _seed_raters(session, raters)
            _seed_tasks(session, tasks)
        # A live database has statistics (autovacuum gathers them); without them the planner
        # sorts every open task instead of walking the free-slots index. In a transaction: on
        # SQLite, the app's engine would roll back an autocommit connection's `BEGIN IMMEDIATE`.
        with engine.begin() as connection:
            connection.execute(text("ANALYZE"))
    finally:
        engine.dispose()
    return keys


def _seed_raters(session, count: int) -> list[str]:
    from app.domain import accounts
    from app.models import KeyScope, Role

    keys = []
    for number in range(count):
        user = accounts.create_user(
            session,
            username=f"bench-rater-{number:03d}",
            password=secrets.token_urlsafe(12),
            role=Role.RATER,
        )
        session.flush()
        keys.append(
            accounts.create_api_key(session, user=user, name="bench", scope=KeyScope.RATER)[1]
        )
    return keys


def _seed_tasks(session, count: int) -> None:
    """`count` open tasks of two responses each, needing alternately 2 and 3 judgements."""
    from seeding import link_response_pairs  # bench/seeding.py, next to this file

    from app.models import Prompt, Response, Task

    prompt_ids = session.scalars(
        insert(Prompt).returning(Prompt.id, sort_by_parameter_order=True),
        [
            {
                "messages": [{"role": "user", "content": f"Benchmark question {n}?"}],
                "dedup_hash": f"bench-{n}",
            }
            for n in range(count)
        ],
    ).all()
    response_ids = session.scalars(
        insert(Response).returning(Response.id, sort_by_parameter_order=True),
        [
            {"prompt_id": prompt_id, "text": f"Answer {side} to question {prompt_id}."}
            for prompt_id in prompt_ids
            for side in ("A", "B")
        ],
    ).all()
    task_ids = session.scalars(
        insert(Task).returning(Task.id, sort_by_parameter_order=True),
        [
            {"prompt_id": prompt_id, "required_judgements": 2 + n % 2}
            for n, prompt_id in enumerate(prompt_ids)
        ],
    ).all()
    link_response_pairs(session, task_ids, response_ids)


CHECKS = {
    "tasks with more judgements than required": """
        SELECT count(*) FROM tasks t
        WHERE (SELECT count(*) FROM judgements j
               WHERE j.task_id = t.id AND j.supersedes_id IS NULL) > t.required_judgements""",
    "(task, rater) pairs judged twice": """
        SELECT count(*) FROM (SELECT 1 FROM judgements GROUP BY task_id, rater_id
                              HAVING count(*) > 1) AS twice""",
    "complete tasks still marked open": """
        SELECT count(*) FROM tasks t WHERE t.status = 'open'
          AND (SELECT count(*) FROM judgements j
               WHERE j.task_id = t.id AND j.supersedes_id IS NULL) >= t.required_judgements""",
}


DATABASES = {  # --database: the name shown, the query for its version
    "postgresql": ("PostgreSQL", "SHOW server_version"),
    "sqlite": ("SQLite", "SELECT sqlite_version()"),
}


@dataclass
class DatabaseState:
    judgements: int
    open_tasks: int
    active_leases: int
    violations: dict[str, int]
    database: str
    version: str


def inspect_database(url: str) -> DatabaseState:
    engine = create_engine(url)
    database, version_sql = DATABASES[engine.url.get_backend_name()]
    try:
        with engine.connect() as connection:
            value = lambda sql: connection.execute(text(sql)).scalar_one()  # noqa: E731
            return DatabaseState(
                judgements=value("SELECT count(*) FROM judgements"),
                open_tasks=value("SELECT count(*) FROM tasks WHERE status = 'open'"),
                active_leases=value("SELECT count(*) FROM assignments WHERE status = 'active'"),
                violations={name: value(sql) for name, sql in CHECKS.items()},
                database=database,
                version=value(version_sql),
            )
    finally:
        engine.dispose()


@contextmanager
def scratch_database(args: argparse.Namespace, folder: Path) -> Iterator[str]:
    """The URL of an empty database for the run, gone afterwards: on PostgreSQL a scratch
    database beside `--database-url`, on SQLite a file in `folder` (removed with it)."""
    if args.database == "sqlite":
        yield f"sqlite:///{folder / 'bench.db'}"
        return
    with scratch_postgres_database(args.database_url, prefix="alignloop_bench") as url:
        yield url


# --- the server under test --------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@contextmanager
def running_server(database_url: str, *, workers: int, folder: Path) -> Iterator[tuple[int, int]]:
    """`alignloop web` on a free local port: yields the port and the server's process id."""
    port = free_port()
    env = {
        **os.environ,
        "ALIGNLOOP_DATABASE_URL": database_url,
        "ALIGNLOOP_SECRET_KEY": secrets.token_urlsafe(48),
        "ALIGNLOOP_REDIS_URL": REDIS_URL,
        "ALIGNLOOP_DATA_DIR": str(folder / "data"),
        "ALIGNLOOP_LOG_LEVEL": "WARNING",
        # The app of this checkout, as measured by `source_description`: a worktree sharing
        # another checkout's virtualenv would otherwise serve that one's (an editable install).
        "PYTHONPATH": os.pathsep.join(filter(None, (str(REPO), os.environ.get("PYTHONPATH")))),
    }
    command = [
        sys.executable,
        "-m",
        "app.cli",
        "web",
        "--host",
        HOST,
        "--port",
        str(port),
        "--workers",
        str(workers),
    ]
    log_path = folder / "server.log"
    with log_path.open("wb") as log:
        # cwd is the scratch folder so that no `.env` of the checkout changes the settings.
        server = subprocess.Popen(command, env=env, cwd=folder, stdout=log, stderr=log)
    try:
        _wait_until_up(f"http://{HOST}:{port}/healthz", server, log_path)
        yield port, server.pid
    finally:
        server.terminate()
        try:
            server.wait(timeout=15)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()


def _wait_until_up(url: str, server: subprocess.Popen, log_path: Path) -> None:
    deadline = time.monotonic() + SERVER_START_TIMEOUT_S
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise RuntimeError(f"server exited with {server.returncode}:\n{log_path.read_text()}")
        try:
            with urllib.request.urlopen(url, timeout=1) as response:
                if response.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.2)
    raise RuntimeError(
        f"server not up after {SERVER_START_TIMEOUT_S:.0f} s:\n{log_path.read_text()}"
    )


# --- load generation (runs in client processes) -----------------------------------------------


class Connection(asyncio.Protocol):
    """One keep-alive HTTP/1.1 connection carrying one request at a time.

    A hand-written client on httptools (uvicorn's own parser) rather than httpx: httpx costs
    about 2 ms of CPU per request on our machines, more than the server spends on the no-op,
    so with it the reference would measure the client and flatter the ratio.
    """

    def __init__(self) -> None:
        self._parser = httptools.HttpResponseParser(self)
        self._transport: asyncio.Transport | None = None
        self._body: list[bytes] = []
        self._done: asyncio.Future[tuple[int, bytes]] | None = None

    @classmethod
    async def open(cls, host: str, port: int) -> Connection:
        _, connection = await asyncio.get_running_loop().create_connection(cls, host, port)
        return connection

    async def send(self, request: bytes) -> tuple[int, bytes]:
        """Send a complete request; returns the response's status and body."""
        if self._transport is None or self._transport.is_closing():
            raise ConnectionError("connection closed")
        self._body = []
        self._done = asyncio.get_running_loop().create_future()
        self._transport.write(request)
        return await self._done

    def close(self) -> None:
        if self._transport is not None:
            self._transport.close()

    # asyncio.Protocol
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self._parser.feed_data(data)

    def connection_lost(self, exc: Exception | None) -> None:
        if self._done is not None and not self._done.done():
            self._done.set_exception(ConnectionError(f"connection lost: {exc}"))

    # httptools callbacks
    def on_body(self, body: bytes) -> None:
        self._body.append(body)

    def on_message_complete(self) -> None:
        if self._done is not None and not self._done.done():
            self._done.set_result((self._parser.get_status_code(), b"".join(self._body)))


@dataclass
class PhaseSpec:
    workload: Workload
    host: str
    port: int
    warmup_s: float
    seconds: float
    think_s: tuple[float, float] | None = None
    """A rater's pause after each submit, drawn uniformly; None: no pause (a closed loop)."""


class Client:
    """One rater: an API key and its own connection, reopened after a transport error."""

    def __init__(self, spec: PhaseSpec, key: str) -> None:
        self.spec = spec
        self._headers = (
            f"Host: {spec.host}:{spec.port}\r\nAuthorization: Bearer {key}\r\n"
            "User-Agent: alignloop-bench\r\n"
        )
        self._connection: Connection | None = None

    def get(self, path: str) -> bytes:
        return f"GET {path} HTTP/1.1\r\n{self._headers}\r\n".encode()

    def post_json(self, path: str, body: object) -> bytes:
        payload = json.dumps(body).encode()
        head = (
            f"POST {path} HTTP/1.1\r\n{self._headers}Content-Type: application/json\r\n"
            f"Content-Length: {len(payload)}\r\n\r\n"
        )
        return head.encode() + payload

    async def send(self, request: bytes) -> tuple[int, bytes]:
        """Send on the kept-alive connection. A GET whose reused connection turns out closed
        (the server ends idle connections after 5 s, and a rater may think that long) is sent
        again once on a new one, as HTTP clients do for idempotent requests."""
        reused = self._connection is not None
        if self._connection is None:
            self._connection = await Connection.open(self.spec.host, self.spec.port)
        try:
            return await self._connection.send(request)
        except ConnectionError:
            self.close()
            if reused and request.startswith(b"GET "):
                return await self.send(request)
            raise

    def close(self) -> None:
        if self._connection is not None:
            self._connection.close()
            self._connection = None


@dataclass
class Samples:
    """One record per request: endpoint index, HTTP status (0: transport error), end time
    (time.monotonic, comparable across processes) and latency in seconds."""

    endpoint: array = field(default_factory=lambda: array("b"))
    status: array = field(default_factory=lambda: array("h"))
    end: array = field(default_factory=lambda: array("d"))
    latency: array = field(default_factory=lambda: array("d"))
    errors: list[str] = field(default_factory=list)

    def extend(self, other: Samples) -> None:
        for name in ("endpoint", "status", "end", "latency"):
            getattr(self, name).extend(getattr(other, name))
        self.errors.extend(other.errors)

    def as_tuple(self) -> tuple:
        """Plain data for the pipe (a client process's classes live in `__mp_main__`)."""
        return self.endpoint, self.status, self.end, self.latency, self.errors

    def statuses(self) -> Counter[tuple[str, int]]:
        """Every response, by endpoint and status."""
        return Counter(
            (ENDPOINTS[e], code) for e, code in zip(self.endpoint, self.status, strict=True)
        )


class Recorder:
    """Times requests into `Samples`, keeping the first few error bodies as examples."""

    def __init__(self) -> None:
        self.samples = Samples()

    async def request(self, client: Client, endpoint: str, request: bytes) -> tuple[int, bytes]:
        """Send and record; a transport error is recorded as status 0."""
        started = time.monotonic()
        try:
            status, body = await client.send(request)
        except OSError as exc:  # ConnectionError included
            status, body = 0, f"{type(exc).__name__}: {exc}".encode()
        ended = time.monotonic()
        self._add(endpoint, status, ended, ended - started)
        if not 200 <= status < 300 and len(self.samples.errors) < MAX_ERROR_EXAMPLES:
            self.samples.errors.append(
                f"{endpoint} -> {status}: {body[:300].decode(errors='replace')}"
            )
        return status, body

    def _add(self, endpoint: str, status: int, ended: float, latency: float) -> None:
        self.samples.endpoint.append(ENDPOINTS.index(endpoint))
        self.samples.status.append(status)
        self.samples.end.append(ended)
        self.samples.latency.append(latency)


async def noop_client(client: Client, recorder: Recorder, deadline: float) -> None:
    request = client.get("/healthz")
    while time.monotonic() < deadline:
        await recorder.request(client, "noop", request)


async def rater_client(client: Client, recorder: Recorder, deadline: float) -> None:
    """Fetch a task, rank its responses in the order shown, submit, think; until the deadline."""
    next_request = client.get("/api/tasks/next")
    think = client.spec.think_s
    if think:  # people arrive over the first pause, not all in the same millisecond
        await asyncio.sleep(random.uniform(0, think[1]))
    while time.monotonic() < deadline:
        status, body = await recorder.request(client, "next", next_request)
        if status != 200:
            await asyncio.sleep(IDLE_PAUSE_S if not think else random.uniform(*think))
            continue
        await recorder.request(client, "submit", judgement_request(client, body))
        if think:
            await asyncio.sleep(random.uniform(*think))


def judgement_request(client: Client, next_body: bytes) -> bytes:
    """The submit for the task `next` answered: its responses ranked in the order shown."""
    task = json.loads(next_body)
    ranking = {"ranking": [response["id"] for response in task["responses"]]}
    return client.post_json(f"/api/tasks/{task['task_id']}/judgement", ranking)


CLIENT_LOOPS = {"noop": noop_client, "rate": rater_client}


async def drive(spec: PhaseSpec, keys: list[str], start_at: float) -> Samples:
    """Run one client per key from `start_at` for warm-up plus measured seconds."""
    recorder = Recorder()
    deadline = start_at + spec.warmup_s + spec.seconds
    clients = [Client(spec, key) for key in keys]
    loop = CLIENT_LOOPS[spec.workload]
    try:
        await asyncio.sleep(max(0.0, start_at - time.monotonic()))
        running = asyncio.gather(*(loop(client, recorder, deadline) for client in clients))
        await asyncio.wait_for(running, deadline + REQUEST_TIMEOUT_S - time.monotonic())
    except TimeoutError:
        recorder.samples.errors.append(f"requests still open {REQUEST_TIMEOUT_S:g} s after the end")
    finally:
        for client in clients:
            client.close()
    return recorder.samples


def client_process(connection: PipeEnd, spec: PhaseSpec, keys: list[str]) -> None:
    """Entry point of a client process: report ready, receive the start time, run, send back."""
    connection.send("ready")
    start_at = connection.recv()
    connection.send(uvloop.run(drive(spec, keys, start_at)).as_tuple())
    connection.close()


# --- calibration: the server's CPU per request, one request at a time ------------------------


def thread_runtimes(pids: list[int]) -> dict[int, int]:
    """Nanoseconds each thread of these processes has run so far: the first field of its
    schedstat, exact where the CPU times in /proc/<pid>/stat count 10 ms clock ticks."""
    runtimes = {}
    for pid in pids:
        for tid in os.listdir(f"/proc/{pid}/task"):
            try:
                with open(f"/proc/{pid}/task/{tid}/schedstat", "rb") as stat:
                    runtimes[int(tid)] = int(stat.read().split(maxsplit=1)[0])
            except (FileNotFoundError, ProcessLookupError):
                pass  # the thread ended after the listing
    return runtimes


def cpu_ms_between(before: dict[int, int], after: dict[int, int]) -> float:
    """CPU ms between two `thread_runtimes`. Threads that ended in between are left out rather
    than counted negative (anyio ends worker threads idle for 10 s); new ones count from 0."""
    return sum(ns - before.get(tid, 0) for tid, ns in after.items()) / 1e6


@dataclass
class Calibration:
    """One client's requests, sent one at a time, and the server's CPU (ms) for each: with no
    other load, what the server's threads ran between send and answer is that request's cost."""

    samples: Samples
    cpu_ms: array
    """One value per request of `samples`, in the same order."""

    def cost(self, endpoint: str) -> tuple[int, float, float]:
        """Count, mean and p50 of the CPU ms of `endpoint`'s answered requests."""
        index = ENDPOINTS.index(endpoint)
        s = self.samples
        values = [
            ms
            for e, status, ms in zip(s.endpoint, s.status, self.cpu_ms, strict=True)
            if e == index and answered(status)
        ]
        mean = sum(values) / len(values) if values else float("nan")
        return len(values), mean, percentile(values, 0.50)


async def calibrate(spec: PhaseSpec, key: str, pids: list[int], count: int) -> Calibration:
    """`count` no-op requests, then `count` next+submit pairs, each sent after the last answer."""
    recorder, client, cpu_ms = Recorder(), Client(spec, key), array("d")

    async def timed(endpoint: str, request: bytes) -> tuple[int, bytes]:
        before = thread_runtimes(pids)
        answer = await recorder.request(client, endpoint, request)
        cpu_ms.append(cpu_ms_between(before, thread_runtimes(pids)))
        return answer

    try:
        noop, next_request = client.get("/healthz"), client.get("/api/tasks/next")
        for _ in range(count):
            await timed("noop", noop)
        for _ in range(count):
            status, body = await timed("next", next_request)
            if status != 200:
                break  # no task left for this rater (204) or an error: both reported as errors
            await timed("submit", judgement_request(client, body))
    finally:
        client.close()
    return Calibration(recorder.samples, cpu_ms)


def run_calibration(args: argparse.Namespace, port: int, pid: int, key: str) -> Calibration | None:
    """Calibrate as rater `key`, on the server and its worker processes; None where the kernel
    keeps no per-thread schedstat (not Linux, or built without it)."""
    if not Path(f"/proc/{pid}/task/{pid}/schedstat").exists():
        print("calibration skipped: no /proc/<pid>/task/<tid>/schedstat here", flush=True)
        return None
    count = args.calibration_requests
    print(f"calibration: {count} no-op requests, then {count} next+submit pairs ...", flush=True)
    pids = [pid, *(child.pid for child in psutil.Process(pid).children(recursive=True))]
    spec = PhaseSpec("rate", HOST, port, warmup_s=0.0, seconds=0.0)
    return uvloop.run(calibrate(spec, key, pids, count))


# --- measuring a phase ------------------------------------------------------------------------


DATABASE_COUNTERS = """
    SELECT sessions, xact_commit, xact_rollback FROM pg_stat_database WHERE datname = :name"""


class Meter:
    """What the phase cost: CPU seconds of the server (with its worker processes), of the client
    processes and of the whole machine. On SQLite the database's work is the server's."""

    def __init__(self, server_pid: int) -> None:
        self.server = psutil.Process(server_pid)
        self.clients: list[psutil.Process] = []

    def snapshot(self) -> dict[str, dict]:
        """Counters so far: CPU seconds per component and process id."""
        machine = psutil.cpu_times()
        server = [self.server, *self.server.children(recursive=True)]
        return {
            "server": _cpu_seconds(server),
            "client": _cpu_seconds(self.clients),
            "machine": {0: sum(machine) - machine.idle - machine.iowait},
        }

    @staticmethod
    def usage(before: dict, after: dict, seconds: float) -> dict[str, float]:
        """Cores busy per component (processes that ended are left out) and database
        counters per second, between two snapshots."""
        cores = {
            name: sum(used - before[name].get(key, 0.0) for key, used in by_pid.items()) / seconds
            for name, by_pid in after.items()
            if name != "database"
        }
        ours = sum(used for name, used in cores.items() if name != "machine")
        cores["other"] = max(0.0, cores["machine"] - ours)  # tick-sampling jitter can go below 0
        database = after.get("database", {})
        rates = {
            f"{name}/s": (database[name] - before["database"][name]) / seconds for name in database
        }
        return cores | rates


class PostgresMeter(Meter):
    """Also the CPU seconds of the PostgreSQL backends serving the scratch database, and
    PostgreSQL's count of new connections, commits and rollbacks."""

    def __init__(self, server_pid: int, connection: SqlConnection) -> None:
        super().__init__(server_pid)
        self.database_name = connection.engine.url.database
        self._connection = connection

    def snapshot(self) -> dict[str, dict]:
        """Counters so far: CPU seconds per component and process id, database counters."""
        self._connection.execute(text("SELECT pg_stat_clear_snapshot()"))
        counters = self._connection.execute(
            text(DATABASE_COUNTERS), {"name": self.database_name}
        ).one()
        return super().snapshot() | {
            "postgres": _cpu_seconds(self._backends()),
            "database": counters._asdict(),
        }

    def _backends(self) -> list[psutil.Process]:
        """The backends connected to the scratch database now (their process title names it)."""
        return [
            process
            for process in psutil.process_iter(["name", "cmdline"])
            if process.info["name"] == "postgres"
            and self.database_name in " ".join(process.info["cmdline"] or ())
        ]


@contextmanager
def metering(server_pid: int, database_url: str) -> Iterator[Meter]:
    """A `Meter` for the server; on PostgreSQL a `PostgresMeter` with its own connection."""
    if make_url(database_url).get_backend_name() != "postgresql":
        yield Meter(server_pid)
        return
    engine = create_engine(database_url, isolation_level="AUTOCOMMIT", poolclass=NullPool)
    try:
        with engine.connect() as connection:
            yield PostgresMeter(server_pid, connection)
    finally:
        engine.dispose()


def _cpu_seconds(processes: list[psutil.Process]) -> dict[int, float]:
    seconds = {}
    for process in processes:
        try:
            times = process.cpu_times()
        except psutil.NoSuchProcess:
            continue
        seconds[process.pid] = times.user + times.system
    return seconds


@dataclass
class PhaseResult:
    workload: Workload
    window_s: float
    samples: Samples
    window_start: float
    window_end: float
    usage: dict[str, float]
    """Cores busy per component and database counters per second (see `Meter.usage`)."""

    def in_window(self, endpoint: str) -> list[float]:
        """Latencies (ms) of the requests of `endpoint` that ended inside the measured window."""
        index = ENDPOINTS.index(endpoint)
        s = self.samples
        return [
            s.latency[i] * 1000
            for i in range(len(s.endpoint))
            if s.endpoint[i] == index and self.window_start <= s.end[i] < self.window_end
        ]

    def rate(self, endpoint: str) -> float:
        return len(self.in_window(endpoint)) / self.window_s

    def server_ms_per_request(self) -> float:
        """Server CPU per request in the window: a cost that other load on the machine
        disturbs less than the rates do."""
        requests = sum(self.rate(endpoint) for endpoint in ENDPOINTS)
        return self.usage["server"] * 1000 / requests if requests else float("nan")


def run_phase(spec: PhaseSpec, keys: list[str], *, processes: int, meter: Meter) -> PhaseResult:
    """Start `processes` client processes sharing the keys, run the phase, gather results."""
    context = multiprocessing.get_context("spawn")
    links, workers = [], []
    for share in (keys[i::processes] for i in range(processes)):
        parent_end, child_end = context.Pipe()
        worker = context.Process(target=client_process, args=(child_end, spec, share))
        worker.start()
        links.append(parent_end)
        workers.append(worker)
    for link in links:
        link.recv()  # "ready"
    start_at = time.monotonic() + START_DELAY_S
    for link in links:
        link.send(start_at)
    window_start = start_at + spec.warmup_s
    window_end = window_start + spec.seconds
    meter.clients = [psutil.Process(worker.pid) for worker in workers]
    _sleep_until(window_start)
    before = meter.snapshot()
    _sleep_until(window_end)
    after = meter.snapshot()
    samples = Samples()
    for link in links:
        samples.extend(Samples(*link.recv()))
    for worker in workers:
        worker.join()
    usage = Meter.usage(before, after, spec.seconds)
    return PhaseResult(spec.workload, spec.seconds, samples, window_start, window_end, usage)


def _sleep_until(moment: float) -> None:
    time.sleep(max(0.0, moment - time.monotonic()))


# --- reporting --------------------------------------------------------------------------------


def percentile(values: list[float], fraction: float) -> float:
    """Nearest-rank percentile; NaN for no values."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[max(0, math.ceil(fraction * len(ordered)) - 1)]


@dataclass
class Summary:
    noop_rps: float
    noop_before_rps: float
    noop_after_rps: float
    noop_p50_ms: float
    noop_p99_ms: float
    workload_rps: float
    pairs_per_s: float
    latency_ms: dict[str, tuple[float, float, float]]
    """p50, p95 and p99 per endpoint (`next`, `submit`, `next+submit`)."""

    @property
    def request_ratio(self) -> float:
        return self.workload_rps / self.noop_rps

    @property
    def pair_ratio(self) -> float:
        return self.pairs_per_s / self.noop_rps

    @property
    def p99_ms(self) -> float:
        return self.latency_ms["next+submit"][2]

    def met(self, *, closed_loop: bool) -> bool:
        """The ratio is a target only for the closed loop, where it measures capacity."""
        return self.p99_ms < TARGET_P99_MS and (
            not closed_loop or self.request_ratio >= TARGET_RATIO
        )


def summarise(noop_before: PhaseResult, rate: PhaseResult, noop_after: PhaseResult) -> Summary:
    noop_latencies = noop_before.in_window("noop") + noop_after.in_window("noop")
    per_endpoint = {name: rate.in_window(name) for name in ("next", "submit")}
    per_endpoint["next+submit"] = per_endpoint["next"] + per_endpoint["submit"]
    return Summary(
        noop_rps=(noop_before.rate("noop") + noop_after.rate("noop")) / 2,
        noop_before_rps=noop_before.rate("noop"),
        noop_after_rps=noop_after.rate("noop"),
        noop_p50_ms=percentile(noop_latencies, 0.50),
        noop_p99_ms=percentile(noop_latencies, 0.99),
        workload_rps=rate.rate("next") + rate.rate("submit"),
        pairs_per_s=rate.rate("submit"),
        latency_ms={
            name: tuple(percentile(values, q) for q in (0.50, 0.95, 0.99))
            for name, values in per_endpoint.items()
        },
    )


def machine_description(state: DatabaseState) -> str:
    cpu = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        platform.processor() or "unknown CPU",
    )
    return (
        f"{cpu}, {os.cpu_count()} cores, Python {platform.python_version()}, "
        f"{state.database} {state.version}"
    )


def source_description() -> str:
    """The commit measured, and whether the app had uncommitted changes."""

    def git(*arguments: str) -> str:
        done = subprocess.run(["git", "-C", str(REPO), *arguments], capture_output=True, text=True)
        return done.stdout.strip()

    dirty = git("status", "--porcelain", "--", "app", "migrations")
    commit = git("rev-parse", "--short", "HEAD") or "unknown"
    return f"{commit} + uncommitted changes in app/ or migrations/" if dirty else commit


PHASE_LABELS = ("no-op (before)", "next+submit", "no-op (after)")


def print_report(
    args: argparse.Namespace,
    summary: Summary,
    phases: list[PhaseResult],
    calibration: Calibration | None,
    state: DatabaseState,
) -> None:
    print(
        f"\nmachine: {machine_description(state)}; "
        f"load average {' '.join(f'{load:.1f}' for load in os.getloadavg())}"
    )
    print(f"code: {source_description()}")
    think = f"think {args.think[0]:g}-{args.think[1]:g} s, " if args.think else ""
    print(
        f"clients {args.clients}, {think}server workers {args.workers}, client processes "
        f"{args.client_processes}, {args.seconds:g} s measured after {args.warmup:g} s warm-up, "
        f"{args.tasks} tasks seeded"
    )
    _print_rates(summary, phases[1], closed_loop=not args.think)
    _print_usage(phases)
    _print_calibration(calibration, state)
    requests = all_samples(phases, calibration)
    _print_problems(requests, state)
    line = results_line(args, summary, calibration, state, error_count(requests))
    print(f"\nRESULTS.md line:\n{RESULTS_HEADER}\n{line}")


def _print_rates(summary: Summary, rate: PhaseResult, *, closed_loop: bool) -> None:
    print(f"\n{'':<16}{'req/s':>8}{'p50 ms':>9}{'p95 ms':>9}{'p99 ms':>9}")
    print(
        f"{'no-op /healthz':<16}{summary.noop_rps:>8.0f}{summary.noop_p50_ms:>9.1f}"
        f"{'':>9}{summary.noop_p99_ms:>9.1f}   (before {summary.noop_before_rps:.0f}, "
        f"after {summary.noop_after_rps:.0f})"
    )
    for name in ("next", "submit", "next+submit"):
        rps = summary.workload_rps if name == "next+submit" else rate.rate(name)
        print(f"{name:<16}{rps:>8.0f}" + "".join(f"{ms:>9.1f}" for ms in summary.latency_ms[name]))
    print(f"\npairs (next+submit)/s {summary.pairs_per_s:.1f}")
    ratio = "" if closed_loop else ", not a target with think time"
    print(
        f"request ratio {summary.request_ratio:.3f} (target >= {TARGET_RATIO}{ratio}); "
        f"pair ratio {summary.pair_ratio:.3f} (stricter); "
        f"p99 {summary.p99_ms:.1f} ms (target < {TARGET_P99_MS:.0f} ms) -> "
        f"{'MET' if summary.met(closed_loop=closed_loop) else 'NOT MET'}"
    )


USAGE_COLUMNS = (
    "server",
    "postgres",
    "client",
    "other",
    "machine",
    "sessions/s",
    "xact_commit/s",
    "xact_rollback/s",
)


def _print_usage(phases: list[PhaseResult]) -> None:
    """The CPU table; its PostgreSQL columns only where there is a PostgreSQL."""
    columns = [name for name in USAGE_COLUMNS if name in phases[0].usage]
    if "postgres" in columns:
        print(
            f"\nmeasured windows: cores busy (of {os.cpu_count()}) and PostgreSQL counters per "
            "second\n  postgres: backends alive at the window's end; other: the rest of the "
            "machine,\n  including backends that exited (see sessions/s, new connections) and "
            "other users"
        )
    else:
        print(
            f"\nmeasured windows: cores busy (of {os.cpu_count()})\n  server: SQLite's work "
            "included; other: the rest of the machine, including other users"
        )
    print(f"{'':<15}" + "".join(f"{name:>{max(9, len(name) + 1)}}" for name in columns))
    for phase, label in zip(phases, PHASE_LABELS, strict=True):
        print(
            f"{label:<15}"
            + "".join(f"{phase.usage[name]:>{max(9, len(name) + 1)}.2f}" for name in columns)
        )
    costs = ", ".join(
        f"{label} {phase.server_ms_per_request():.2f}"
        for phase, label in zip(phases, PHASE_LABELS, strict=True)
    )
    print(f"server CPU ms per request: {costs}")


def _print_calibration(calibration: Calibration | None, state: DatabaseState) -> None:
    if calibration is None:
        print("\nserver CPU per request, one at a time: not measured (no per-thread schedstat)")
        return
    included = "included" if state.database == "SQLite" else "not included"
    print(f"\nserver CPU per request, one at a time ({state.database}'s work {included})")
    print(f"{'':<16}{'requests':>9}{'mean ms':>9}{'p50 ms':>9}")
    for name in ENDPOINTS:
        count, mean, p50 = calibration.cost(name)
        print(f"{name:<16}{count:>9}{mean:>9.2f}{p50:>9.2f}")


def answered(status: int) -> bool:
    """A 2xx with content, what every request here should get (204: no task was left)."""
    return 200 <= status < 300 and status != 204


def all_samples(phases: list[PhaseResult], calibration: Calibration | None) -> list[Samples]:
    """Every request of the run: the phases' and the calibration's."""
    return [phase.samples for phase in phases] + ([calibration.samples] if calibration else [])


def unexpected_responses(requests: list[Samples]) -> dict[tuple[str, int], int]:
    """Responses that are not a 2xx with content, by endpoint and status (0: transport error)."""
    statuses = sum((samples.statuses() for samples in requests), Counter())
    return {key: n for key, n in statuses.items() if not answered(key[1])}


def error_count(requests: list[Samples]) -> int:
    """Unexpected responses plus requests that never finished."""
    unfinished = sum("still open" in example for samples in requests for example in samples.errors)
    return sum(unexpected_responses(requests).values()) + unfinished


def _print_problems(requests: list[Samples], state: DatabaseState) -> None:
    statuses = sum((samples.statuses() for samples in requests), Counter())
    unexpected = unexpected_responses(requests)
    print(f"\nresponses, warm-up and calibration included: {dict(sorted(statuses.items()))}")
    print(f"non-2xx or 204: {unexpected or 'none'}")
    if any(code == 204 for _, code in unexpected):
        print("  204 means the raters ran out of tasks: raise --tasks")
    for samples in requests:
        for example in samples.errors:
            print(f"  e.g. {example}")
    print(
        f"database after the run: {state.judgements} judgements, {state.open_tasks} tasks "
        f"still open, {state.active_leases} active leases"
    )
    for name, count in state.violations.items():
        print(f"  check: {name}: {count} {'ok' if count == 0 else 'VIOLATION'}")


RESULTS_HEADER = (
    "| date (UTC) | setup | no-op req/s | next+submit req/s | pairs/s | request ratio "
    "| pair ratio | next p50 / p95 / p99 ms | submit p50 / p95 / p99 ms | p99 ms "
    "| server CPU ms per no-op, mean / p50 | per next | per submit | errors | checks | target |\n"
    "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"
)


def results_line(
    args: argparse.Namespace,
    summary: Summary,
    calibration: Calibration | None,
    state: DatabaseState,
    errors: int,
) -> str:
    checks = "ok" if not any(state.violations.values()) else "VIOLATED"
    lat = {name: " / ".join(f"{ms:.0f}" for ms in q) for name, q in summary.latency_ms.items()}
    think = f", think {args.think[0]:g}-{args.think[1]:g} s" if args.think else ""
    costs = " | ".join(
        "n/a" if calibration is None else "{1:.2f} / {2:.2f}".format(*calibration.cost(name))
        for name in ENDPOINTS
    )
    met = summary.met(closed_loop=not args.think) and not errors
    return (
        f"| {datetime.now(UTC):%Y-%m-%d %H:%M} | {state.database}, {args.clients} clients{think}, "
        f"{args.workers} worker(s), {args.seconds:g} s "
        f"| {summary.noop_rps:.0f} | {summary.workload_rps:.0f} | {summary.pairs_per_s:.0f} "
        f"| **{summary.request_ratio:.2f}** | {summary.pair_ratio:.2f} "
        f"| {lat['next']} | {lat['submit']} | **{summary.p99_ms:.0f}** | {costs} | {errors} "
        f"| {checks} | {'met' if met else 'not met'} |"
    )


# --- main -------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add = parser.add_argument
    add("--clients", type=int, default=64, help="concurrent raters (default 64)")
    add("--seconds", type=float, default=20, help="measured seconds per phase (default 20)")
    add("--warmup", type=float, default=3, help="unmeasured seconds before each (default 3)")
    add("--workers", type=int, default=1, help="uvicorn processes (default 1)")
    add(
        "--think",
        type=think_range,
        metavar="LOW-HIGH",
        help="seconds a rater pauses after each submit, drawn uniformly (default: no pause)",
    )
    add(
        "--reference-seconds",
        type=float,
        default=20,
        help="measured seconds of each no-op phase with --think (default 20)",
    )
    add("--client-processes", type=int, default=1, help="load-generator processes (default 1)")
    add(
        "--tasks",
        type=int,
        default=6000,
        help="open tasks seeded (default 6000: enough for a run at twice the target rate)",
    )
    add(
        "--database",
        choices=DATABASES,
        default="postgresql",
        help="postgresql (default): a scratch database beside --database-url; "
        "sqlite: the embedded default, a file in a temporary folder",
    )
    add(
        "--database-url",
        default=DEFAULT_DATABASE_URL,
        help="with --database postgresql: a database on the PostgreSQL server; the scratch "
        "database goes beside it",
    )
    add(
        "--calibration-requests",
        type=int,
        default=300,
        help="no-op requests and next+submit pairs sent one at a time after the phases, to "
        "measure the server's CPU per request (default 300)",
    )
    add(
        "--vacuum-every",
        type=float,
        default=10.0,
        metavar="SECONDS",
        help="on a PostgreSQL server whose autovacuum is off, vacuum the rating tables this "
        "often, as autovacuum would (default 10; 0: never)",
    )
    return parser.parse_args(argv)


def think_range(text: str) -> tuple[float, float]:
    """`2-5` -> (2.0, 5.0), for argparse."""
    try:
        low, high = (float(part) for part in text.split("-"))
    except ValueError:
        message = f"expected LOW-HIGH seconds, e.g. 2-5, not {text!r}"
        raise argparse.ArgumentTypeError(message) from None
    if not 0 <= low <= high:
        raise argparse.ArgumentTypeError(f"expected 0 <= LOW <= HIGH, not {text!r}")
    return low, high


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    with (
        tempfile.TemporaryDirectory(prefix="alignloop-bench-") as folder,
        scratch_database(args, Path(folder)) as url,
    ):
        print(f"seeding {args.clients} raters and {args.tasks} tasks ...", flush=True)
        keys = prepare_database(url, raters=args.clients, tasks=args.tasks)
        with (
            running_server(url, workers=args.workers, folder=Path(folder)) as (port, pid),
            metering(pid, url) as meter,
            vacuuming(url, every_s=args.vacuum_every),
        ):
            phases = [measure(workload, args, port, keys, meter) for workload in PHASES]
            calibration = run_calibration(args, port, pid, keys[0])
        state = inspect_database(url)
    summary = summarise(*phases)
    print_report(args, summary, phases, calibration, state)
    errors = error_count(all_samples(phases, calibration))
    return 1 if any(state.violations.values()) or errors else 0


PHASES: tuple[Workload, ...] = ("noop", "rate", "noop")
HOT_TABLES = ("tasks", "assignments", "judgements")


@contextmanager
def vacuuming(url: str, *, every_s: float) -> Iterator[None]:
    """Vacuum the rating tables every `every_s` seconds while the block runs, where the
    PostgreSQL server's autovacuum is off (as on our test machines): every lease and judgement
    updates its task row, and without vacuum the dead rows that pile up at the front of the
    free-slots index slow each `next` more and more. A production server's autovacuum does
    this (tuned for a queue-like table); this stands in for it, and says so in the report."""
    if every_s <= 0 or make_url(url).get_backend_name() != "postgresql":
        yield
        return
    engine = create_engine(make_url(url), poolclass=NullPool)
    with engine.connect() as connection:
        autovacuum = connection.execute(text("SHOW autovacuum")).scalar()
    if autovacuum == "on":
        engine.dispose()
        yield
        return
    print(
        f"autovacuum is off on this server: the bench vacuums {', '.join(HOT_TABLES)} "
        f"every {every_s:g} s",
        flush=True,
    )
    stop = threading.Event()

    def vacuum() -> None:
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
            while not stop.wait(every_s):
                connection.execute(text(f"VACUUM (ANALYZE) {', '.join(HOT_TABLES)}"))

    worker = threading.Thread(target=vacuum, name="vacuum", daemon=True)
    worker.start()
    try:
        yield
    finally:
        stop.set()
        worker.join()
        engine.dispose()


def measure(
    workload: Workload, args: argparse.Namespace, port: int, keys: list[str], meter: Meter
) -> PhaseResult:
    think = args.think if workload == "rate" else None
    seconds = args.reference_seconds if args.think and workload == "noop" else args.seconds
    # With think time the raters arrive over the first pause: measure once all have arrived.
    warmup = max(args.warmup, think[1]) if think else args.warmup
    print(f"phase {workload}: {warmup:g} s warm-up + {seconds:g} s ...", flush=True)
    spec = PhaseSpec(workload, HOST, port, warmup, seconds, think)
    return run_phase(spec, keys, processes=args.client_processes, meter=meter)


if __name__ == "__main__":
    sys.exit(main())
