"""Fixtures of the trainers' tests: a reward model to optimise policies against."""

from __future__ import annotations

import pytest
import torch

from worker.training.reward_model import RewardReport, load_reward_model, save_reward_model


@pytest.fixture(scope="session")
def tiny_reward_model(tiny_model_dir, tmp_path_factory):
    """A reward model with a fresh head on the tiny policy: arbitrary but fixed rewards."""
    torch.manual_seed(0)
    model, tokenizer = load_reward_model(tiny_model_dir, torch.device("cpu"))
    report = RewardReport(train_pairs=0, eval_pairs=0, reward_mean=0.1, reward_std=2.0)
    return save_reward_model(model, tokenizer, report, tmp_path_factory.mktemp("rm") / "rm")
