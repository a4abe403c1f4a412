"""A stage's trainer command (`worker.launch`): its flags give back the stage's settings; its
phase and step lines reach the stage; a failed rank fails it with the rank's error; a stop ends the
command and every process under it, those in sessions of their own and those that ignore
SIGTERM included."""

from __future__ import annotations

import sys
import textwrap
from pathlib import Path

import psutil
import pytest

from app.round_config import DPOConfig, RewardConfig
from tests.live_server import wait_for
from worker.launch import LaunchError, run_trainer, trainer_command
from worker.training.cli import parse_settings, trainer_parser


@pytest.mark.parametrize(
    "config",
    [
        RewardConfig(learning_rate=3e-4, lora=True, margin=False, device="cpu", epochs=3),
        DPOConfig(beta=0.25, nll_pairs="rewrites", max_new_tokens=7, lora=False),
    ],
)
def test_the_command_carries_every_setting(tmp_path, config):
    data, base = tmp_path / "pairs.jsonl", tmp_path / "base"
    data.write_text("{}\n")
    base.mkdir()
    inputs = {"data": data, "base": base, "out": tmp_path / "out"}
    command = trainer_command("dpo", 2, inputs, config)
    assert command[1:4] == ["-m", "torch.distributed.run", "--nproc-per-node=2"]
    argv = command[command.index("worker.training.dpo") + 1 :]
    args, parsed = parse_settings(trainer_parser("t", "t", data="d"), type(config), argv)
    assert parsed == config and args.step_lines and args.out == tmp_path / "out"


def python(script: str) -> list[str]:
    return [sys.executable, "-c", textwrap.dedent(script)]


def test_phases_and_steps_reach_the_stage_and_the_report_comes_back():
    steps, phases = [], []
    report = run_trainer(
        python("""
            import json
            print("phase " + json.dumps({"what": "reference", "done": 1, "total": 1}))
            for step in (1, 2):
                print("step " + json.dumps({"step": step, "loss": 0.5}), flush=True)
            print(json.dumps({"steps": 2}, indent=2))
        """),
        on_step=steps.append,
        should_go_on=lambda: None,
        on_phase=phases.append,
    )
    assert phases == [{"what": "reference", "done": 1, "total": 1}]
    assert steps == [{"step": 1, "loss": 0.5}, {"step": 2, "loss": 0.5}] and report == {"steps": 2}


def test_a_failed_rank_fails_the_stage_with_its_error():
    with pytest.raises(LaunchError, match=r"exit code 1:\n(.|\n)*rank 1: out of pairs"):
        run_trainer(
            python("import sys; sys.exit('rank 1: out of pairs')"),
            on_step=lambda point: None,
            should_go_on=lambda: None,
        )


class Stop(Exception):
    pass


def test_a_stop_ends_the_command_and_every_process_under_it(tmp_path: Path):
    steps: list[dict] = []

    def should_go_on() -> None:
        if steps:
            raise Stop

    with pytest.raises(Stop):
        run_trainer(
            python("""
                import json, signal, subprocess, sys, time
                signal.signal(signal.SIGTERM, signal.SIG_IGN)  # SIGKILL must follow
                sleep = [sys.executable, "-c", "import time; time.sleep(60)"]
                rank = subprocess.Popen(sleep, start_new_session=True)
                print("step " + json.dumps({"step": 1, "rank": rank.pid}), flush=True)
                time.sleep(60)
            """),
            on_step=steps.append,
            should_go_on=should_go_on,
        )
    wait_for(lambda: not alive(steps[0]["rank"]), 2, "the rank to die of its SIGKILL")


def alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False
