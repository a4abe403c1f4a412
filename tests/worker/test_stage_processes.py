"""A round's training stages (SFT, reward model, DPO or RLOO) trained by two processes under
torchrun on the CPU (`ALIGNLOOP_TRAIN_PROCESSES=2`): rank 0 alone writes each model, the
reward model registered by the stage; each step becomes one curve point; a cancel, or a rank
that dies, ends torchrun and every rank, and the round (cancelled, or failed with the cause)."""

from __future__ import annotations

from pathlib import Path

import psutil
import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session

from app.domain.rounds import ACTIVE
from app.models import ModelVersion, RoundMetric, RoundStage, RunStatus
from tests.live_server import wait_for
from tests.worker.test_isolation import (
    LONG_POLICY,
    SHORT_ROUND,
    Embedded,
    embedded_run,
)

ROUNDS = {
    "dpo": SHORT_ROUND,
    "rloo": {**SHORT_ROUND, "policy": {"steps": 2, "prompts_per_step": 4, "max_new_tokens": 8}},
}


def trainer_processes(data_dir: Path) -> list[psutil.Process]:
    """torchrun and the ranks training into `data_dir`."""
    found = []
    for process in psutil.process_iter(["cmdline"]):
        command = process.info["cmdline"] or []
        trainer = any(part.startswith("worker.training.") for part in command)
        if trainer and str(data_dir) in " ".join(command):
            found.append(process)
    return found


def written(data_dir: Path, name: str) -> list[str]:
    """The store's folders of model `name`: the model's, and any temporary one of a writer."""
    folders = (data_dir / "models").iterdir()
    return [path.name for path in folders if path.name == name or path.name.startswith(f".{name}.")]


def curve_steps(db: Session, round_id: int, stage: RoundStage, curve: str = "loss") -> list[int]:
    """The steps of the stage's curve of `curve`, in order: each once when rank 0 alone
    reports."""
    query = select(RoundMetric.step).where(
        RoundMetric.round_id == round_id, RoundMetric.stage == stage, RoundMetric.name == curve
    )
    return sorted(db.scalars(query))


def wait_for_dpo_steps(embedded: Embedded, round_id: int) -> None:
    def stepping() -> bool:
        round_ = embedded.round(round_id)
        assert round_.status in (RunStatus.QUEUED, RunStatus.RUNNING), round_.error
        return round_.stage == RoundStage.POLICY and round_.progress > 0

    wait_for(stepping, 120, "a DPO step")


def test_two_processes_train_a_rounds_models_and_a_cancel_ends_every_rank(tmp_path, model_settings):
    data_dir = model_settings.data_dir
    with embedded_run(tmp_path, model_settings, {"train_processes": "2"}) as embedded:
        round_id = embedded.start_round(LONG_POLICY)

        wait_for_dpo_steps(embedded, round_id)
        assert len(trainer_processes(data_dir)) == 3  # torchrun and its two ranks
        name = f"reward-r{round_id}"
        with embedded.factory() as db:
            version = db.scalar(select(ModelVersion).where(ModelVersion.name == name))
            steps = curve_steps(db, round_id, RoundStage.REWARD_MODEL)
        assert version.path == name and version.metrics["eval_accuracy"] is not None
        assert steps == list(range(1, version.metrics["steps"] + 1))
        assert written(data_dir, name) == [name]
        ended = embedded.cancel(round_id)
        assert ended.status == RunStatus.CANCELLED, ended.error
        assert wait_for(lambda: not trainer_processes(data_dir), 5, "the ranks to end")
        assert not (data_dir / "models" / f"round-{round_id}").exists()


@pytest.mark.long  # about 50 s each; README lists the long checks
@pytest.mark.parametrize("algorithm", ["dpo", "rloo"])
def test_a_round_trained_by_two_processes_ends_in_one_sft_model_and_one_policy(
    algorithm, tmp_path, model_settings
):
    data_dir = model_settings.data_dir
    with embedded_run(tmp_path, model_settings, {"train_processes": "2"}) as embedded:
        round_id = embedded.start_round(ROUNDS[algorithm], algorithm=algorithm)
        done = wait_for(
            lambda: (r := embedded.round(round_id)).status not in ACTIVE and r, 300, "the round"
        )
        with embedded.factory() as db:
            sft_steps = curve_steps(db, round_id, RoundStage.SFT)
            policy_curve = "loss" if algorithm == "dpo" else "reward"
            policy_steps = curve_steps(db, round_id, RoundStage.POLICY, policy_curve)
    assert done.status == RunStatus.SUCCEEDED, done.error
    sft, policy = done.metrics["sft"], done.metrics["policy"]
    assert sft["examples"] > 0 and written(data_dir, sft["path"]) == [sft["path"]]
    assert sft_steps == list(range(1, len(sft_steps) + 1))
    assert policy["path"] == f"round-{round_id}" and written(data_dir, policy["path"]) == [
        policy["path"]
    ]
    assert policy_steps == list(range(1, policy["steps"] + 1))


@pytest.mark.long  # about 40 s; README lists the long checks
def test_a_rank_that_dies_fails_the_stage_and_ends_the_others(tmp_path, model_settings):
    data_dir = model_settings.data_dir
    with embedded_run(tmp_path, model_settings, {"train_processes": "2"}) as embedded:
        round_id = embedded.start_round(LONG_POLICY)
        wait_for_dpo_steps(embedded, round_id)
        ranks = [
            process
            for process in trainer_processes(data_dir)
            if "torch.distributed.run" not in process.cmdline()
        ]
        assert len(ranks) == 2
        ranks[1].kill()
        failed = wait_for(
            lambda: (r := embedded.round(round_id)).status == RunStatus.FAILED and r, 30, "failure"
        )
        assert failed.error.startswith("policy: ") and "exit code" in failed.error, failed.error
        wait_for(lambda: not trainer_processes(data_dir), 5, "the other processes to end")
