"""Training rounds in the database: starting, claiming, progress, cancelling, reclaiming.

A round is a row; the broker only carries "run stage S of round N". A worker runs a stage only
while it holds the round's lease in the database, so a message delivered twice does nothing
the second time, and at most one round runs per model line however the broker behaves. A round
whose worker died is found by its expired lease and failed with the reason, so no round is
ever left running. Model folders are registered only by the last stage, after they are
complete on disk.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from celery import Celery
from sqlalchemy import func, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from app import broker, crud, model_readiness
from app.config import Settings
from app.errors import Conflict, InvalidInput, NotFound
from app.leaderboard import HeadToHead, head_to_head
from app.models import (
    Algorithm,
    Judgement,
    ModelStatus,
    ModelVersion,
    Round,
    RoundLog,
    RoundMetric,
    RoundStage,
    RunStatus,
    User,
    utcnow,
)
from app.preferences import build_snapshot
from worker.training_config import (
    DPOConfig,
    PPOConfig,
    RewardConfig,
    RLOOConfig,
    SFTConfig,
    build_config,
)

STAGES = (
    RoundStage.SNAPSHOT,
    RoundStage.SFT,
    RoundStage.REWARD_MODEL,
    RoundStage.POLICY,
    RoundStage.EVALUATE,
    RoundStage.REGISTER,
)
RUN_STAGE_TASK = "alignloop.round_stage"
LEASE = timedelta(minutes=2)
ACTIVE = (RunStatus.QUEUED, RunStatus.RUNNING)
REDISPATCH_AFTER = timedelta(minutes=30)
"""How long a sent round may wait in the queue (behind other work) before reclaim sends it
again."""
NEXT_STAGE_DUE = timedelta(minutes=2)
"""How long the next stage may take to start once a stage has ended before reclaim sends it
again: the chain publishes it as the stage's task ends, and it is lost when the broker was
down just then. A stage that waits longer behind other work on the `train` queue gets a
duplicate message (and one per `REDISPATCH_AFTER` after that), which does nothing: a stage
runs for the first message that claims it."""
MAX_LOG_CHARS = 8000
CANCELLED_BY_ADMIN = "cancelled by an admin"
TOO_FEW_TO_JUDGE = 20
"""A figure over fewer examples than this (held-out pairs, comparisons) is shown as such,
not as a headline: its 95% interval is wider than ±0.2."""

LORA_TOP = {"lora": True, "lora_rank": 16, "lora_layers": 8}
# LoRA (Hu et al. 2021) on the top 8 of SmolLM2-135M's 30 blocks: nothing below them runs
# backward, so a step costs little more than a forward pass, in time and memory, and the
# reference policy is the same weights with the adapters off. Reward-model training on the
# `concise` rule's pairs ran at 0.86 pairs/s against 0.25 with LoRA on every block.

NEW_PAIRS = {"ties": "skip", "train_pairs": "new"}
# Each round trains on the pairs judged since its parent's round: the parent has learnt the
# older ones, and the new answers are the parent's own, so the data stays on-policy as in
# iterative DPO and RLHF (Xu et al. 2023; Touvron et al. 2023), and a round costs the same
# however much has been judged before it. The reward model goes on from the parent round's.

PRESETS: dict[str, dict[str, dict[str, Any]]] = {
    # SmolLM2-135M on 2 CPU cores: a round, candidate generation included, within about 15
    # minutes and 3 GB (bench/alignment.py, bench/RESULTS.md).
    "quick": {
        # At least 32 training pairs: four reward-model batches. Fewer fit noise, and the
        # held-out accuracy is then a figure over three or four pairs.
        "snapshot": {**NEW_PAIRS, "min_pairs": 32},
        "sft": {
            "min_demonstrations": 16,
            "epochs": 1,
            "batch_size": 4,
            "max_length": 384,
            "learning_rate": 5e-4,
            **LORA_TOP,
        },
        # One epoch, as InstructGPT trains its reward model (Ouyang et al. 2022): more overfits.
        # LoRA at 1e-3: 1e-4 reached 0.66 held-out accuracy on 150 rule-labelled pairs and
        # 0.48-0.63 in bench/alignment.py; 1e-3 reached 1.00 (tests/worker/test_reward_learning).
        "reward_model": {
            "epochs": 1,
            "batch_pairs": 8,
            "learning_rate": 1e-3,
            "max_length": 384,
            **LORA_TOP,
        },
        "evaluation": {
            "prompts": 12,
            "samples": 2,
            "max_new_tokens": 128,
            "temperature": 0.8,
            "top_p": 0.95,
            "ab_prompts": 8,
        },
        "promotion": {"auto": False, "min_win_rate": 0.55, "max_kl": 20.0},
    },
    # A GPU worker and a 0.5-8B model: more data per round, adapters on every block, bf16.
    # Not yet measured on a GPU (no bench run has had one): the rates are the references'.
    "standard": {
        "snapshot": {**NEW_PAIRS, "min_pairs": 128},
        # QLoRA's fine-tuning of 7-13B models (Dettmers et al. 2023): LoRA on every linear
        # layer at 2e-4.
        "sft": {
            "min_demonstrations": 64,
            "epochs": 2,
            "batch_size": 8,
            "learning_rate": 2e-4,
            "lora": True,
        },
        # One epoch (InstructGPT, Ouyang et al. 2022).
        "reward_model": {"epochs": 1, "batch_pairs": 16, "learning_rate": 5e-5, "lora": True},
        "evaluation": {
            "prompts": 64,
            "samples": 2,
            "max_new_tokens": 256,
            "temperature": 0.8,
            "top_p": 0.95,
            "ab_prompts": 32,
        },
        "promotion": {"auto": False, "min_win_rate": 0.55, "max_kl": 20.0},
    },
}
POLICY_PRESETS: dict[str, dict[Algorithm, dict[str, Any]]] = {
    "quick": {
        # DPO (Rafailov et al. 2023) with beta 0.1, the paper's; LoRA wants a learning rate
        # about 100x full fine-tuning's (Hu et al. 2021): 1e-3 moved the policy where 1e-4 did
        # not (bench/alignment_study.py). Two epochs over the round's pairs. The NLL of the
        # answers raters wrote, at weight 1 (RPO's term, Pang et al. 2024, on rewrites only):
        # on the refusal rule, where most wanted answers are rewrites, RPO took the win rate
        # from 0.58 to 0.76; on `concise`, where the chosen answers are the base's own long
        # ones, RPO on every pair held it at 0.70 where DPO reached 0.87.
        Algorithm.DPO: {
            "epochs": 2,
            "batch_pairs": 8,
            "learning_rate": 1e-3,
            "beta": 0.1,
            "nll_coefficient": 1.0,
            "nll_pairs": "rewrites",
            **LORA_TOP,
        },
        # RLOO (Ahmadian et al. 2024) with k = 2; rollouts of 128 tokens, served answers longer.
        Algorithm.RLOO: {
            "steps": 8,
            "prompts_per_step": 8,
            "samples_per_prompt": 2,
            "max_new_tokens": 128,
            "learning_rate": 1e-3,
            **LORA_TOP,
        },
        # PPO as in InstructGPT (Ouyang et al. 2022); a LoRA critic on the reward model.
        Algorithm.PPO: {
            "steps": 8,
            "prompts_per_step": 8,
            "max_new_tokens": 128,
            "learning_rate": 1e-3,
            "value_learning_rate": 1e-3,
            **LORA_TOP,
        },
    },
    # Not yet measured on a GPU. The same algorithms as `quick`, at QLoRA's 2e-4 for LoRA on
    # every block (Dettmers et al. 2023); online steps of 32 prompts (TRL's TL;DR RLOO and PPO
    # examples use batches of 64) and RLOO with k = 4 (Ahmadian et al. 2024 compare 2 and 4).
    "standard": {
        Algorithm.DPO: {
            "epochs": 2,
            "batch_pairs": 16,
            "learning_rate": 2e-4,
            "beta": 0.1,
            "nll_coefficient": 1.0,
            "nll_pairs": "rewrites",
            "lora": True,
        },
        Algorithm.RLOO: {
            "steps": 100,
            "prompts_per_step": 32,
            "samples_per_prompt": 4,
            "max_new_tokens": 256,
            "learning_rate": 2e-4,
            "lora": True,
        },
        Algorithm.PPO: {
            "steps": 100,
            "prompts_per_step": 32,
            "max_new_tokens": 256,
            "learning_rate": 2e-4,
            "value_learning_rate": 2e-4,
            "lora": True,
        },
    },
}
PLAIN_SECTIONS = {
    "snapshot": {"ties", "train_pairs", "min_pairs", "up_to_judgement_id"},
    "evaluation": {
        "prompts",
        "samples",
        "max_new_tokens",
        "temperature",
        "top_p",
        "seed",
        "ab_prompts",
    },
    "promotion": {"auto", "min_win_rate", "max_kl", "min_human_win_rate", "min_human_judgements"},
}
"""Sections read by the round itself; the others configure a trainer (`trainer_config`)."""
SNAPSHOT_CHOICES = {"ties": ("skip", "half"), "train_pairs": ("new", "all")}


def trainer_config(section: str, algorithm: Algorithm) -> type:
    """The settings class a trainer section configures."""
    if section == "sft":
        return SFTConfig
    if section == "reward_model":
        return RewardConfig
    return {Algorithm.PPO: PPOConfig, Algorithm.RLOO: RLOOConfig, Algorithm.DPO: DPOConfig}[
        algorithm
    ]


def round_config(
    algorithm: Algorithm, preset: str, overrides: dict[str, dict[str, Any]]
) -> dict[str, dict[str, Any]]:
    """The preset's settings with the admin's overrides, section by section; unknown
    sections or settings are refused."""
    if preset not in PRESETS:
        raise InvalidInput(f"Unknown preset {preset!r}; use one of {', '.join(PRESETS)}")
    config = {section: dict(values) for section, values in PRESETS[preset].items()}
    config["policy"] = dict(POLICY_PRESETS[preset][algorithm])
    if unknown := set(overrides) - set(config):
        raise InvalidInput(f"Unknown override sections: {sorted(unknown)}")
    for section, values in overrides.items():
        config[section] |= values
    for section, values in config.items():
        if section in PLAIN_SECTIONS:
            if extra := sorted(set(values) - PLAIN_SECTIONS[section]):
                raise InvalidInput(f"Unknown {section} settings: {extra}")
        else:
            own = {key: value for key, value in values.items() if key != "min_demonstrations"}
            build_config(trainer_config(section, algorithm), own)
    for name, choices in SNAPSHOT_CHOICES.items():
        if config["snapshot"].get(name, choices[0]) not in choices:
            raise InvalidInput(f"snapshot setting {name!r} must be one of {', '.join(choices)}")
    return config


def start_round(
    db: Session,
    *,
    algorithm: Algorithm,
    preset: str,
    overrides: dict[str, dict[str, Any]],
    created_by: User | None,
    settings: Settings,
    line: str = "main",
) -> Round:
    """Queue a round; 409 when the line already has a queued or running round, when no model
    is ready, or when too few judged pairs are there to train on.

    The check up front gives the usual answer; the partial unique index on active rounds per
    line is what holds when two starts race past it."""
    config = round_config(algorithm, preset, overrides)
    busy = Conflict(f"A round is already queued or running on line {line!r}")
    if active_round(db, line=line) is not None:
        raise busy
    _check_enough_data(db, settings, config["snapshot"])
    round_ = Round(
        line=line,
        algorithm=algorithm,
        preset=preset,
        config=config,
        created_by_id=created_by.id if created_by else None,
    )
    try:
        with db.begin_nested():
            db.add(round_)
    except IntegrityError:
        raise busy from None
    return round_


def _check_enough_data(db: Session, settings: Settings, options: dict[str, Any]) -> None:
    parent = model_readiness.require_ready_model(db, settings)
    available, previous = pairs_available(db, parent, options)
    if message := too_few_pairs(available, options, previous):
        raise Conflict(message)


def pairs_available(
    db: Session, parent: ModelVersion, options: dict[str, Any]
) -> tuple[int, Round | None]:
    """The training pairs a round with these snapshot `options` would get now, and the round
    whose pairs it would not use again (with `train_pairs: new`)."""
    previous, train_after = training_cutoff(db, parent, options)
    snapshot = build_snapshot(
        db, ties=options.get("ties", "skip"), train_after_judgement_id=train_after
    )
    return len(snapshot.split("train")), previous


def training_cutoff(
    db: Session, parent: ModelVersion, options: dict[str, Any]
) -> tuple[Round | None, int]:
    """With `train_pairs: new`, the round that trained `parent` and the last judgement it
    used (the new round trains on later ones); else (None, 0)."""
    previous = parent_round(db, parent) if options.get("train_pairs") == "new" else None
    return previous, previous.config["snapshot"]["up_to_judgement_id"] if previous else 0


def too_few_pairs(available: int, options: dict[str, Any], previous: Round | None) -> str | None:
    """Why `available` training pairs are too few for a round (None when they are enough)."""
    needed = max(1, options.get("min_pairs", 1))
    if available >= needed:
        return None
    since = f" judged since round {previous.id}" if previous else ""
    return (
        f"Too few judged pairs to train on: {available}{since}, and this round needs at "
        f"least {needed} (its preset's snapshot.min_pairs). Rate more tasks first, or lower "
        "snapshot.min_pairs."
    )


def judgements_since_last_round(db: Session, *, line: str = "main") -> int:
    """Judgements newer than the last snapshot a round of `line` took."""
    cutoffs = db.scalars(
        select(Round.config).where(Round.line == line, Round.snapshot_sha256.is_not(None))
    )
    last = max((config["snapshot"].get("up_to_judgement_id", 0) for config in cutoffs), default=0)
    return db.scalar(select(func.count()).select_from(Judgement).where(Judgement.id > last))


def parent_round(db: Session, parent: ModelVersion) -> Round | None:
    """The round that trained the policy `parent` (None for `base` or an SFT job's policy)."""
    return db.get(Round, parent.round_id) if parent.round_id else None


def active_round(db: Session, *, line: str) -> Round | None:
    return db.scalar(select(Round).where(Round.line == line, Round.status.in_(ACTIVE)).limit(1))


def send(db: Session, celery: Celery, round_id: int, *, from_stage: RoundStage = STAGES[0]) -> bool:
    """Send the round's chain of stages (from `from_stage` on), after its row is committed,
    and note that the message is on its way, so that reclaim leaves the round alone for a
    while. With the broker down the round stays marked as unsent (False), and the reclaim
    task sends it once the broker is back."""
    start = STAGES.index(from_stage) if from_stage in STAGES else 0
    stages = [
        celery.signature(RUN_STAGE_TASK, args=(round_id, stage.value), immutable=True)
        for stage in STAGES[start:]
    ]
    if not broker.send_chain(stages, what=f"round {round_id} from {STAGES[start].value}"):
        return False
    db.execute(
        update(Round)
        .where(Round.id == round_id, Round.lease_owner.is_(None))
        .values(lease_expires_at=utcnow() + REDISPATCH_AFTER)
    )
    db.commit()
    return True


def get_round(db: Session, round_id: int) -> Round:
    round_ = db.get(Round, round_id)
    if round_ is None:
        raise NotFound("No round has this id")
    return round_


def recent_rounds(db: Session, *, limit: int = 20, active: bool = False) -> list[Round]:
    """The newest rounds first; with `active`, only the queued and running ones."""
    query = select(Round).order_by(Round.id.desc()).limit(limit)
    if active:
        query = query.where(Round.status.in_(ACTIVE))
    return list(db.scalars(query))


def claim_stage(db: Session, *, round_id: int, stage: RoundStage, worker: str) -> Round | None:
    """Take the round's lease to run `stage`: None when the round is not waiting for that
    stage, is finished or cancelled, or a live worker holds it. One compare-and-set update."""
    now = utcnow()
    waiting_for = [stage, RoundStage.PENDING] if stage == STAGES[0] else [stage]
    claimed = db.execute(
        update(Round)
        .where(
            Round.id == round_id,
            Round.status.in_(ACTIVE),
            Round.cancel_requested.is_(False),
            Round.stage.in_(waiting_for),
            or_(Round.lease_owner.is_(None), Round.lease_expires_at < now),
        )
        .values(
            status=RunStatus.RUNNING,
            stage=stage,
            progress=0.0,
            progress_detail=None,
            stage_started_at=now,
            lease_owner=worker,
            lease_expires_at=now + LEASE,
            attempts=Round.attempts + 1,
        )
        .returning(Round.id)
    ).first()
    if claimed is None:
        return None
    round_ = db.get(Round, round_id)
    db.refresh(round_)
    round_.started_at = round_.started_at or now
    add_log(db, round_id=round_id, stage=stage, message=f"started on {worker}")
    return round_


def renew_lease(
    db: Session, *, round_id: int, worker: str, progress: float, detail: str | None = None
) -> bool:
    """Extend the lease and record progress; False when the worker no longer holds it or a
    cancel was asked."""
    renewed = db.execute(
        update(Round)
        .where(
            Round.id == round_id,
            Round.lease_owner == worker,
            Round.status == RunStatus.RUNNING,
            Round.cancel_requested.is_(False),
        )
        .values(lease_expires_at=utcnow() + LEASE, progress=progress, progress_detail=detail)
        .returning(Round.id)
    ).first()
    return renewed is not None


def complete_stage(
    db: Session, *, round_id: int, worker: str, seconds: float, **fields: Any
) -> Round | None:
    """Record the finished stage (its time, and `fields` such as the snapshot hash), move the
    round on to the next stage, and give up the lease. None if the lease was lost meanwhile."""
    round_ = db.get(Round, round_id, with_for_update=True, populate_existing=True)
    if round_ is None or round_.lease_owner != worker or round_.status != RunStatus.RUNNING:
        return None
    index = STAGES.index(round_.stage)
    add_log(db, round_id=round_id, stage=round_.stage, message=f"finished in {seconds:.1f} s")
    round_.timings = {**round_.timings, round_.stage.value: round(seconds, 2)}
    for name, value in fields.items():
        setattr(round_, name, value)
    round_.lease_owner = None
    round_.lease_expires_at = utcnow() + NEXT_STAGE_DUE  # the chain sends the next stage now
    round_.progress, round_.progress_detail = 0.0, None
    if round_.cancel_requested:
        round_.status, round_.error = RunStatus.CANCELLED, CANCELLED_BY_ADMIN
        round_.finished_at = utcnow()
        _retire_models(db, round_id=round_.id)
    elif index + 1 < len(STAGES):
        round_.stage = STAGES[index + 1]
    else:
        round_.stage, round_.status = RoundStage.DONE, RunStatus.SUCCEEDED
        round_.progress, round_.finished_at = 1.0, utcnow()
    return round_


def record_points(
    db: Session, *, round_id: int, stage: RoundStage, step: int, values: dict[str, float]
) -> None:
    """One step of a training curve: a `round_metrics` row per finite number."""
    db.add_all(
        RoundMetric(round_id=round_id, stage=stage, step=step, name=name, value=float(value))
        for name, value in values.items()
        if isinstance(value, int | float) and value == value and abs(value) != float("inf")
    )


def add_log(
    db: Session, *, round_id: int, stage: RoundStage, message: str, level: str = "INFO"
) -> None:
    """One line of the round's log, shown on its admin page."""
    db.add(RoundLog(round_id=round_id, stage=stage, level=level, message=message[:MAX_LOG_CHARS]))


def read_log(db: Session, *, round_id: int, after_id: int = 0, limit: int = 500) -> list[RoundLog]:
    """The round's log lines after `after_id`, oldest first (a page polls with its last id)."""
    query = select(RoundLog).where(RoundLog.round_id == round_id, RoundLog.id > after_id)
    return list(db.scalars(query.order_by(RoundLog.id).limit(limit)))


def fail_round(
    db: Session, *, round_id: int, error: str, status: RunStatus = RunStatus.FAILED
) -> None:
    """End an active round with `error`; a finished round is left as it is."""
    ended = db.execute(
        update(Round)
        .where(Round.id == round_id, Round.status.in_(ACTIVE))
        .values(
            status=status,
            error=error[:2000],
            lease_owner=None,
            lease_expires_at=None,
            finished_at=utcnow(),
        )
        .returning(Round.stage)
    ).first()
    if ended is not None:
        level = "ERROR" if status == RunStatus.FAILED else "WARNING"
        add_log(db, round_id=round_id, stage=ended.stage, message=error, level=level)
        _retire_models(db, round_id=round_id)


def _retire_models(db: Session, *, round_id: int) -> None:
    """Mark the models an unfinished round registered (its reward model) failed, so that no
    later round goes on from them and no admin serves them; promoted ones stay as they are."""
    db.execute(
        update(ModelVersion)
        .where(
            ModelVersion.round_id == round_id,
            ModelVersion.status == ModelStatus.READY,
            ModelVersion.promoted_at.is_(None),
        )
        .values(status=ModelStatus.FAILED)
    )


def end_abandoned_stage(
    db: Session, *, round_id: int, stage: RoundStage, worker: str, error: str, cancelled: bool
) -> None:
    """End a round whose `stage` process (`worker`, a lease-owner prefix) stopped before it
    finished the stage: killed, crashed, or stopped for a cancel. A round that has moved on,
    or that another worker holds, is left alone."""
    round_ = db.get(Round, round_id, with_for_update=True, populate_existing=True)
    if round_ is None or round_.status not in ACTIVE:
        return
    if round_.stage not in (stage, RoundStage.PENDING):
        return
    if round_.lease_owner is not None and not round_.lease_owner.startswith(f"{worker}:"):
        return
    status = RunStatus.CANCELLED if cancelled else RunStatus.FAILED
    fail_round(db, round_id=round_id, error=error, status=status)


def cancel_round(db: Session, *, round_id: int) -> Round:
    """Ask a round to stop: a queued one (or one between stages) ends at once, a running
    stage stops at its next heartbeat."""
    round_ = get_round(db, round_id)
    if round_.status not in ACTIVE:
        raise Conflict(f"Round {round_id} has already ended ({round_.status.value})")
    round_.cancel_requested = True
    add_log(db, round_id=round_id, stage=round_.stage, message="an admin asked to cancel")
    if round_.lease_owner is None:
        fail_round(db, round_id=round_id, error=CANCELLED_BY_ADMIN, status=RunStatus.CANCELLED)
        db.refresh(round_)
    return round_


def fail_lost_rounds(db: Session, *, after_restart: bool = False) -> int:
    """Fail running rounds whose worker died inside a stage (its lease expired; after a
    restart of the embedded default, any stage that was running), naming the stage; a round
    an admin asked to cancel ends cancelled."""
    condition = (Round.status == RunStatus.RUNNING) & Round.lease_owner.is_not(None)
    if not after_restart:
        condition &= Round.lease_expires_at < utcnow()
    lost = list(db.scalars(select(Round).where(condition)))
    for round_ in lost:
        if round_.cancel_requested:
            fail_round(db, round_id=round_.id, error=CANCELLED_BY_ADMIN, status=RunStatus.CANCELLED)
            continue
        fail_round(
            db,
            round_id=round_.id,
            error=f"{round_.stage.value}: the worker stopped during this stage (it was "
            "restarted, or lost the database); start a new round",
        )
    return len(lost)


def rounds_to_redispatch(db: Session, *, after_restart: bool = False) -> list[Round]:
    """Rounds waiting for a stage whose message may be lost: never sent, or not taken up by
    the time it was due (`REDISPATCH_AFTER` after a send, `NEXT_STAGE_DUE` after a stage
    ended); after a restart of the embedded default, all of them. `send` marks them as sent
    again, only if the broker took the message.
    Re-sending is safe: a stage runs only for the worker that claims it."""
    waiting = (
        Round.status.in_(ACTIVE) & Round.lease_owner.is_(None) & Round.cancel_requested.is_(False)
    )
    if not after_restart:  # never sent (None), or due and not taken up
        waiting &= or_(Round.lease_expires_at.is_(None), Round.lease_expires_at < utcnow())
    return list(db.scalars(select(Round).where(waiting).order_by(Round.id)))


# --- the raters' verdict on a round's policy ------------------------------------------------------

MIN_HUMAN_JUDGEMENTS = 20
"""Blind A/B comparisons the human gate waits for unless `promotion.min_human_judgements`."""


def human_verdict(db: Session, round_: Round) -> HeadToHead | None:
    """The raters' blind A/B win rate of the round's policy against its parent, once the
    policy is registered."""
    version = round_.metrics.get("register", {}).get("version")
    parent = db.get(ModelVersion, round_.parent_version_id) if round_.parent_version_id else None
    if version is None or parent is None:
        return None
    return head_to_head(db, version, parent.name)


def promote_on_human_verdicts(db: Session) -> list[int]:
    """Promote the policies whose auto-promotion waits for the raters (the gate
    `promotion.min_human_win_rate`) once enough blind A/B verdicts exist and the lower bound
    of their win rate passes it; stop waiting when the upper bound falls below it, or when
    the parent is no longer the current version. Returns the rounds promoted."""
    promoted = []
    for round_ in _rounds_awaiting_raters(db):
        gates = round_.config.get("promotion", {})
        verdict = human_verdict(db, round_)
        if verdict is None or verdict.n < gates.get("min_human_judgements", MIN_HUMAN_JUDGEMENTS):
            continue
        register = dict(round_.metrics["register"])
        current = crud.current_policy(db)
        threshold = gates["min_human_win_rate"]
        if current is None or current.id != round_.parent_version_id:
            outcome = "a newer version is current; not promoted"
        elif verdict.low >= threshold:
            version = crud.get_model_version(db, name=register["version"])
            crud.promote(db, version_id=version.id)
            register["promoted"] = True
            promoted.append(round_.id)
            outcome = "promoted"
        elif verdict.high < threshold:
            outcome = "raters do not prefer it; not promoted"
        else:
            continue  # undecided: wait for more verdicts
        register["awaiting_raters"] = False
        round_.metrics = {**round_.metrics, "register": register}
        add_log(
            db,
            round_id=round_.id,
            stage=RoundStage.REGISTER,
            message=f"human win rate {verdict.win_rate:.2f} [{verdict.low:.2f}, "
            f"{verdict.high:.2f}] over {verdict.n:g} A/B judgements, gate {threshold}: {outcome}",
        )
    return promoted


def _rounds_awaiting_raters(db: Session, *, recent: int = 50) -> list[Round]:
    finished = db.scalars(
        select(Round)
        .where(Round.status == RunStatus.SUCCEEDED)
        .order_by(Round.id.desc())
        .limit(recent)
    )
    return [r for r in finished if r.metrics.get("register", {}).get("awaiting_raters")]
