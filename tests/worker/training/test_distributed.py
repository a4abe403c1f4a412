"""Every trainer, data parallel: `torchrun --nproc-per-node 2` over gloo on the CPU trains what
one process trains on the same global batch, and only rank 0 writes a model. PPO and RLOO share
out each step's prompts, and a seeded answer is the same tokens whatever shares its batch, so
two processes sample the answers one samples.

The tolerance, `rel=1e-4, abs=1e-5` on every point of the curve and every weight, is the one
the trainers' micro-batch tests hold one pass to: two processes change only how a step's
gradient is summed (each process's micro-batches, then the processes' sums) and how its rows
are padded together, which moves float32 results in their last few digits and no more."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM

from app.pairs import canonical_line
from tests.worker.training.test_policy_optimisers import PROMPTS, dpo_pairs, timeless
from tests.worker.training.test_reward_model import pairs_for
from worker.training.checkpoints import resolve_device
from worker.training.reward_model import load_reward_model

ROOT = Path(__file__).resolve().parents[3]
TOLERANCE = {"rel": 1e-4, "abs": 1e-5}
SMALL = ["--epochs", "2", "--micro-batch-tokens", "40"]  # a few steps, a micro-batch a pair
ONLINE = ["--steps", "2", "--prompts-per-step", "3", "--max-new-tokens", "8"]
"""Three prompts a step: one for rank 0, two for rank 1."""
RUNS = {  # each trainer's input rows and settings
    "reward_model": (
        [pair.__dict__ for pair in pairs_for(8) + pairs_for(4, split="held_out")],
        [*SMALL, "--batch-pairs", "4", "--learning-rate", "1e-3"],
    ),
    "dpo": (  # batches of 2, 2 and 1 pairs: on the last, rank 0 has no pair to train on
        [
            (replace(pair, source="rewrite") if index % 2 else pair).__dict__
            for index, pair in enumerate(dpo_pairs()[:5])
        ],
        [*SMALL, "--batch-pairs", "2", "--learning-rate", "1e-2", "--nll-coefficient", "0.5"]
        + ["--nll-pairs", "rewrites"],
    ),
    "sft": (  # batches of 3 and 2 demonstrations of different lengths
        [
            {"messages": [{"role": "user", "content": f"Count to {n}."}], "answer": "1 2 3 " * n}
            for n in range(1, 6)
        ],
        ["--epochs", "2", "--batch-size", "3", "--learning-rate", "1e-3"],
    ),
    "rloo": (
        [{"messages": messages} for messages in PROMPTS],
        [*ONLINE, "--samples-per-prompt", "2", "--learning-rate", "1e-2"],
    ),
    "ppo": (  # a minibatch of the step's 3 answers, split 1 and 2 between the ranks
        [{"messages": messages} for messages in PROMPTS],
        [*ONLINE, "--minibatch-size", "4", "--learning-rate", "1e-2"],
    ),
}
ONLINE_TRAINERS = ("rloo", "ppo")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def launch(trainer: str, argv: list[str], *, processes: int) -> subprocess.CompletedProcess:
    """`python -m worker.training.<trainer>`, under torchrun for several processes."""
    launcher = [sys.executable]
    if processes > 1:
        launcher += ["-m", "torch.distributed.run", f"--nproc-per-node={processes}"]
        launcher += [f"--master-port={free_port()}"]
    return subprocess.run(
        [*launcher, "-m", f"worker.training.{trainer}", *argv, "--device", "cpu"],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"},
        capture_output=True,
        text=True,
        timeout=120,
    )


def train(trainer: str, inputs: list[str], folder: Path, *, processes: int) -> dict:
    """Run `trainer` on its rows in `processes` processes from `inputs` (`--base ...`),
    writing `folder / "out"`; what it printed."""
    rows, settings = RUNS[trainer]
    folder.mkdir()
    data = folder.parent / f"{trainer}-{folder.name}.jsonl"
    data.write_bytes(b"".join(map(canonical_line, rows)))
    inputs = [*inputs, "--data", str(data), "--out", str(folder / "out")]
    run = launch(trainer, [*inputs, *settings], processes=processes)
    assert run.returncode == 0, run.stderr
    assert [path.name for path in folder.iterdir()] == ["out"]  # one model, no leftovers
    return json.loads(run.stdout)  # one report: only rank 0 prints


def weights(trainer: str, folder: Path) -> dict[str, torch.Tensor]:
    if trainer == "reward_model":
        model = load_reward_model(folder, torch.device("cpu"))[0]
    else:
        model = AutoModelForCausalLM.from_pretrained(folder)
    return model.state_dict()


@pytest.mark.parametrize("trainer", RUNS)
def test_two_processes_train_what_one_does(trainer, tiny_model_dir, tiny_reward_model, tmp_path):
    inputs = ["--base", str(tiny_model_dir)]
    if trainer in ONLINE_TRAINERS:
        inputs += ["--reward-model", str(tiny_reward_model)]
    alone = train(trainer, inputs, tmp_path / "one", processes=1)
    together = train(trainer, inputs, tmp_path / "two", processes=2)
    curve, expected = timeless(together["curve"]), timeless(alone["curve"])
    assert len(curve) == len(expected) >= 2
    for point, one in zip(curve, expected, strict=True):
        assert point == pytest.approx(one, **TOLERANCE)
    trained, reference = (
        weights(trainer, tmp_path / "two/out"),
        weights(trainer, tmp_path / "one/out"),
    )
    # Adam makes a near-0 gradient's noise a step: the online trainers' micro-batch tests allow
    # their weights 1e-4 too.
    atol = 1e-4 if trainer in ONLINE_TRAINERS else TOLERANCE["abs"]
    for name, value in trained.items():
        torch.testing.assert_close(value, reference[name], rtol=TOLERANCE["rel"], atol=atol)


def test_a_step_with_fewer_prompts_than_processes_is_refused_before_training(
    tiny_model_dir, tiny_reward_model, tmp_path
):
    data = tmp_path / "prompts.jsonl"
    data.write_text('{"messages": [{"role": "user", "content": "Hi?"}]}\n')
    argv = ["--data", str(data), "--base", str(tiny_model_dir), "--out", str(tmp_path / "out")]
    argv += ["--reward-model", str(tiny_reward_model), "--prompts-per-step", "1"]
    run = launch("rloo", argv, processes=2)
    assert run.returncode != 0 and not (tmp_path / "out").exists()
    message = "error: --prompts-per-step 1 is fewer than the 2 processes training"
    assert message in run.stderr


@pytest.mark.parametrize(
    ("environment", "setting", "device"),
    [
        ({"WORLD_SIZE": "2", "LOCAL_RANK": "1"}, "cuda", "cuda:1"),
        ({"WORLD_SIZE": "2", "LOCAL_RANK": "1"}, "cuda:0", "cuda:0"),
        ({"WORLD_SIZE": "2", "LOCAL_RANK": "1"}, "cpu", "cpu"),
        ({"WORLD_SIZE": "1", "LOCAL_RANK": "0"}, "cuda", "cuda"),
    ],
)
def test_each_process_training_together_on_cuda_gets_its_own_gpu(
    monkeypatch, environment, setting, device
):
    for name, value in environment.items():
        monkeypatch.setenv(name, value)
    assert resolve_device(setting) == torch.device(device)
