"""Supervised fine-tuning: the loss counts the answers only; the trainer and its job work."""

from __future__ import annotations

import math

import pytest
import torch
from sqlalchemy import select

from app.db import make_session_factory, session_scope
from app.domain import jobs
from app.models import ModelKind, ModelVersion, RunStatus
from app.round_config import SFTConfig
from app.tasks_contract import TRAIN_REWARD_MODEL, TRAIN_SFT
from tests.helpers import judged_tasks_with_rewrites
from worker.celery_app import create_celery
from worker.model_store import ModelStore
from worker.training.data import Demonstration, demonstration_batches, encode_turn
from worker.training.sft import train_sft

DEMOS = [
    Demonstration([{"role": "user", "content": f"What is {n} plus {n}?"}], f"It is {2 * n}.")
    for n in range(6)
]


@pytest.fixture(scope="module")
def tiny(tiny_model_dir):
    from transformers import AutoTokenizer

    return tiny_model_dir, AutoTokenizer.from_pretrained(tiny_model_dir)


def test_only_the_answer_tokens_carry_labels(tiny):
    _, tokenizer = tiny
    batch = next(
        demonstration_batches(
            DEMOS[:2],
            tokenizer,
            batch_size=2,
            max_length=128,
            pad_id=tokenizer.pad_token_id,
            shuffle=False,
        )
    )
    for row, demo in enumerate(DEMOS[:2]):
        prompt, answer = encode_turn(tokenizer, demo.messages, demo.answer, max_length=128)
        labels = batch["labels"][row]
        assert (labels[: len(prompt)] == -100).all()
        assert labels[len(prompt) : len(prompt) + len(answer)].tolist() == answer
        assert (labels[len(prompt) + len(answer) :] == -100).all()


def test_fine_tuning_lowers_the_loss_and_changes_every_parameter(tiny):
    path, _ = tiny
    from transformers import AutoModelForCausalLM

    before = {
        name: tensor.clone()
        for name, tensor in AutoModelForCausalLM.from_pretrained(path).named_parameters()
    }
    model, _, report = train_sft(
        DEMOS, path, SFTConfig(epochs=3, learning_rate=1e-3, batch_size=2, device="cpu")
    )
    losses = [point["loss"] for point in report.curve]
    assert all(math.isfinite(loss) for loss in losses) and losses[-1] < losses[0]
    unchanged = [
        name
        for name, tensor in model.named_parameters()
        if torch.equal(before[name], tensor.detach())
    ]
    assert unchanged == []


@pytest.fixture
def world(model_settings, committed_engine):
    """A committed database with judgements and a rewrite, the tiny base, and Celery."""
    factory = make_session_factory(committed_engine)
    ModelStore(model_settings).ensure_base_version(factory)
    with session_scope(factory) as db:
        judged_tasks_with_rewrites(db)
    return factory, create_celery(model_settings, engine=committed_engine)


def run(world, kind: str, task: str, **params):
    factory, celery = world
    with session_scope(factory) as db:
        job = jobs.create_job(db, kind=kind, params=params, created_by=None)
    celery.tasks[task].apply(args=[job.id])
    with factory() as db:
        return db.get(type(job), job.id)


def test_the_reward_model_job_registers_a_version_with_its_lineage(world, model_settings):
    job = run(
        world, jobs.TRAIN_REWARD_MODEL, TRAIN_REWARD_MODEL, config={"epochs": 1, "batch_pairs": 8}
    )
    assert job.status == RunStatus.SUCCEEDED, job.error
    with world[0]() as db:
        version = db.scalar(select(ModelVersion).where(ModelVersion.kind == ModelKind.REWARD))
        base = db.scalar(select(ModelVersion).where(ModelVersion.name == "base"))
    assert version.name == job.result["version"] and version.parent_id == base.id
    assert version.snapshot_sha256 == job.result["snapshot"] and version.rater_count == 1
    assert version.metrics["train_pairs"] + version.metrics["eval_pairs"] == 24  # pairs + rewrites
    assert (model_settings.snapshots_dir / f"{version.snapshot_sha256}.jsonl").is_file()
    assert (model_settings.models_dir / version.path / "alignloop_reward.json").is_file()
    card = (model_settings.models_dir / version.path / "README.md").read_text()
    assert "parent version: base" in card and version.snapshot_sha256 in card
    assert '"train_pairs"' in card


def test_the_sft_job_registers_a_policy_trained_on_the_rewrites(world):
    job = run(world, jobs.TRAIN_SFT, TRAIN_SFT, config={"epochs": 1})
    assert job.status == RunStatus.SUCCEEDED, job.error
    assert job.result["examples"] == 12
    with world[0]() as db:
        version = db.scalar(select(ModelVersion).where(ModelVersion.name == job.result["version"]))
    assert version.kind == ModelKind.POLICY and version.config["trainer"] == "sft"


def test_a_training_job_with_unknown_settings_fails_with_the_reason(world):
    job = run(world, jobs.TRAIN_SFT, TRAIN_SFT, config={"epochz": 1})
    assert job.status == RunStatus.FAILED and "epochz" in job.error
