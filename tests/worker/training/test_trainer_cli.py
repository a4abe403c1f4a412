"""Every trainer on files, as `python -m worker.training.<trainer>`: a tiny run saves a model
that loads; a missing or malformed input ends the command with a message, not a traceback."""

from __future__ import annotations

import importlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM

from app.pairs import canonical_line
from app.pairs import read_pairs as read_snapshot
from app.round_config import DPOConfig, PPOConfig
from tests.worker.training.test_policy_optimisers import PROMPTS, dpo_pairs
from worker.training import cli
from worker.training.reward_model import load_reward_model

ROOT = Path(__file__).resolve().parents[3]
SAMPLING = ["--max-new-tokens", "4", "--steps", "1", "--prompts-per-step", "2"]
RUNS = {  # the file each trainer reads, and settings that keep its run to a few seconds
    "sft": ("demonstrations", ["--epochs", "1", "--batch-size", "3", "--lora", "--lora-rank", "4"]),
    "reward_model": ("pairs", ["--epochs", "1", "--batch-pairs", "3"]),
    "dpo": ("pairs", ["--batch-pairs", "3", "--nll-pairs", "rewrites"]),
    "ppo": ("prompts", [*SAMPLING, "--minibatch-size", "2", "--kl-target", "none"]),
    "rloo": ("prompts", [*SAMPLING, "--no-normalize-rewards"]),
}


def rows(kind: str) -> list[dict]:
    if kind == "pairs":
        return [pair.__dict__ for pair in dpo_pairs()]
    if kind == "prompts":
        return [{"messages": messages} for messages in PROMPTS]
    return [{"messages": messages, "answer": "It is a number."} for messages in PROMPTS]


def data_file(folder: Path, kind: str, *, then: str = "") -> Path:
    """`kind` rows for each of PROMPTS, one a line, and then `then`."""
    path = folder / f"{kind}.jsonl"
    path.write_bytes(b"".join(canonical_line(row) for row in rows(kind)) + then.encode())
    return path


def arguments(trainer: str, data: Path, base: Path, reward_model: Path, out: Path) -> list[str]:
    inputs = ["--data", str(data), "--base", str(base), "--out", str(out), "--device", "cpu"]
    if trainer in ("ppo", "rloo"):
        inputs += ["--reward-model", str(reward_model)]
    return [*inputs, *RUNS[trainer][1]]


def run_module(trainer: str, argv: list[str]) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", f"worker.training.{trainer}", *argv],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.mark.parametrize("trainer", RUNS)
def test_each_trainer_trains_on_files_and_saves_a_model_that_loads(
    trainer, tiny_model_dir, tiny_reward_model, tmp_path
):
    data, out = data_file(tmp_path, RUNS[trainer][0]), tmp_path / "out"
    run = run_module(trainer, arguments(trainer, data, tiny_model_dir, tiny_reward_model, out))
    assert run.returncode == 0, run.stderr
    printed = json.loads(run.stdout)
    if trainer == "reward_model":
        assert printed["train_pairs"] == len(PROMPTS)
        assert load_reward_model(out, torch.device("cpu"))[0].num_parameters() > 0
        return
    assert AutoModelForCausalLM.from_pretrained(out).num_parameters() > 0
    if trainer != "sft":
        assert printed["steps"] == printed["last"]["step"] >= 1


def test_step_lines_give_the_reference_pass_then_each_step_then_the_report(
    tiny_model_dir, tmp_path
):
    data, out = data_file(tmp_path, "pairs"), tmp_path / "out"
    argv = [*arguments("dpo", data, tiny_model_dir, tiny_model_dir, out), "--step-lines"]
    run = run_module("dpo", argv)
    assert run.returncode == 0, run.stderr
    lines = run.stdout.splitlines()
    phases = [
        json.loads(line[len(cli.PHASE_LINE) :]) for line in lines if line.startswith("phase ")
    ]
    steps = [json.loads(line[len(cli.STEP_LINE) :]) for line in lines if line.startswith("step ")]
    assert phases and phases[-1]["done"] == phases[-1]["total"]
    assert {phase["what"] for phase in phases} == {"reference log-probs"}
    assert lines[: len(phases)] == [line for line in lines if line.startswith("phase ")]
    report = json.loads("\n".join(lines[len(phases) + len(steps) :]))
    assert [step["step"] for step in steps] == list(range(1, report["steps"] + 1))


def test_a_missing_data_file_ends_the_command_with_a_message(tiny_model_dir, tmp_path):
    missing = tmp_path / "pairs.jsonl"
    argv = ["--data", str(missing), "--base", str(tiny_model_dir), "--out", str(tmp_path / "o")]
    run = run_module("dpo", argv)
    assert run.returncode != 0 and run.stdout == ""
    assert f"no such file: {missing}" in run.stderr and "Traceback" not in run.stderr


@pytest.mark.parametrize("trainer", RUNS)
def test_a_line_that_is_not_json_ends_the_command_naming_it(
    trainer, tiny_model_dir, tiny_reward_model, tmp_path
):
    data = data_file(tmp_path, RUNS[trainer][0], then='\n{"messages": [\n')
    main = importlib.import_module(f"worker.training.{trainer}").main
    with pytest.raises(SystemExit) as exit:
        main(arguments(trainer, data, tiny_model_dir, tiny_reward_model, tmp_path / "out"))
    line = len(PROMPTS) + 2  # after a blank line
    assert exit.value.code == f"error: {data}, line {line}: not JSON (Expecting value, column 15)"


@pytest.mark.parametrize(
    ("kind", "row", "reason"),
    [
        ("prompts", {"prompt": "Hi?"}, 'not a prompt ("messages" must be a list of'),
        ("pairs", {"prompt_id": 1}, "not a pair (Pair.__init__() missing 5 required"),
        ("demonstrations", ["Hi?"], "not a demonstration ("),
    ],
)
def test_a_row_of_another_shape_is_named_with_the_reason(kind, row, reason, tmp_path):
    data = tmp_path / f"{kind}.jsonl"
    data.write_text(f"\n{json.dumps(row)}\n")
    with pytest.raises(SystemExit) as exit:
        getattr(cli, f"read_{kind}")(data)
    assert exit.value.code.startswith(f"error: {data}, line 2: {reason}")


def test_pairs_read_as_the_snapshot_reader_reads_them(tmp_path):
    data = data_file(tmp_path, "pairs")
    assert cli.read_pairs(data) == read_snapshot(data) == dpo_pairs()


def test_each_setting_has_a_flag_of_its_type(tiny_model_dir, tmp_path):
    inputs = ["--data", __file__, "--base", str(tiny_model_dir), "--out", str(tmp_path / "o")]
    parser = cli.trainer_parser("worker.training.dpo", "DPO", data="pairs")
    _, dpo = cli.parse_settings(parser, DPOConfig, [*inputs, "--lora", "--nll-pairs", "rewrites"])
    assert dpo == DPOConfig(lora=True, nll_pairs="rewrites")
    parser = cli.trainer_parser("worker.training.ppo", "PPO", data="prompts", reward_model=True)
    flags = ["--kl-target", "none", "--no-normalize-rewards", "--steps", "3", "--clip", "0.1"]
    _, ppo = cli.parse_settings(
        parser, PPOConfig, [*inputs, "--reward-model", str(tiny_model_dir), *flags]
    )
    assert ppo == PPOConfig(kl_target=None, normalize_rewards=False, steps=3, clip=0.1)


def test_an_output_folder_with_something_in_it_is_refused_before_training(
    tiny_model_dir, tmp_path, capsys
):
    taken = tmp_path / "taken"
    taken.mkdir()
    (taken / "config.json").write_text("{}")
    parser = cli.trainer_parser("worker.training.sft", "SFT", data="demonstrations")
    with pytest.raises(SystemExit) as exit:
        parser.parse_args(["--data", __file__, "--base", str(tiny_model_dir), "--out", str(taken)])
    assert exit.value.code == 2 and f"already exists: {taken}" in capsys.readouterr().err
