"""Training a reward model or an SFT policy into the model store: one path for a round's stage
and for a standalone training job alike, which counts the steps, reports them, saves the model
atomically and (for a reward model) registers it with its lineage."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict
from typing import Any

from app.db import session_scope
from app.models import ModelKind, ModelVersion
from app.pairs import Pair
from app.round_config import RewardConfig, SFTConfig
from worker.context import WorkerContext
from worker.model_store import ModelStore
from worker.training.data import Demonstration
from worker.training.optimisation import planned_steps
from worker.training.reward_model import (
    RewardReport,
    report_metrics,
    save_reward_model,
    train_reward_model,
)
from worker.training.sft import SFTReport, save_policy, train_sft

StepReport = Callable[[int, int, dict[str, float]], None]
"""Called after each optimiser step with the step, the steps planned, and the step's values."""


def fit_reward_model(
    context: WorkerContext,
    *,
    pairs: Sequence[Pair],
    base: ModelVersion,
    config: RewardConfig,
    name: str,
    snapshot_sha256: str,
    report: StepReport,
    rater_count: int | None = None,
    round_id: int | None = None,
    job_id: int | None = None,
) -> tuple[ModelVersion, RewardReport]:
    """Train a reward model on `pairs` from `base` (a policy, which gets a fresh head, or a
    reward model that goes on learning), store it, register it as `name`."""
    store = ModelStore(context.settings)
    total = reward_model_steps(pairs, config)
    model, tokenizer, trained = train_reward_model(
        pairs,
        store.path_for(base.path),
        config,
        on_step=lambda point: report(point["step"], total, point),
    )
    save_reward_model(model, tokenizer, trained, store.path_for(name))
    version = register_reward_model(
        context,
        base=base,
        config=config,
        name=name,
        trained=trained,
        snapshot_sha256=snapshot_sha256,
        rater_count=rater_count,
        round_id=round_id,
        job_id=job_id,
    )
    return version, trained


def reward_model_steps(pairs: Sequence[Pair], config: RewardConfig) -> int:
    """The optimiser steps a reward model takes on `pairs` (their training split)."""
    return planned_steps(
        config.epochs, sum(pair.split == "train" for pair in pairs), config.batch_pairs
    )


def register_reward_model(
    context: WorkerContext,
    *,
    base: ModelVersion,
    config: RewardConfig,
    name: str,
    trained: RewardReport,
    snapshot_sha256: str,
    rater_count: int | None = None,
    round_id: int | None = None,
    job_id: int | None = None,
) -> ModelVersion:
    """Register the reward model saved in the store as `name` (by this process, or by the
    main one of several that trained it: `worker.launch`), with its lineage and report."""
    store = ModelStore(context.settings)
    with session_scope(context.session_factory) as db:
        return store.register(
            db,
            name=name,
            kind=ModelKind.REWARD,
            path=name,
            parent=db.get(ModelVersion, base.id),
            config={"trainer": "reward_model", **asdict(config), "job_id": job_id},
            metrics=report_metrics(trained),
            snapshot_sha256=snapshot_sha256,
            rater_count=rater_count,
            round_id=round_id,
        )


def fit_sft(
    context: WorkerContext,
    *,
    demonstrations: Sequence[dict[str, Any]],
    base: ModelVersion,
    config: SFTConfig,
    name: str,
    report: StepReport,
) -> SFTReport:
    """Fine-tune `base` on `demonstrations` (`{"messages", "answer"}`) and store the policy
    as `name`, unregistered (a round registers its policy only once it is evaluated)."""
    store = ModelStore(context.settings)
    examples = [Demonstration(item["messages"], item["answer"]) for item in demonstrations]
    total = planned_steps(config.epochs, len(examples), config.batch_size)
    model, tokenizer, trained = train_sft(
        examples,
        store.path_for(base.path),
        config,
        on_step=lambda point: report(point["step"], total, point),
    )
    save_policy(model, tokenizer, store.path_for(name))
    return trained
