"""Generation and training run in a supervised child process: killing it, or a cancel, ends
its round within seconds, and the web, `/v1` and the scheduler of `alignloop run` go on."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from app import migrate
from app.config import Settings
from app.db import make_engine, make_session_factory, session_scope
from app.domain import accounts, jobs
from app.domain.rounds import ACTIVE
from app.models import Job, KeyScope, Role, Round, RoundStage, RunStatus
from app.tasks_contract import GENERATE_CANDIDATES
from tests.helpers import judged_tasks_with_rewrites
from tests.live_server import alignloop_run, wait_for
from tests.worker.test_launch import alive
from worker.celery_app import create_celery
from worker.context import WorkerContext
from worker.isolation import FORK_SERVER, Limits, _watch
from worker.model_store import ModelStore

CANCEL_DEADLINE_S = 10.0
SHORT_ROUND = {
    "snapshot": {"min_pairs": 8},
    "reward_model": {"batch_pairs": 4},
    "policy": {"epochs": 1},
    "evaluation": {"prompts": 2, "max_new_tokens": 8, "ab_prompts": 0},
}
LONG_POLICY = {**SHORT_ROUND, "policy": {"epochs": 1000}}
"""A DPO stage on the tiny model that runs until it is stopped."""


@dataclass
class Embedded:
    """`alignloop run` over a database with judged tasks; an admin's key."""

    url: str
    headers: dict[str, str]
    factory: object

    def start_round(self, overrides: dict, *, algorithm: str = "dpo") -> int:
        started = httpx.post(
            f"{self.url}/api/rounds",
            json={"algorithm": algorithm, "preset": "quick", "overrides": overrides},
            headers=self.headers,
        )
        assert started.status_code == 202, started.text
        return started.json()["round_id"]

    def round(self, round_id: int) -> Round:
        with self.factory() as db:
            return db.get(Round, round_id)

    def cancel(self, round_id: int) -> Round:
        """Cancel the round as an admin; the round once it has stopped running, which must
        take less than `CANCEL_DEADLINE_S`."""
        asked = time.monotonic()
        cancel = httpx.post(f"{self.url}/api/rounds/{round_id}/cancel", headers=self.headers)
        assert cancel.status_code == 200, cancel.text
        ended = wait_for(
            lambda: (r := self.round(round_id)).status != RunStatus.RUNNING and r,
            CANCEL_DEADLINE_S,
            "the cancel",
        )
        assert time.monotonic() - asked < CANCEL_DEADLINE_S
        return ended

    def running_stage_process(self, round_id: int, stage: RoundStage) -> int:
        """The pid of the child process that holds `stage` of the round."""

        def holder() -> str | None:
            round_ = self.round(round_id)
            assert round_.status in (RunStatus.QUEUED, RunStatus.RUNNING), round_.error
            return round_.stage == stage and round_.lease_owner

        owner = wait_for(holder, 120, f"the {stage.value} stage to start")
        return int(owner.split(":")[1])

    def still_serving(self) -> None:
        assert httpx.get(f"{self.url}/healthz").status_code == 200
        answer = httpx.post(
            f"{self.url}/v1/chat/completions",
            json={
                "model": "base",
                "messages": [{"role": "user", "content": "Hello?"}],
                "max_tokens": 4,
            },
            headers=self.headers,
            timeout=60,
        )
        assert answer.status_code == 200, answer.text


@pytest.fixture
def embedded(tmp_path, model_settings) -> Iterator[Embedded]:
    with embedded_run(tmp_path, model_settings) as running:
        yield running


@contextmanager
def embedded_run(
    tmp_path: Path, settings: Settings, run_settings: dict[str, str] | None = None
) -> Iterator[Embedded]:
    """`alignloop run` (with `ALIGNLOOP_` `run_settings` on top) over judged tasks."""
    engine = make_engine(settings.resolved_database_url)
    migrate.upgrade(engine)
    factory = make_session_factory(engine)
    ModelStore(settings).ensure_base_version(factory)
    with session_scope(factory) as db:
        judged_tasks_with_rewrites(db, count=24)
        admin = accounts.create_user(db, username="ada", password="long enough pw", role=Role.ADMIN)
        _, key = accounts.create_api_key(db, user=admin, name="admin", scope=KeyScope.ADMIN)
    run_settings = {"demo_prompts": "false", **(run_settings or {})}
    with alignloop_run(settings.data_dir, tmp_path / "run.log", run_settings) as live:
        yield Embedded(live.base_url, {"Authorization": f"Bearer {key}"}, factory)
    engine.dispose()


def test_a_killed_stage_process_fails_its_round_and_the_server_keeps_serving(embedded):
    round_id = embedded.start_round(LONG_POLICY)
    os.kill(embedded.running_stage_process(round_id, RoundStage.POLICY), signal.SIGKILL)
    failed = wait_for(
        lambda: (r := embedded.round(round_id)).status == RunStatus.FAILED and r, 30, "the failure"
    )
    assert failed.error.startswith("policy: the stage's process was killed (SIGKILL)")
    assert ":" not in failed.error.split("killed")[1]  # no process ids in what admins read
    embedded.still_serving()


def test_a_cancel_stops_a_running_stage_within_seconds(embedded):
    round_id = embedded.start_round(LONG_POLICY)
    embedded.running_stage_process(round_id, RoundStage.POLICY)
    ended = embedded.cancel(round_id)
    assert ended.status == RunStatus.CANCELLED and ended.error == "cancelled by an admin"
    assert ended.finished_at is not None
    embedded.still_serving()


def test_a_round_without_eval_prompts_evaluates_on_the_snapshots_held_out_prompts(embedded):
    round_id = embedded.start_round(SHORT_ROUND)
    done = wait_for(
        lambda: (r := embedded.round(round_id)).status not in ACTIVE and r, 300, "the round"
    )
    assert done.status == RunStatus.SUCCEEDED, done.error
    evaluation = done.metrics["evaluation"]
    assert evaluation["prompt_source"] == "held-out prompts of the snapshot (no eval prompts)"
    assert evaluation["prompts"] == 1 and evaluation["n"] == 2


def test_a_job_over_the_memory_limit_fails_with_the_reason(model_settings, committed_engine):
    settings = model_settings.model_copy(update={"worker_memory_gb": 0.05})
    factory = make_session_factory(committed_engine)
    with session_scope(factory) as db:
        judged_tasks_with_rewrites(db, count=2)
        job = jobs.create_job(db, kind=jobs.GENERATE_CANDIDATES, params={}, created_by=None)
    celery = create_celery(settings, engine=committed_engine)
    assert celery.tasks[GENERATE_CANDIDATES].apply(args=[job.id]).get() == "failed"
    with factory() as db:
        failed = db.get(Job, job.id)
    assert failed.status == RunStatus.FAILED
    assert "ran out of memory" in failed.error and "ALIGNLOOP_WORKER_MEMORY_GB" in failed.error


@dataclass
class Still:
    """A watched job that never moves on; `stop` asks it to stop."""

    stop: bool = False

    def stop_requested(self, db) -> bool:
        return self.stop

    def progress(self, db) -> int:
        return 0

    def end(self, db, cause: str, *, worker: str, cancelled: bool) -> None:
        raise AssertionError("not called by _watch")


@pytest.mark.parametrize(
    ("limits", "watched", "cause", "cancelled"),
    [
        (Limits(2**40, seconds=60, stall_seconds=1.5), Still(), "process stalled", False),
        (Limits(2**40, seconds=1.5, stall_seconds=60), Still(), "past its time limit", False),
        (Limits(1, seconds=60, stall_seconds=60), Still(), "ran out of memory", False),
        (Limits(2**40, seconds=60, stall_seconds=60), Still(stop=True), None, True),
    ],
)
def test_the_supervisor_ends_a_child_that_must_not_go_on(
    model_settings, session_factory, limits, watched, cause, cancelled
):
    context = WorkerContext(model_settings, None, session_factory)
    child = FORK_SERVER.Process(target=time.sleep, args=(60,))
    child.start()
    started = time.monotonic()
    ending = _watch(child, context, watched, limits)
    assert child.exitcode is not None and time.monotonic() - started < 10
    assert ending.cancelled is cancelled
    assert (ending.cause is None) if cause is None else (cause in ending.cause)


def start_rank_and_sleep(pid_file: str) -> None:
    """A stage's process that started a rank in a session of its own, as torchrun does."""
    sleep = [sys.executable, "-c", "import time; time.sleep(60)"]
    rank = subprocess.Popen(sleep, start_new_session=True)
    Path(pid_file).write_text(str(rank.pid))
    time.sleep(60)


def test_the_supervisor_kills_the_ranks_under_its_child_too(
    model_settings, session_factory, tmp_path
):
    context = WorkerContext(model_settings, None, session_factory)
    pid_file = tmp_path / "rank.pid"
    child = FORK_SERVER.Process(target=start_rank_and_sleep, args=(str(pid_file),))
    child.start()
    rank = int(wait_for(lambda: pid_file.is_file() and pid_file.read_text(), 10, "the rank"))
    ending = _watch(child, context, Still(), Limits(1, seconds=60, stall_seconds=60))
    assert "ran out of memory" in ending.cause
    wait_for(lambda: not alive(rank), 2, "the rank to die")
