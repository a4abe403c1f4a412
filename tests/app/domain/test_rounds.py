"""Training rounds in the database: the API, one round per line, stage leases, reclaiming."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta

import pytest
from sqlalchemy import func, select

from app import round_config
from app.db import make_session_factory, session_scope
from app.domain import model_registry, rounds
from app.errors import Conflict
from app.models import Algorithm, ModelKind, ModelStatus, Round, RoundStage, RunStatus, utcnow
from tests.helpers import (
    ab_judgement,
    api_key_for,
    policy_versions,
    problem,
    ready_for_a_round,
    refused_while_the_model_is_prepared,
)


def test_admins_start_follow_and_cancel_a_round(client, db, admin):
    ready_for_a_round(db)
    headers = api_key_for(db, admin)
    accepted = client.post(
        "/api/rounds",
        json={"algorithm": "rloo", "overrides": {"policy": {"steps": 2}}},
        headers=headers,
    )
    assert accepted.status_code == 202
    round_id = accepted.json()["round_id"]
    shown = client.get(f"/api/rounds/{round_id}", headers=headers).json()
    assert shown["status"] == "queued" and shown["stage"] == "pending"
    assert shown["algorithm"] == "rloo" and shown["preset"] == "quick"
    assert shown["config"]["policy"]["steps"] == 2
    assert shown["config"]["policy"]["samples_per_prompt"] == 2  # RLOO's own default
    assert [r["id"] for r in client.get("/api/rounds", headers=headers).json()] == [round_id]
    busy = client.post("/api/rounds", json={}, headers=headers)
    assert busy.status_code == 409 and "already queued or running" in busy.json()["detail"]
    other_line = client.post("/api/rounds", json={"line": "experiment"}, headers=headers)
    assert other_line.status_code == 202
    cancelled = client.post(f"/api/rounds/{round_id}/cancel", headers=headers)
    assert cancelled.status_code == 200 and cancelled.json()["status"] == "cancelled"
    assert client.post(f"/api/rounds/{round_id}/cancel", headers=headers).status_code == 409
    assert client.post("/api/rounds", json={}, headers=headers).status_code == 202


def test_a_round_needs_a_ready_model_and_enough_judged_pairs(client, db, admin, settings):
    headers = api_key_for(db, admin)
    refused_while_the_model_is_prepared(client, settings, "/api/rounds", headers)
    ready_for_a_round(db, pairs=6)
    db.commit()
    too_few = client.post("/api/rounds", json={}, headers=headers)
    assert too_few.status_code == 409
    assert (
        "Too few judged pairs to train on: 6, and this round needs at least 32"
        in (too_few.json()["detail"])
    )
    lowered = {"overrides": {"snapshot": {"min_pairs": 6}}}
    assert client.post("/api/rounds", json=lowered, headers=headers).status_code == 202
    assert db.scalar(select(func.count()).select_from(Round)) == 1


def test_bad_round_requests_are_refused(client, db, admin, rater):
    headers = api_key_for(db, admin)
    post = lambda body: client.post("/api/rounds", json=body, headers=headers)  # noqa: E731
    assert post({"algorithm": "a2c"}).status_code == 422
    assert post({"preset": "huge"}).status_code == 422
    unknown_section = post({"overrides": {"optimiser": {"lr": 1}}})
    assert unknown_section.status_code == 422 and "optimiser" in problem(unknown_section)
    unknown_setting = post({"algorithm": "dpo", "overrides": {"policy": {"steps": 3}}})
    assert unknown_setting.status_code == 422 and "steps" in problem(unknown_setting)
    assert post({"overrides": {"promotion": {"sometimes": True}}}).status_code == 422
    wrong_type = post({"algorithm": "rloo", "overrides": {"policy": {"steps": "many"}}})
    assert wrong_type.status_code == 422
    assert "'steps' must be of type int" in problem(wrong_type)
    no_such_choice = post({"algorithm": "dpo", "overrides": {"policy": {"nll_pairs": "some"}}})
    assert no_such_choice.status_code == 422
    assert "must be one of ['all', 'rewrites']" in problem(no_such_choice)
    unknown_choice = post({"overrides": {"snapshot": {"train_pairs": "some"}}})
    assert unknown_choice.status_code == 422
    assert "must be one of ['new', 'all']" in problem(unknown_choice)
    assert client.get("/api/rounds/999", headers=headers).status_code == 404
    assert client.get("/api/rounds/999/metrics", headers=headers).status_code == 404
    assert client.post("/api/rounds", json={}, headers=api_key_for(db, rater)).status_code == 403


def test_concurrent_starts_on_one_line_queue_exactly_one_round(committed_engine, settings):
    factory = make_session_factory(committed_engine)
    with session_scope(factory) as db:
        ready_for_a_round(db)
    starters = 10
    barrier = threading.Barrier(starters)

    def start(_: int) -> str:
        with factory() as db:
            barrier.wait()
            try:
                start_quick_round(db, settings)
            except Conflict:
                return "409"
            return "202"

    with ThreadPoolExecutor(max_workers=starters) as pool:
        answers = list(pool.map(start, range(starters)))
    assert sorted(answers) == ["202"] + ["409"] * (starters - 1)
    with factory() as db:
        assert db.scalar(select(func.count()).select_from(Round)) == 1


def test_the_config_is_the_preset_with_the_overrides():
    config = round_config.round_config(
        Algorithm.PPO, "quick", {"reward_model": {"epochs": 3}, "promotion": {"auto": True}}
    )
    assert config["reward_model"]["epochs"] == 3
    assert (
        config["reward_model"]["batch_pairs"]
        == round_config.PRESETS["quick"]["reward_model"]["batch_pairs"]
    )
    assert config["promotion"]["auto"] is True
    assert config["policy"] == round_config.POLICY_PRESETS["quick"][Algorithm.PPO]
    assert "samples_per_prompt" not in config["policy"]
    dpo = round_config.round_config(Algorithm.DPO, "quick", {"policy": {"epochs": 3}})
    assert dpo["policy"] == {**round_config.POLICY_PRESETS["quick"][Algorithm.DPO], "epochs": 3}
    assert round_config.POLICY_PRESETS["quick"][Algorithm.DPO]["epochs"] == 2  # unchanged


def test_every_preset_is_a_valid_config_for_every_algorithm():
    for preset in round_config.PRESETS:
        for algorithm in Algorithm:
            round_config.round_config(algorithm, preset, {})  # raises on an unknown setting


def start_quick_round(db, settings, **fields) -> Round:
    """A committed `quick` PPO round (on the line given as `line=`)."""
    round_ = rounds.start_round(
        db,
        algorithm=Algorithm.PPO,
        preset="quick",
        overrides={},
        created_by=None,
        settings=settings,
        **fields,
    )
    db.commit()
    return round_


@pytest.fixture
def queued(db, settings):
    """Starts `quick` rounds over enough judged pairs: `queued(db, line=...)`."""
    ready_for_a_round(db)
    return lambda db, **fields: start_quick_round(db, settings, **fields)


def test_a_stage_runs_once_in_order_under_a_lease(db, queued):
    round_ = queued(db)
    claim = lambda stage, worker="w1": rounds.claim_stage(  # noqa: E731
        db, round_id=round_.id, stage=stage, worker=worker
    )
    assert claim(RoundStage.SFT) is None  # not its turn
    assert claim(RoundStage.SNAPSHOT).status == RunStatus.RUNNING
    assert claim(RoundStage.SNAPSHOT, "w2") is None  # a duplicate delivery: held
    assert rounds.renew_lease(db, round_id=round_.id, worker="w1", progress=0.5)
    assert not rounds.renew_lease(db, round_id=round_.id, worker="w2", progress=0.5)
    assert rounds.complete_stage(db, round_id=round_.id, worker="w2", seconds=1) is None
    done = rounds.complete_stage(
        db, round_id=round_.id, worker="w1", seconds=1.234, snapshot_sha256="ab" * 32
    )
    assert done.stage == RoundStage.SFT and done.lease_owner is None
    assert done.timings == {"snapshot": 1.23} and done.snapshot_sha256 == "ab" * 32
    assert claim(RoundStage.SNAPSHOT) is None  # a late duplicate of a finished stage
    assert claim(RoundStage.SFT, "w2").lease_owner == "w2"
    db.commit()
    for stage in rounds.STAGES[1:]:
        claim(stage, "w2")
        rounds.complete_stage(db, round_id=round_.id, worker="w2", seconds=0)
    db.flush()
    db.refresh(round_)
    assert round_.status == RunStatus.SUCCEEDED and round_.stage == RoundStage.DONE


def test_a_cancel_stops_the_running_stage_at_its_next_heartbeat(db, queued):
    round_ = queued(db)
    rounds.claim_stage(db, round_id=round_.id, stage=RoundStage.SNAPSHOT, worker="w1")
    assert rounds.cancel_round(db, round_id=round_.id).status == RunStatus.RUNNING
    assert not rounds.renew_lease(db, round_id=round_.id, worker="w1", progress=0.1)
    rounds.complete_stage(db, round_id=round_.id, worker="w1", seconds=1)
    db.flush()
    db.refresh(round_)
    assert round_.status == RunStatus.CANCELLED


def test_a_dead_worker_fails_its_round_with_the_stage_named(db, queued):
    round_ = queued(db)
    rounds.claim_stage(db, round_id=round_.id, stage=RoundStage.SNAPSHOT, worker="w1")
    assert rounds.fail_lost_rounds(db) == 0  # the lease is alive
    round_.lease_expires_at = utcnow() - timedelta(seconds=1)
    db.flush()
    assert rounds.fail_lost_rounds(db) == 1
    db.refresh(round_)
    assert round_.status == RunStatus.FAILED and round_.error.startswith("snapshot: the worker")
    assert "w1" not in round_.error  # no internal ids in what admins read
    assert rounds.active_round(db, line="main") is None


def test_a_cancelled_round_whose_worker_stopped_reads_cancelled(db, queued):
    round_ = queued(db)
    rounds.claim_stage(db, round_id=round_.id, stage=RoundStage.SNAPSHOT, worker="host:7:1")
    rounds.cancel_round(db, round_id=round_.id)
    rounds.end_abandoned_stage(
        db, round_id=round_.id, stage=RoundStage.SNAPSHOT, worker="host:8", error="", cancelled=True
    )
    assert db.get(Round, round_.id).status == RunStatus.RUNNING  # another process holds it
    round_.lease_expires_at = utcnow() - timedelta(seconds=1)
    db.flush()
    assert rounds.fail_lost_rounds(db) == 1
    db.refresh(round_)
    assert (round_.status, round_.error) == (RunStatus.CANCELLED, "cancelled by an admin")


def test_rounds_whose_message_was_lost_are_sent_again(db, queued, app):
    never_sent = queued(db)
    assert [r.id for r in rounds.rounds_to_redispatch(db)] == [never_sent.id]
    assert rounds.send(db, app.state.celery, never_sent.id)
    assert rounds.rounds_to_redispatch(db) == []  # sent: it may wait in the queue a while
    between = queued(db, line="other")
    rounds.claim_stage(db, round_id=between.id, stage=RoundStage.SNAPSHOT, worker="w1")
    rounds.complete_stage(db, round_id=between.id, worker="w1", seconds=1)
    assert rounds.rounds_to_redispatch(db) == []  # the next stage's message is on its way
    between.lease_expires_at = utcnow() - timedelta(seconds=1)
    db.flush()
    assert [r.id for r in rounds.rounds_to_redispatch(db)] == [between.id]
    assert {r.id for r in rounds.rounds_to_redispatch(db, after_restart=True)} == {
        never_sent.id,
        between.id,
    }


def test_a_next_stage_lost_with_the_broker_is_sent_again_within_minutes(db, queued, monkeypatch):
    """The chain sends the next stage as a stage ends; with the broker down just then, that
    message is lost, and reclaim (every minute) sends it again once `NEXT_STAGE_DUE` passed,
    not half an hour later."""
    round_ = queued(db)
    rounds.claim_stage(db, round_id=round_.id, stage=RoundStage.SNAPSHOT, worker="w1")
    rounds.complete_stage(db, round_id=round_.id, worker="w1", seconds=1)
    db.flush()
    assert rounds.rounds_to_redispatch(db) == []
    ended = utcnow()
    monkeypatch.setattr(rounds, "utcnow", lambda: ended + timedelta(minutes=3))
    waiting = rounds.rounds_to_redispatch(db)
    assert [(r.id, r.status, r.stage) for r in waiting] == [
        (round_.id, RunStatus.RUNNING, RoundStage.SFT)
    ]


def test_curve_points_skip_values_that_are_not_finite_numbers(db, queued):
    round_ = queued(db)
    rounds.record_points(
        db,
        round_id=round_.id,
        stage=RoundStage.POLICY,
        step=1,
        values={"reward": 0.5, "kl": float("nan"), "note": "text", "steps": 3},
    )
    db.flush()
    assert sorted((p.name, p.value) for p in db.query(rounds.RoundMetric)) == [
        ("reward", 0.5),
        ("steps", 3.0),
    ]


def test_promotion_and_rollback_switch_the_current_version(client, db, admin):
    from app.models import ModelKind, ModelStatus, ModelVersion

    versions = {
        name: ModelVersion(name=name, kind=ModelKind.POLICY, status=ModelStatus.READY, path=name)
        for name in ("base", "round-1", "round-2")
    }
    db.add_all(versions.values())
    db.commit()
    headers = api_key_for(db, admin)

    def current() -> str:
        listed = client.get("/api/models", headers=headers).json()
        return next(version["name"] for version in listed if version["current"])

    assert client.post("/api/models/rollback", headers=headers).status_code == 409
    for name in ("round-1", "round-2"):
        promoted = client.post(f"/api/models/{versions[name].id}/promote", headers=headers)
        assert promoted.status_code == 200
    assert current() == "round-2"
    assert client.post("/api/models/rollback", headers=headers).json()["name"] == "round-1"
    assert client.post("/api/models/rollback", headers=headers).json()["name"] == "base"
    assert current() == "base"


def round_awaiting_raters(db, made, *, min_human_win_rate: float = 0.5) -> Round:
    model_registry.promote(db, version_id=made["base"].id)
    round_ = Round(
        status=RunStatus.SUCCEEDED,
        stage=RoundStage.DONE,
        parent_version_id=made["base"].id,
        config={
            "promotion": {
                "auto": True,
                "min_human_win_rate": min_human_win_rate,
                "min_human_judgements": 6,
            }
        },
        metrics={"register": {"version": "round-1", "promoted": False, "awaiting_raters": True}},
    )
    db.add(round_)
    db.flush()
    return round_


def test_auto_promotion_waits_for_enough_blind_verdicts_then_promotes(client, db, admin, rater):
    made = policy_versions(db, "base", "round-1")
    round_ = round_awaiting_raters(db, made, min_human_win_rate=0.3)
    for _ in range(5):
        ab_judgement(db, rater, made, "round-1", "base", prefer="round-1")
    assert rounds.promote_on_human_verdicts(db) == []  # 5 of the 6 verdicts it waits for
    ab_judgement(db, rater, made, "round-1", "base", prefer="round-1")
    assert rounds.promote_on_human_verdicts(db) == [round_.id]
    assert model_registry.current_policy(db).name == "round-1"
    assert not round_.metrics["register"]["awaiting_raters"]
    db.commit()
    shown = client.get(f"/api/rounds/{round_.id}", headers=api_key_for(db, admin)).json()
    assert shown["human"]["n"] == 6 and shown["human"]["win_rate"] == 1.0
    assert shown["human"]["low"] == pytest.approx(0.6097, abs=1e-3)  # Wilson, 6 of 6


def test_a_policy_raters_do_not_prefer_is_never_promoted(db, rater):
    made = policy_versions(db, "base", "round-1")
    round_ = round_awaiting_raters(db, made, min_human_win_rate=0.6)
    for prefer in ["base"] * 7 + ["round-1"]:
        ab_judgement(db, rater, made, "round-1", "base", prefer=prefer)
    assert rounds.promote_on_human_verdicts(db) == []
    assert model_registry.current_policy(db).name == "base"
    assert not round_.metrics["register"]["awaiting_raters"]
    assert "do not prefer" in rounds.read_log(db, round_id=round_.id)[-1].message


@pytest.mark.parametrize("ending", ["failed", "cancelled at a stage's end"])
def test_a_round_that_does_not_finish_leaves_no_ready_reward_model(db, ending):
    made = policy_versions(db, "base")
    round_ = Round(
        config={}, status=RunStatus.RUNNING, stage=RoundStage.REWARD_MODEL, lease_owner="w:1"
    )
    db.add(round_)
    db.flush()
    reward = model_registry.register_model_version(
        db,
        name=f"reward-r{round_.id}",
        kind=ModelKind.REWARD,
        path="r",
        config={},
        parent=made["base"],
        round_id=round_.id,
    )
    if ending == "failed":
        rounds.fail_round(db, round_id=round_.id, error="policy: out of memory")
    else:
        round_.cancel_requested = True
        rounds.complete_stage(db, round_id=round_.id, worker="w:1", seconds=1.0)
    db.refresh(reward)
    assert reward.status == ModelStatus.FAILED
    assert made["base"].status == ModelStatus.READY
