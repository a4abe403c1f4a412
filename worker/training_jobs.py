"""Training jobs: a reward model or an SFT policy from the collected data, registered as a
model version with its lineage (parent, snapshot hash, raters) and metrics."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict
from typing import Any

from app.db import session_scope
from app.domain import crud
from app.domain.preferences import build_snapshot, collect_demonstrations, write_snapshot
from app.domain.quality import snapshot_weights
from app.models import Job, ModelKind, ModelVersion
from app.pairs import Pair
from app.round_config import RewardConfig, SFTConfig, build_config
from worker.context import WorkerContext
from worker.job_runner import Progress
from worker.model_store import ModelStore
from worker.training.data import Demonstration
from worker.training.reward_model import (
    RewardReport,
    report_metrics,
    save_reward_model,
    train_reward_model,
)
from worker.training.sft import save_policy, train_sft


def train_reward_model_job(context: WorkerContext, job: Job, progress: Progress) -> dict[str, Any]:
    """Snapshot the judgements, train a reward model on them, register it."""
    config = build_config(
        RewardConfig, job.params.get("config", {}), device=context.settings.device
    )
    with session_scope(context.session_factory) as db:
        base = _base_policy(db, job.params.get("base"))
        weights = snapshot_weights(db, context.settings)
        snapshot = build_snapshot(db, ties=job.params.get("ties", "skip"), rater_weights=weights)
    write_snapshot(snapshot, context.settings.snapshots_dir)
    expected_steps = max(1, config.epochs * len(snapshot.split("train")) // config.batch_pairs)
    version, report = fit_reward_model(
        context,
        pairs=snapshot.pairs,
        base=base,
        config=config,
        name=f"reward-{job.id}",
        snapshot_sha256=snapshot.sha256,
        rater_count=snapshot.rater_count,
        on_step=lambda point: progress(min(0.95, point["step"] / expected_steps)),
        job_id=job.id,
    )
    return {
        "version": version.name,
        "snapshot": snapshot.sha256,
        "eval_accuracy": report.eval_accuracy,
    }


def fit_reward_model(
    context: WorkerContext,
    *,
    pairs: Sequence[Pair],
    base: ModelVersion,
    config: RewardConfig,
    name: str,
    snapshot_sha256: str,
    on_step: Callable[[dict[str, float]], None],
    rater_count: int | None = None,
    round_id: int | None = None,
    job_id: int | None = None,
) -> tuple[ModelVersion, RewardReport]:
    """Train a reward model on `pairs` from `base` (a policy, which gets a fresh head, or a
    reward model that goes on learning), store it, register it as `name`."""
    store = ModelStore(context.settings)
    model, tokenizer, report = train_reward_model(
        pairs, store.path_for(base.path), config, on_step=on_step
    )
    save_reward_model(model, tokenizer, report, store.path_for(name))
    with session_scope(context.session_factory) as db:
        version = store.register(
            db,
            name=name,
            kind=ModelKind.REWARD,
            path=name,
            parent=db.get(ModelVersion, base.id),
            config={"trainer": "reward_model", **asdict(config), "job_id": job_id},
            metrics=report_metrics(report),
            snapshot_sha256=snapshot_sha256,
            rater_count=rater_count,
            round_id=round_id,
        )
    return version, report


def train_sft_job(context: WorkerContext, job: Job, progress: Progress) -> dict[str, Any]:
    """Fine-tune a policy on the answers raters wrote; register it as a policy version."""
    store = ModelStore(context.settings)
    config = build_config(SFTConfig, job.params.get("config", {}), device=context.settings.device)
    with session_scope(context.session_factory) as db:
        base = _base_policy(db, job.params.get("base"))
        demonstrations = collect_demonstrations(db)
        base_path = store.path_for(base.path)
    examples = [Demonstration(item["messages"], item["answer"]) for item in demonstrations]
    expected_steps = max(1, config.epochs * len(examples) // config.batch_size)
    model, tokenizer, report = train_sft(
        examples,
        base_path,
        config,
        on_step=lambda point: progress(min(0.95, point["step"] / expected_steps)),
    )
    name = f"sft-{job.id}"
    save_policy(model, tokenizer, store.path_for(name))
    with session_scope(context.session_factory) as db:
        store.register(
            db,
            name=name,
            kind=ModelKind.POLICY,
            path=name,
            parent=db.get(ModelVersion, base.id),
            config={"trainer": "sft", **config.__dict__, "job_id": job.id},
            metrics={
                "examples": report.examples,
                "steps": report.steps,
                "final_loss": report.final_loss,
                "seconds": report.seconds,
            },
        )
    return {"version": name, "examples": len(examples), "final_loss": report.final_loss}


def _base_policy(db, name: str | None) -> ModelVersion:
    return crud.served_policy(db, name=name or "current")
