"""A training round's stages, run on a worker: snapshot → SFT → reward model → policy →
evaluate → register.

Each stage is one Celery task in the round's chain (`app.domain.rounds.send`). A stage runs only
while its worker holds the round's lease in the database (renewed by a heartbeat thread); it
writes its progress and curve points as it goes, and on success records its results on the
round and moves it to the next stage. A cancel, or a lost lease, stops a stage at its next
training step. Models are written into the store atomically; the new policy becomes a model
version only in the last stage, so a round that dies never leaves a registered half-model.
"""

from __future__ import annotations

import logging
import math
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import torch
from sqlalchemy import select

from app.db import session_scope
from app.domain import jobs, model_registry, rounds
from app.domain.leaderboard import wilson_interval
from app.domain.preferences import build_snapshot, collect_demonstrations, write_snapshot
from app.domain.quality import snapshot_weights
from app.models import (
    Algorithm,
    Job,
    ModelKind,
    ModelVersion,
    Prompt,
    PromptSplit,
    Round,
    RoundStage,
    RunStatus,
)
from app.pairs import HELD_OUT, Pair, canonical_line, read_pairs
from app.round_config import PromotionConfig, RoundConfig
from worker.context import STOP_REQUESTED, WorkerContext
from worker.fitting import fit_reward_model, fit_sft, register_reward_model, reward_model_steps
from worker.job_runner import Progress, keep_lease, lease_owner
from worker.launch import run_trainer, train_processes, trainer_command
from worker.model_store import ModelStore
from worker.serving.engine import GenerationEngine, Sampling
from worker.training.checkpoints import release_memory
from worker.training.optimisation import planned_steps
from worker.training.policy import Rollout, answer_logprobs, sample_answers
from worker.training.reward_model import RewardReport, RewardScorer
from worker.training.sft import SFTReport

log = logging.getLogger(__name__)

STEP_LOG_INTERVAL_S = 10.0
LOGGED_SIGNALS = ("loss", "policy_loss", "reward", "kl", "accuracy", "reward_margin")
"""The curve values that a step's log line shows."""
SAMPLES_SHOWN = 3


class StageStopped(Exception):
    """The stage lost its lease or was cancelled; it stops without recording anything."""


class RoundError(Exception):
    """A stage cannot go on, for a reason the admin should read."""


@dataclass
class Stage:
    """What a running stage knows and how it reports."""

    context: WorkerContext
    round_id: int
    stage: RoundStage
    algorithm: Algorithm
    config: RoundConfig
    stored_config: dict[str, dict[str, Any]]
    """`Round.config` as stored, which the snapshot stage adds its cut-offs to."""
    metrics: dict[str, Any]
    parent: ModelVersion | None
    snapshot_sha256: str | None
    progress: Progress = field(default_factory=Progress)
    last_step_logged: float = -math.inf

    @cached_property
    def store(self) -> ModelStore:
        return ModelStore(self.context.settings)

    @property
    def device(self) -> str:
        return self.context.settings.device

    @property
    def snapshot_file(self) -> Path:
        return self.context.settings.snapshots_dir / f"{self.snapshot_sha256}.jsonl"

    def check(self) -> None:
        """Raises `StageStopped` once the lease is gone or the supervisor asked the process
        to stop (a cancel)."""
        if self.progress.lost.is_set() or STOP_REQUESTED.is_set():
            raise StageStopped

    def report(self, fraction: float, detail: str | None = None) -> None:
        """Progress within the stage; raises `StageStopped` as `check` does."""
        self.check()
        self.progress(min(1.0, fraction), detail)

    def launched(
        self, trainer: str, processes: int, inputs: dict[str, Path], total: int, config: Any
    ) -> Any:
        """The report of `python -m worker.training.<trainer>` run in `processes` processes
        with `inputs` and the settings `config`, its steps becoming curve points."""
        return run_trainer(
            trainer_command(trainer, processes, inputs, config),
            on_step=lambda point: self.curve_point(point["step"], total, point),
            should_go_on=self.check,
            on_phase=self.phase_point,
        )

    def phase_point(self, point: dict[str, Any]) -> None:
        """A point of a phase before the steps (`{"what", "done", "total"}`), at 0 progress."""
        self.report(0.0, f"{point['what']}, batch {point['done']} of {point['total']}")

    def curve_point(self, step: int, total: int, values: dict[str, Any]) -> None:
        """One training step: its progress, its curve points, and (at most every
        `STEP_LOG_INTERVAL_S`, and for the last step) a line in the round's log."""
        self.report(step / max(1, total), f"step {step} of {total}")
        with session_scope(self.context.session_factory) as db:
            rounds.record_points(
                db, round_id=self.round_id, stage=self.stage, step=step, values=values
            )
        now = time.monotonic()
        if now - self.last_step_logged >= STEP_LOG_INTERVAL_S or step >= total:
            self.last_step_logged = now
            shown = " ".join(
                f"{name}={value:.4g}"
                for name, value in values.items()
                if name in LOGGED_SIGNALS and isinstance(value, int | float)
            )
            log.info("step %d of %d: %s", step, total, shown or "done")

    def policy_path(self) -> str:
        """The store folder the policy stage starts from: the SFT result, else the parent."""
        return self.metrics.get("sft", {}).get("path") or self.parent.path


def run_stage(context: WorkerContext, round_id: int, stage_name: str) -> str:
    """Claim `stage_name` of round `round_id` and run it; returns what happened."""
    stage = RoundStage(stage_name)
    worker = lease_owner()
    with session_scope(context.session_factory) as db:
        round_ = rounds.claim_stage(db, round_id=round_id, stage=stage, worker=worker)
        if round_ is None:
            log.info("round %s: stage %s is not claimable here", round_id, stage_name)
            return "skipped"
        running = Stage(
            context=context,
            round_id=round_id,
            stage=stage,
            algorithm=round_.algorithm,
            config=round_.parsed_config(device=context.settings.device, policy_seed=round_id),
            stored_config=round_.config,
            metrics=dict(round_.metrics),
            parent=db.get(ModelVersion, round_.parent_version_id)
            if round_.parent_version_id
            else None,
            snapshot_sha256=round_.snapshot_sha256,
        )
    started = time.perf_counter()
    try:
        with (
            keep_lease(
                context, rounds.renew_lease, running.progress, round_id=round_id, worker=worker
            ),
            RoundLogHandler.attached(context, round_id, stage),
            _releasing_memory(),
        ):
            fields = STAGES[stage](running)
    except StageStopped:
        return _stopped(context, round_id)
    except Exception as exc:
        log.exception("round %s failed in stage %s", round_id, stage_name)
        detail = str(exc) if isinstance(exc, RoundError) else f"{type(exc).__name__}: {exc}"
        with session_scope(context.session_factory) as db:
            rounds.fail_round(db, round_id=round_id, error=f"{stage_name}: {detail}")
        return "failed"
    with session_scope(context.session_factory) as db:
        results = fields.get("metrics", {}).get(SECTIONS[stage], {})
        rounds.add_log(db, round_id=round_id, stage=stage, message=_summary(results))
        done = rounds.complete_stage(
            db,
            round_id=round_id,
            worker=worker,
            seconds=time.perf_counter() - started,
            **fields,
        )
    return "done" if done is not None else _stopped(context, round_id)


@contextmanager
def _releasing_memory() -> Iterator[None]:
    """A stage's models are freed when it ends, however it ends."""
    try:
        yield
    finally:
        release_memory()


class RoundLogHandler(logging.Handler):
    """Copies what the worker's modules log while a stage runs (at the configured log level),
    in the stage's own thread, into the round's log, so that admins read it on the round page
    without access to the worker."""

    def __init__(self, context: WorkerContext, round_id: int, stage: RoundStage) -> None:
        super().__init__(level=logging.INFO)
        self.context, self.round_id, self.stage = context, round_id, stage
        self.thread = threading.get_ident()
        self.setFormatter(logging.Formatter("%(message)s"))

    def filter(self, record: logging.LogRecord) -> bool:
        return record.thread == self.thread

    def emit(self, record: logging.LogRecord) -> None:
        try:
            with session_scope(self.context.session_factory) as db:
                rounds.add_log(
                    db,
                    round_id=self.round_id,
                    stage=self.stage,
                    message=self.format(record),
                    level=record.levelname,
                )
        except Exception:  # a log line must never take the stage down with it
            self.handleError(record)

    @classmethod
    @contextmanager
    def attached(cls, context: WorkerContext, round_id: int, stage: RoundStage) -> Iterator[None]:
        handler = cls(context, round_id, stage)
        package = logging.getLogger("worker")
        package.addHandler(handler)
        try:
            yield
        finally:
            package.removeHandler(handler)


def _summary(results: dict[str, Any]) -> str:
    """The stage's plain results on one line (`eval_accuracy=0.91 version=reward-r3`)."""
    shown = []
    for name, value in results.items():
        if isinstance(value, float):
            shown.append(f"{name}={value:.4g}")
        elif isinstance(value, int | str | bool):
            shown.append(f"{name}={value}")
    return "results: " + (" ".join(shown) or "none")


def _stopped(context: WorkerContext, round_id: int) -> str:
    with session_scope(context.session_factory) as db:
        round_ = db.get(Round, round_id)
        if round_.cancel_requested:
            rounds.fail_round(
                db, round_id=round_id, error=rounds.CANCELLED_BY_ADMIN, status=RunStatus.CANCELLED
            )
            return "cancelled"
    return "lost"


def _with_metrics(stage: Stage, section: str, values: dict[str, Any]) -> dict[str, Any]:
    return {"metrics": {**stage.metrics, section: values}}


# --- the stages ----------------------------------------------------------------------------------


def snapshot_stage(stage: Stage) -> dict[str, Any]:
    """Freeze the judgements so far; the round trains on exactly this file.

    With `train_pairs: new`, the training pairs are those judged since the round that trained
    the current policy (held-out pairs still come from every judgement)."""
    options = stage.config.snapshot
    with session_scope(stage.context.session_factory) as db:
        parent = model_registry.current_policy(db)
        if parent is None:
            raise RoundError("there is no policy yet: run `alignloop models pull-default`")
        previous, train_after = rounds.training_cutoff(db, parent, options)
        weights = snapshot_weights(db, stage.context.settings)
        snapshot = build_snapshot(
            db,
            ties=options.ties,
            rater_weights=weights,
            train_after_judgement_id=train_after,
        )
    train, held_out = snapshot.split("train"), snapshot.split(HELD_OUT)
    if not train and previous is not None:
        raise RoundError(
            f"no judgements since round {previous.id} trained {parent.name}: rate the new "
            "candidates first, or set the snapshot's train_pairs to all"
        )
    if not train:
        raise RoundError("no judgements to train on yet: rate some tasks first")
    if message := rounds.too_few_pairs(len(train), options, previous):
        raise RoundError(message)
    write_snapshot(snapshot, stage.context.settings.snapshots_dir)
    cutoffs = {"up_to_judgement_id": snapshot.up_to_judgement_id}
    if train_after:
        cutoffs["train_after_judgement_id"] = train_after
    return {
        "snapshot_sha256": snapshot.sha256,
        "judgement_count": snapshot.judgement_count,
        "rater_count": snapshot.rater_count,
        "parent_version_id": parent.id,
        "config": {
            **stage.stored_config,
            "snapshot": {**stage.stored_config["snapshot"], **cutoffs},
        },
        **_with_metrics(
            stage,
            "snapshot",
            {"train_pairs": len(train), "eval_pairs": len(held_out), "parent": parent.name},
        ),
    }


def sft_stage(stage: Stage) -> dict[str, Any]:
    """Fine-tune on the raters' own answers, when enough new ones have come in: on the new
    ones when the round trains on new pairs only (the parent has learnt the others)."""
    config = stage.config.sft
    minimum = max(1, config.min_demonstrations)
    demonstrations, fresh = _demonstrations(stage)
    if fresh < minimum:
        reason = f"{fresh} new demonstrations, fewer than {minimum}"
        return _with_metrics(stage, "sft", {"skipped": reason})
    name = f"round-{stage.round_id}-sft"
    processes = train_processes(stage.context.settings)
    if processes > 1:
        report = _sft_in_processes(stage, processes, demonstrations, name)
    else:
        report = fit_sft(
            stage.context,
            demonstrations=demonstrations,
            base=stage.parent,
            config=config,
            name=name,
            report=stage.curve_point,
        )
    return _with_metrics(
        stage,
        "sft",
        {
            "path": name,
            "examples": report.examples,
            "final_loss": report.final_loss,
            "up_to_response_id": max(item["response_id"] for item in demonstrations),
        },
    )


def _sft_in_processes(
    stage: Stage, processes: int, demonstrations: list[dict], name: str
) -> SFTReport:
    """`fit_sft`, the training done by `processes` processes (`worker.launch`)."""
    config = stage.config.sft
    rows = [{"messages": item["messages"], "answer": item["answer"]} for item in demonstrations]
    total = planned_steps(config.epochs, len(rows), config.batch_size)
    with rows_file(rows) as data:
        inputs = {"data": data, "base": stage.store.path_for(stage.parent.path)}
        inputs["out"] = stage.store.path_for(name)
        report = stage.launched("sft", processes, inputs, total, config.trainer_settings())
    return SFTReport(**report)


def _demonstrations(stage: Stage) -> tuple[list[dict], int]:
    """The answers people wrote that the stage fine-tunes on (only those no earlier round
    used, when the round trains on new pairs only), and how many of them are new."""
    with session_scope(stage.context.session_factory) as db:
        demonstrations = collect_demonstrations(db)
        used = _demonstrations_used(db)
    fresh = [item for item in demonstrations if item["response_id"] > used]
    new_only = stage.config.snapshot.train_after_judgement_id
    return (fresh if new_only else demonstrations), len(fresh)


def _demonstrations_used(db) -> int:
    """The newest demonstration an earlier successful round fine-tuned on (0 if none)."""
    finished = db.scalars(select(Round.metrics).where(Round.status == RunStatus.SUCCEEDED))
    return max(
        (metrics.get("sft", {}).get("up_to_response_id", 0) for metrics in finished), default=0
    )


def reward_model_stage(stage: Stage) -> dict[str, Any]:
    """Train and register the round's reward model on the snapshot's pairs: from the parent
    round's reward model when the round trains on new pairs only (it goes on learning), else
    a fresh head on the parent policy."""
    pairs = read_pairs(stage.snapshot_file)
    start = _reward_model_start(stage)
    name = f"reward-r{stage.round_id}"
    processes = train_processes(stage.context.settings)
    if processes > 1:
        version, report = _reward_model_in_processes(stage, processes, pairs, start, name)
    else:
        version, report = fit_reward_model(
            stage.context,
            pairs=pairs,
            base=start,
            config=stage.config.reward_model,
            name=name,
            snapshot_sha256=stage.snapshot_sha256,
            round_id=stage.round_id,
            report=stage.curve_point,
        )
    return _with_metrics(
        stage,
        "reward_model",
        {
            "version": version.name,
            "path": version.path,
            "started_from": start.name,
            "eval_accuracy": report.eval_accuracy,
            "eval_pairs": report.eval_pairs,
            "calibration_error": report.calibration_error,
            "accuracy_by_agreement": report.accuracy_by_agreement,
        },
    )


def _reward_model_in_processes(
    stage: Stage, processes: int, pairs: list[Pair], start: ModelVersion, name: str
) -> tuple[ModelVersion, RewardReport]:
    """`fit_reward_model`, the training done by `processes` processes (`worker.launch`)."""
    config = stage.config.reward_model
    inputs = {
        "data": stage.snapshot_file,
        "base": stage.store.path_for(start.path),
        "out": stage.store.path_for(name),
    }
    total = reward_model_steps(pairs, config)
    trained = RewardReport(**stage.launched("reward_model", processes, inputs, total, config))
    version = register_reward_model(
        stage.context,
        base=start,
        config=config,
        name=name,
        trained=trained,
        snapshot_sha256=stage.snapshot_sha256,
        round_id=stage.round_id,
    )
    return version, trained


def _reward_model_start(stage: Stage) -> ModelVersion:
    """The parent round's reward model when this round trains on new pairs only, else the
    parent policy (which gets a fresh head)."""
    if not stage.config.snapshot.train_after_judgement_id:
        return stage.parent
    with session_scope(stage.context.session_factory) as db:
        previous = rounds.parent_round(db, stage.parent)
        name = previous.metrics.get("reward_model", {}).get("version") if previous else None
        reward_model = model_registry.get_model_version(db, name=name) if name else None
        return reward_model or stage.parent


def policy_stage(stage: Stage) -> dict[str, Any]:
    """Optimise the policy with the round's algorithm; save it, unregistered, to the store:
    in the stage's process, or in several (`worker.launch`)."""
    from worker.training.dpo import strict_training_pairs

    config = stage.config.policy
    inputs = {"base": stage.store.path_for(stage.policy_path())}
    if stage.algorithm == Algorithm.DPO:
        pairs = read_pairs(stage.snapshot_file)
        total = planned_steps(config.epochs, len(strict_training_pairs(pairs)), config.batch_pairs)
        training_data: list = pairs
    else:
        inputs["reward_model"] = stage.store.path_for(stage.metrics["reward_model"]["path"])
        total = config.steps
        training_data = _train_prompts(stage)
    name = f"round-{stage.round_id}"
    processes = train_processes(stage.context.settings)
    if processes > 1:
        inputs["out"] = stage.store.path_for(name)
        report = _policy_in_processes(stage, processes, inputs, training_data, total)
        steps, last = report["steps"], report["last"]
    else:
        policy, curve = _train_policy(stage, inputs, training_data, total)
        policy.save(stage.store.path_for(name))
        steps, last = len(curve), curve[-1]
    return _with_metrics(stage, "policy", {"path": name, "steps": steps, "last": last})


def _policy_in_processes(
    stage: Stage, processes: int, inputs: dict[str, Path], training_data: list, total: int
) -> dict[str, Any]:
    """The policy stage's training by `processes` processes: DPO reads the snapshot file, PPO
    and RLOO the training prompts, written out for them; the trainer's report."""
    if stage.algorithm == Algorithm.DPO:
        data = nullcontext(stage.snapshot_file)
    else:
        data = rows_file({"messages": messages} for messages in training_data)
    with data as path:
        inputs = {**inputs, "data": path}
        return stage.launched(stage.algorithm.value, processes, inputs, total, stage.config.policy)


def _train_policy(
    stage: Stage, inputs: dict[str, Path], training_data: list, total: int
) -> tuple[Any, list[dict]]:
    """The policy stage's training in the stage's process, on the snapshot's pairs (DPO) or
    the training prompts (PPO, RLOO): the policy and its curve."""
    from worker.training.dpo import REFERENCE_PASS, train_dpo
    from worker.training.ppo import train_ppo
    from worker.training.rloo import train_rloo

    config = stage.config.policy
    on_step = lambda point: stage.curve_point(point["step"], total, point)  # noqa: E731
    if stage.algorithm == Algorithm.DPO:

        def reference_pass(done: int, batches: int) -> None:
            stage.phase_point({"what": REFERENCE_PASS, "done": done, "total": batches})

        return train_dpo(
            training_data, inputs["base"], config, on_step=on_step, on_reference=reference_pass
        )
    train = train_ppo if stage.algorithm == Algorithm.PPO else train_rloo
    return train(training_data, inputs["base"], inputs["reward_model"], config, on_step=on_step)


@contextmanager
def rows_file(rows: Iterable[dict[str, Any]]) -> Iterator[Path]:
    """`rows` in a JSON Lines file for a trainer to read, deleted afterwards."""
    with tempfile.TemporaryDirectory(prefix="alignloop-trainer-") as folder:
        path = Path(folder) / "rows.jsonl"
        path.write_bytes(b"".join(map(canonical_line, rows)))
        yield path


def _train_prompts(stage: Stage) -> list[list[dict]]:
    with session_scope(stage.context.session_factory) as db:
        query = select(Prompt.messages).where(Prompt.split == PromptSplit.TRAIN)
        prompts = list(db.scalars(query.order_by(Prompt.id)))
    if not prompts:
        raise RoundError("no training prompts: import some with `alignloop prompts import`")
    return prompts


def _evaluation_prompts(stage: Stage, *, limit: int) -> tuple[list[list[dict]], str]:
    """The eval prompts (imported with `--split eval`); without any, the prompts of the
    snapshot's held-out pairs, which no stage trained on. Returns them and where they came
    from, in words."""
    with session_scope(stage.context.session_factory) as db:
        query = select(Prompt.messages).where(Prompt.split == PromptSplit.EVAL)
        prompts = list(db.scalars(query.order_by(Prompt.id).limit(limit)))
    if prompts:
        return prompts, "eval prompts"
    pairs = read_pairs(stage.snapshot_file)
    held_out = {pair.prompt_id: pair.messages for pair in pairs if pair.split == HELD_OUT}
    prompts = [held_out[prompt_id] for prompt_id in sorted(held_out)[:limit]]
    if not prompts:
        raise RoundError(
            "nothing to evaluate on: no eval prompts and no held-out judgements; import "
            "some with `alignloop prompts import --split eval`"
        )
    log.info("no eval prompts: evaluating on %d held-out prompts of the snapshot", len(prompts))
    return prompts, "held-out prompts of the snapshot (no eval prompts)"


def evaluate_stage(stage: Stage) -> dict[str, Any]:
    """The new policy against its parent on held-out prompts, judged by the reward model.

    Both answer every prompt `samples` times with the served sampling settings (seeded, so a
    rerun gives the same figures). The win rate counts ties as half and carries a 95% Wilson
    interval over its n comparisons; KL(new || parent) is the mean summed log-ratio on the new
    policy's own answers. One model is in memory at a time."""
    options = stage.config.evaluation
    prompts, prompt_source = _evaluation_prompts(stage, limit=options.prompts)
    samples = options.samples
    sampling = Sampling(
        max_new_tokens=options.max_new_tokens,
        temperature=options.temperature,
        top_p=options.top_p,
        seed=stage.round_id if options.seed is None else options.seed,
    )
    new, new_logprobs = _answers_and_logprobs(
        stage, stage.metrics["policy"]["path"], prompts, sampling, samples, part=(0.0, "new")
    )
    old, parent_logprobs = _answers_and_logprobs(
        stage, stage.parent.path, prompts, sampling, samples, score=new, part=(0.45, "parent")
    )
    stage.report(0.9, "scoring the answers with the reward model")
    kl = ((new_logprobs - parent_logprobs) * new.response_mask).sum(1).mean().item()
    conversations = [prompts[index] for index in new.conversation]
    scorer = RewardScorer(
        stage.store.path_for(stage.metrics["reward_model"]["path"]), stage.store.device
    )
    new_scores = scorer.score(conversations, new.texts)
    old_scores = scorer.score(conversations, old.texts)
    del scorer
    wins = (new_scores > old_scores).float() + 0.5 * (new_scores == old_scores).float()
    low, high = wilson_interval(wins.sum().item(), len(wins))
    evaluation = {
        "prompts": len(prompts),
        "prompt_source": prompt_source,
        "n": len(wins),
        "reward": new_scores.mean().item(),
        "parent_reward": old_scores.mean().item(),
        "win_rate": wins.mean().item(),
        "win_rate_low": low,
        "win_rate_high": high,
        "kl_to_parent": kl,
        "response_length": new.response_mask.sum(1).float().mean().item(),
        "parent_response_length": old.response_mask.sum(1).float().mean().item(),
        "samples": [
            {"prompt": prompts[index][-1]["content"], "new": answer, "parent": parent_answer}
            for index, answer, parent_answer in list(
                zip(new.conversation, new.texts, old.texts, strict=True)
            )[: SAMPLES_SHOWN * samples : samples]
        ],
    }
    return _with_metrics(stage, "evaluation", evaluation)


def _answers_and_logprobs(
    stage: Stage,
    path: str,
    prompts: list,
    sampling: Sampling,
    samples: int,
    *,
    part: tuple[float, str],
    score: Rollout | None = None,
) -> tuple[Rollout, torch.Tensor]:
    """The answers of the model stored at `path`, and its token log-probs `(B, L)` of the
    answers in `score` (default: its own); the model is freed before this returns. `part`:
    where the stage's progress starts, and whose answers these are, for the progress line."""
    start, whose = part

    def report(done: int, total: int) -> None:
        stage.report(start + 0.45 * done / total, f"{done} of {total} answers of the {whose}")

    model, tokenizer = stage.store.load(path, stage.store.device)
    try:
        engine = GenerationEngine(model, tokenizer, name="evaluation", max_batch_size=64)
        try:
            answers = sample_answers(
                engine,
                [engine.encode_chat(prompt) for prompt in prompts],
                sampling,
                samples=samples,
                on_answer=report,
            )
        finally:
            engine.close(drain=False)
        with torch.no_grad():
            logprobs, _ = answer_logprobs(model, score if score is not None else answers)
        return answers, logprobs
    finally:
        del model
        release_memory()


def register_stage(stage: Stage) -> dict[str, Any]:
    """Register the new policy; promote it when the evaluation passes the configured gates;
    queue blind A/B tasks (new against parent) for the raters (the supervisor sends them)."""
    gates = stage.config.promotion
    evaluation = stage.metrics.get("evaluation", {})
    with session_scope(stage.context.session_factory) as db:
        round_ = db.get(Round, stage.round_id)
        version = stage.store.register(
            db,
            name=f"round-{stage.round_id}",
            kind=ModelKind.POLICY,
            path=stage.metrics["policy"]["path"],
            parent=db.get(ModelVersion, stage.parent.id),
            config={
                "algorithm": stage.algorithm.value,
                "preset": round_.preset,
                **stage.stored_config,
            },
            metrics={"evaluation": evaluation, "policy": stage.metrics["policy"]},
            snapshot_sha256=stage.snapshot_sha256,
            rater_count=round_.rater_count,
            round_id=stage.round_id,
        )
        passes = gates.auto and _passes(evaluation, gates)
        awaiting_raters = passes and gates.min_human_win_rate is not None
        promoted = passes and not awaiting_raters
        if promoted:
            model_registry.promote(db, version_id=version.id)
        ab_job = _ab_tasks(db, stage, version)
    return _with_metrics(
        stage,
        "register",
        {
            "version": version.name,
            "promoted": promoted,
            "awaiting_raters": awaiting_raters,
            "ab_job": ab_job.id if ab_job else None,
        },
    )


def _passes(evaluation: dict[str, Any], gates: PromotionConfig) -> bool:
    win_rate_ok = evaluation.get("win_rate", 0.0) >= gates.min_win_rate
    max_kl = gates.max_kl
    return win_rate_ok and (max_kl is None or evaluation.get("kl_to_parent", 0.0) <= max_kl)


def _ab_tasks(db, stage: Stage, version: ModelVersion) -> Job | None:
    """A candidate-generation job that pairs the new policy with its parent, blind."""
    count = stage.config.evaluation.ab_prompts
    if not count:
        return None
    prompt_ids = list(
        db.scalars(
            select(Prompt.id)
            .where(Prompt.split == PromptSplit.EVAL)
            .order_by(Prompt.id)
            .limit(count)
        )
    )
    if not prompt_ids:
        return None
    return jobs.create_job(
        db,
        kind=jobs.GENERATE_CANDIDATES,
        params={
            "prompt_ids": prompt_ids,
            "per_prompt": 2,
            "overlap": stage.context.settings.default_overlap,
            "model_versions": [version.name, stage.parent.name],
            "sampling": {"max_new_tokens": stage.config.evaluation.max_new_tokens},
        },
        created_by=None,
    )


STAGES: dict[RoundStage, Callable[[Stage], dict[str, Any]]] = {
    RoundStage.SNAPSHOT: snapshot_stage,
    RoundStage.SFT: sft_stage,
    RoundStage.REWARD_MODEL: reward_model_stage,
    RoundStage.POLICY: policy_stage,
    RoundStage.EVALUATE: evaluate_stage,
    RoundStage.REGISTER: register_stage,
}
SECTIONS = {stage: stage.value for stage in STAGES} | {RoundStage.EVALUATE: "evaluation"}
"""The key of each stage's results in `Round.metrics`."""
