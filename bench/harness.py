"""What the training and serving benchmarks share: the machine they ran on, the model they train
(converted once into a folder), a step timer for TRL's trainers and preference pairs as TRL's
rows. Torch and transformers only: `bench/gpu_check.py` imports it where nothing else is
installed.
"""

from __future__ import annotations

import os
import platform
import time
from collections.abc import Sequence
from pathlib import Path

import torch
import transformers

from app.pairs import Pair
from worker.base_models import TOKENIZER_CACHE, load_bundled, tiny_random
from worker.training.checkpoints import atomic_directory, write_pretrained


def machine() -> str:
    """The CPU (and GPU, if any), cores and versions, for a results table."""
    cpu = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        platform.processor(),
    )
    gpu = f", {torch.cuda.get_device_name()}" if torch.cuda.is_available() else ""
    versions = f"Python {platform.python_version()}, torch {torch.__version__}"
    return f"{cpu}, {os.cpu_count()} cores{gpu}, {versions}"


def base_model(data_dir: Path, *, tiny: bool = False) -> Path:
    """The bundled model (`tiny`: the tiny random one) as a model folder in `data_dir/models`,
    where a model store over `data_dir` keeps its `base` version; converted on first use (the
    bundled one in about 35 s)."""
    models = data_dir / "models"
    path = models / ("tiny-random" if tiny else "base")
    if not (path / "config.json").is_file():
        print(f"converting the {'tiny random' if tiny else 'bundled'} model into {path} ...")
        model, tokenizer = (tiny_random if tiny else load_bundled)(models / TOKENIZER_CACHE)
        with atomic_directory(path) as tmp:
            write_pretrained(tmp, model, tokenizer)
    return path


def seeded_reward_model(base: Path) -> Path:
    """A reward model beside `base` for the online trainers' benchmarks: the base with a seeded
    one-output head (arbitrary but fixed rewards), made on first use."""
    from worker.training.reward_model import RewardReport, load_reward_model, save_reward_model

    path = base.parent / "reward-online-memory"
    if not (path / "config.json").is_file():
        torch.manual_seed(0)
        model, tokenizer = load_reward_model(base, torch.device("cpu"))
        save_reward_model(model, tokenizer, RewardReport(train_pairs=0, eval_pairs=0), path)
    return path


def synchronize() -> None:
    """Wait for the GPU's queued work, if there is a GPU, so that a clock read next sees it done."""
    if torch.cuda.is_available():
        torch.cuda.synchronize()


class StepTimer(transformers.TrainerCallback):
    """Seconds of each optimiser step of a `transformers.Trainer` (TRL's trainers are)."""

    def __init__(self) -> None:
        self.seconds: list[float] = []
        self._started = 0.0

    def on_step_begin(self, args, state, control, **kwargs):
        synchronize()
        self._started = time.perf_counter()

    def on_step_end(self, args, state, control, **kwargs):
        synchronize()
        self.seconds.append(time.perf_counter() - self._started)


def preference_rows(pairs: Sequence[Pair]) -> list[dict]:
    """The pairs as TRL's conversational preference rows (explicit prompt)."""
    return [
        {
            "prompt": pair.messages,
            "chosen": [{"role": "assistant", "content": pair.chosen}],
            "rejected": [{"role": "assistant", "content": pair.rejected}],
        }
        for pair in pairs
    ]
