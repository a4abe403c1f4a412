"""Standalone training jobs: a reward model or an SFT policy from the collected data, through
the same path as a round's stage (`worker.fitting`), registered as a model version with its
lineage (parent, snapshot hash, raters) and metrics."""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from app.db import session_scope
from app.domain import model_registry
from app.domain.preferences import build_snapshot, collect_demonstrations, write_snapshot
from app.domain.quality import snapshot_weights
from app.models import Job, ModelKind, ModelVersion
from app.round_config import RewardConfig, SFTConfig, build_config
from worker.context import WorkerContext
from worker.fitting import StepReport, fit_reward_model, fit_sft
from worker.job_runner import Progress
from worker.model_store import ModelStore


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
    version, report = fit_reward_model(
        context,
        pairs=snapshot.pairs,
        base=base,
        config=config,
        name=f"reward-{job.id}",
        snapshot_sha256=snapshot.sha256,
        rater_count=snapshot.rater_count,
        report=_reporting(progress),
        job_id=job.id,
    )
    return {
        "version": version.name,
        "snapshot": snapshot.sha256,
        "eval_accuracy": report.eval_accuracy,
    }


def train_sft_job(context: WorkerContext, job: Job, progress: Progress) -> dict[str, Any]:
    """Fine-tune a policy on the answers raters wrote; register it as a policy version."""
    config = build_config(SFTConfig, job.params.get("config", {}), device=context.settings.device)
    with session_scope(context.session_factory) as db:
        base = _base_policy(db, job.params.get("base"))
        demonstrations = collect_demonstrations(db)
    name = f"sft-{job.id}"
    report = fit_sft(
        context,
        demonstrations=demonstrations,
        base=base,
        config=config,
        name=name,
        report=_reporting(progress),
    )
    with session_scope(context.session_factory) as db:
        ModelStore(context.settings).register(
            db,
            name=name,
            kind=ModelKind.POLICY,
            path=name,
            parent=db.get(ModelVersion, base.id),
            config={"trainer": "sft", **asdict(config), "job_id": job.id},
            metrics={
                "examples": report.examples,
                "steps": report.steps,
                "final_loss": report.final_loss,
                "seconds": report.seconds,
            },
        )
    return {"version": name, "examples": report.examples, "final_loss": report.final_loss}


def _reporting(progress: Progress) -> StepReport:
    """A job's progress: the share of the planned steps done (the last 5% is the saving),
    and which step in words."""
    return lambda step, total, _: progress(min(0.95, step / total), f"step {step} of {total}")


def _base_policy(db, name: str | None) -> ModelVersion:
    return model_registry.served_policy(db, name=name or "current")
