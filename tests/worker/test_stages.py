"""Whole training rounds through a real `alignloop worker` process on Redis and PostgreSQL,
with the tiny model: the round ends in a served policy; a killed worker leaves no broken model."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import replace
from datetime import timedelta
from pathlib import Path

import httpx
import openai
import pytest
import redis
from sqlalchemy import func, select, update

from app import migrate, round_config
from app.db import make_engine, make_session_factory, session_scope
from app.domain import accounts, model_registry
from app.domain.rounds import STAGES
from app.models import (
    Algorithm,
    Job,
    Judgement,
    KeyScope,
    ModelKind,
    ModelVersion,
    Prompt,
    PromptSplit,
    Response,
    Role,
    Round,
    RoundStage,
    RunStatus,
    User,
    utcnow,
)
from app.pairs import read_pairs
from app.round_config import RoundConfig
from app.web.main import create_app
from tests.conftest import POSTGRES_URL, REDIS_URL, make_settings
from tests.helpers import (
    create_task,
    judged_tasks_with_rewrites,
    prompt_keys,
    scratch_postgres_database,
)
from tests.live_server import serve_in_thread
from worker.celery_app import WorkerContext, create_celery
from worker.model_store import ModelStore
from worker.stages import (
    RoundError,
    Stage,
    _demonstrations,
    _reward_model_start,
    snapshot_stage,
)
from worker.tasks import reclaim_work, start_scheduled_round

ROUND_TIMEOUT_S = 300
TINY_ROUND = {
    "snapshot": {"min_pairs": 4},
    "sft": {"min_demonstrations": 4, "epochs": 1, "batch_size": 4, "learning_rate": 1e-3},
    "reward_model": {"epochs": 1, "batch_pairs": 4, "learning_rate": 1e-3},
    "policy": {"steps": 2, "prompts_per_step": 4, "max_new_tokens": 8, "learning_rate": 1e-3},
    "evaluation": {"prompts": 3, "max_new_tokens": 8, "ab_prompts": 2},
}


class World:
    """A database with judged tasks, the tiny `base`, a worker process, and the web app."""

    def __init__(
        self, settings, url: str, key: str, admin_key: str, api: str, worker: subprocess.Popen
    ) -> None:
        self.settings, self.url, self.api, self.worker = settings, url, api, worker
        self.headers = {"Authorization": f"Bearer {admin_key}"}
        self.openai = openai.OpenAI(base_url=f"{api}/v1", api_key=key, max_retries=0)
        self.engine = make_engine(url)
        self.factory = make_session_factory(self.engine)

    def round(self, round_id: int) -> Round:
        with self.factory() as db:
            return db.get(Round, round_id)


def judged_data(factory) -> None:
    """Twelve judged tasks (kind over rude), each with a rewrite; three held-out prompts."""
    with session_scope(factory) as db:
        judged_tasks_with_rewrites(db)
        for index in range(3):
            db.add(
                Prompt(
                    messages=[{"role": "user", "content": f"Held-out question {index}?"}],
                    dedup_hash=f"held-out-{index}",
                    split=PromptSplit.EVAL,
                )
            )


@pytest.fixture
def world(model_settings) -> Iterator[World]:
    redis.Redis.from_url(REDIS_URL).flushdb()
    with scratch_postgres_database(POSTGRES_URL, prefix="alignloop_rounds") as url:
        engine = make_engine(url)
        migrate.upgrade(engine)
        factory = make_session_factory(engine)
        ModelStore(model_settings).ensure_base_version(factory)
        judged_data(factory)
        with session_scope(factory) as db:
            admin = accounts.create_user(
                db, username="ada", password="long enough pw", role=Role.ADMIN
            )
            _, admin_key = accounts.create_api_key(
                db, user=admin, name="admin", scope=KeyScope.ADMIN
            )
            _, key = accounts.create_api_key(db, user=admin, name="sdk", scope=KeyScope.INFERENCE)
        settings = model_settings.model_copy(update={"redis_url": REDIS_URL, "database_url": url})
        worker = start_worker(settings.data_dir, url)
        try:
            with serve_in_thread(create_app(settings, engine=engine)) as api:
                world = World(settings, url, key, admin_key, api, worker)
                yield world
                world.engine.dispose()
        finally:
            if worker.poll() is None:
                worker.send_signal(signal.SIGTERM)
                worker.wait(30)
            engine.dispose()
            redis.Redis.from_url(REDIS_URL).flushdb()


def start_worker(data_dir: Path, database_url: str) -> subprocess.Popen:
    env = {
        **os.environ,
        "ALIGNLOOP_DATA_DIR": str(data_dir),
        "ALIGNLOOP_DATABASE_URL": database_url,
        "ALIGNLOOP_REDIS_URL": REDIS_URL,
        "ALIGNLOOP_BASE_MODEL": "tiny-random",
        "ALIGNLOOP_DEVICE": "cpu",
        "ALIGNLOOP_LOG_LEVEL": "WARNING",
    }
    command = [sys.executable, "-m", "app.cli", "worker", "-Q", "default,train", "-c", "1"]
    return subprocess.Popen(command, env=env)


def start_round(world: World, **body) -> int:

    response = httpx.post(f"{world.api}/api/rounds", json=body, headers=world.headers)
    assert response.status_code == 202, response.text
    return response.json()["round_id"]


def wait_for(world: World, round_id: int, done, *, timeout: float = ROUND_TIMEOUT_S) -> Round:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        round_ = world.round(round_id)
        if done(round_):
            return round_
        if round_.status in (RunStatus.FAILED, RunStatus.CANCELLED) and not done(round_):
            pytest.fail(f"round {round_id} ended {round_.status}: {round_.error}")
        time.sleep(0.5)
    pytest.fail(f"round {round_id} still {world.round(round_id).stage} after {timeout} s")


def test_a_round_ends_in_a_registered_policy_that_the_api_serves(world):

    round_id = start_round(world, algorithm="ppo", overrides=TINY_ROUND)
    round_ = wait_for(world, round_id, lambda r: r.status == RunStatus.SUCCEEDED)
    assert set(round_.timings) == {stage.value for stage in STAGES}
    assert round_.metrics["sft"]["examples"] == 12
    assert round_.metrics["reward_model"]["eval_accuracy"] is not None
    evaluation = round_.metrics["evaluation"]
    assert 0 <= evaluation["win_rate"] <= 1 and len(evaluation["samples"]) == 3
    name = round_.metrics["register"]["version"]
    with world.factory() as db:
        version = db.scalar(select(ModelVersion).where(ModelVersion.name == name))
        parent = db.get(ModelVersion, version.parent_id)
        assert version.round_id == round_id and version.snapshot_sha256 == round_.snapshot_sha256
        assert parent.name == "base" and version.metrics["evaluation"]["prompts"] == 3
    shown = httpx.get(f"{world.api}/api/rounds/{round_id}", headers=world.headers).json()
    assert (
        shown["policy_version"] == name and shown["reward_model_version"] == f"reward-r{round_id}"
    )
    curve = httpx.get(
        f"{world.api}/api/rounds/{round_id}/metrics?name=kl", headers=world.headers
    ).json()
    assert [point["step"] for point in curve] == [1, 2] and curve[0]["stage"] == "policy"
    lines = httpx.get(f"{world.api}/api/rounds/{round_id}/log", headers=world.headers).json()
    for stage in STAGES:
        said = [line["message"] for line in lines if line["stage"] == stage.value]
        assert said[0].startswith("started on") and said[-1].startswith("finished in"), said
    assert any("eval_accuracy=" in line["message"] for line in lines)
    promoted = httpx.post(f"{world.api}/api/models/{version.id}/promote", headers=world.headers)
    assert promoted.status_code == 200
    raw = world.openai.chat.completions.with_raw_response.create(
        model="current", messages=[{"role": "user", "content": "Hello?"}], max_tokens=5
    )
    assert (
        raw.headers["x-model-version"] == name
        and raw.parse().choices[0].message.content is not None
    )
    with world.factory() as db:
        ab_job = db.get(Job, round_.metrics["register"]["ab_job"])
        assert ab_job.params["model_versions"] == [name, "base"]  # blind A/B tasks for raters


def test_a_killed_worker_fails_the_round_and_registers_nothing(world):
    long_policy = {**TINY_ROUND, "policy": {**TINY_ROUND["policy"], "steps": 100_000}}
    round_id = start_round(world, algorithm="rloo", overrides=long_policy)
    wait_for(world, round_id, lambda r: r.stage.value == "policy" and r.progress > 0)
    world.worker.send_signal(signal.SIGKILL)
    world.worker.wait(10)
    with session_scope(world.factory) as db:  # the lease runs out: two minutes pass
        db.execute(
            update(Round)
            .where(Round.id == round_id)
            .values(lease_expires_at=utcnow() - timedelta(seconds=1))
        )
    context = WorkerContext(world.settings, world.engine, world.factory)
    reclaimed = reclaim_work(
        create_celery(world.settings, engine=world.engine), context, after_restart=False
    )
    assert reclaimed["failed_rounds"] == 1
    round_ = world.round(round_id)
    assert round_.status == RunStatus.FAILED and round_.error.startswith("policy: the worker")
    with world.factory() as db:
        names = set(db.scalars(select(ModelVersion.name)))
    assert names == {"base", f"reward-r{round_id}"}  # no policy version from this round
    assert not (world.settings.models_dir / f"round-{round_id}" / "config.json").exists()
    answer = world.openai.chat.completions.create(
        model="current", messages=[{"role": "user", "content": "Still there?"}], max_tokens=4
    )
    assert answer.model == "base"


def test_scheduled_rounds_wait_for_enough_new_judgements(tmp_path, committed_engine, monkeypatch):
    monkeypatch.setitem(round_config.PRESETS["quick"]["snapshot"], "min_pairs", 1)
    settings = make_settings(
        tmp_path,
        database_url=committed_engine.url.render_as_string(False),
        round_after_judgements=2,
    )
    factory = make_session_factory(committed_engine)
    context = WorkerContext(settings, committed_engine, factory)
    celery = create_celery(settings, engine=committed_engine)
    schedule = lambda reason="judgements": start_scheduled_round(celery, context, reason=reason)  # noqa: E731
    with session_scope(factory) as db:
        model_registry.register_model_version(
            db, name="base", kind=ModelKind.POLICY, path="base", config={}
        )

    def judge() -> int:
        with session_scope(factory) as db:
            rater = db.scalar(select(User)) or accounts.create_user(
                db, username="rita", password="long enough pw", role=Role.RATER
            )
            task = create_task(db)
            judgement = Judgement(
                task_id=task.id,
                rater_id=rater.id,
                ranking=[link.response_id for link in task.responses],
            )
            db.add(judgement)
            db.flush()
            return judgement.id

    assert schedule() is None and schedule("interval") is None  # nothing new at all
    judge()
    assert schedule() is None  # one new judgement, two wanted
    last = judge()
    round_id = schedule()
    assert round_id is not None and schedule() is None  # a round is already active
    with session_scope(factory) as db:  # the round ends, having taken both judgements
        round_ = db.get(Round, round_id)
        round_.status, round_.snapshot_sha256 = RunStatus.SUCCEEDED, "0" * 64
        round_.config = {**round_.config, "snapshot": {"up_to_judgement_id": last}}
    assert schedule("interval") is None
    judge()
    assert schedule("interval") is not None


def test_a_round_after_a_promoted_round_trains_on_what_was_judged_since(tmp_path, committed_engine):
    settings = make_settings(tmp_path, database_url=committed_engine.url.render_as_string(False))
    factory = make_session_factory(committed_engine)
    context = WorkerContext(settings, committed_engine, factory)
    with session_scope(factory) as db:
        rater = judged_tasks_with_rewrites(db, count=4)
        cutoff = db.scalar(select(func.max(Judgement.id)))
        earlier, policy = promoted_round(db, cutoff)
    config = round_config.round_config(Algorithm.DPO, "quick", {"snapshot": {"min_pairs": 1}})
    snapshot = Stage(
        context=context,
        round_id=earlier.id + 1,
        stage=RoundStage.SNAPSHOT,
        algorithm=Algorithm.DPO,
        config=RoundConfig.parse(Algorithm.DPO, config),
        stored_config=config,
        metrics={},
        parent=None,
        snapshot_sha256=None,
    )
    with pytest.raises(RoundError, match=f"no judgements since round {earlier.id}"):
        snapshot_stage(snapshot)
    with session_scope(factory) as db:
        for key in prompt_keys(3, held_out=0):
            task = create_task(db, dedup_hash=key)
            best = task.responses[0].response_id
            written = Response(prompt_id=task.prompt_id, author_id=rater.id, text="Rewritten.")
            db.add(written)
            db.flush()
            ranking = [link.response_id for link in task.responses]
            db.add(Judgement(task_id=task.id, rater_id=rater.id, ranking=ranking))
            written.generation_params = {"replaces_response_id": best}
    fields = snapshot_stage(snapshot)
    assert fields["config"]["snapshot"]["train_after_judgement_id"] == cutoff
    pairs = read_pairs(settings.snapshots_dir / f"{fields['snapshot_sha256']}.jsonl")
    train = [pair for pair in pairs if pair.split == "train"]
    assert len(train) == 3 and all(pair.judgement_id > cutoff for pair in train)
    assert [pair.split for pair in pairs if pair.judgement_id <= cutoff] == ["held_out", "held_out"]
    new_pairs = RoundConfig.parse(Algorithm.DPO, fields["config"])
    all_pairs = snapshot.config
    reward_stage = replace(snapshot, stage=RoundStage.REWARD_MODEL, config=new_pairs, parent=policy)
    assert _reward_model_start(reward_stage).name == f"reward-r{earlier.id}"
    assert _reward_model_start(replace(reward_stage, config=all_pairs)).name == policy.name
    demonstrations, fresh = _demonstrations(reward_stage)
    assert fresh == 3 and {item["answer"] for item in demonstrations} == {"Rewritten."}
    assert len(_demonstrations(replace(reward_stage, config=all_pairs))[0]) == 4 + 3


def promoted_round(db, cutoff: int) -> tuple[Round, ModelVersion]:
    """A finished round that snapshotted judgements up to `cutoff` and fine-tuned on every
    rewrite so far, with its reward model and its promoted policy (trained from `base`)."""
    base = model_registry.register_model_version(
        db, name="base", kind=ModelKind.POLICY, path="base", config={}
    )
    earlier = Round(status=RunStatus.SUCCEEDED, config={"snapshot": {"up_to_judgement_id": cutoff}})
    db.add(earlier)
    db.flush()
    earlier.metrics = {
        "reward_model": {"version": f"reward-r{earlier.id}"},
        "sft": {"up_to_response_id": db.scalar(select(func.max(Response.id)))},
    }
    _reward_model, policy = (
        model_registry.register_model_version(
            db, name=name, kind=kind, path=path, config={}, parent=base, round_id=earlier.id
        )
        for name, kind, path in (
            (f"reward-r{earlier.id}", ModelKind.REWARD, "rm"),
            (f"round-{earlier.id}", ModelKind.POLICY, "p"),
        )
    )
    model_registry.promote(db, version_id=policy.id)
    return earlier, policy
