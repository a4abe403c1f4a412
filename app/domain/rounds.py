"""Training rounds in the database: starting, claiming, progress, cancelling, reclaiming.

A round is a row; the broker only carries "run stage S of round N". A worker runs a stage only
while it holds the round's lease (`app.domain.leases`), so a message delivered twice does nothing
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

from app import broker
from app.config import Settings
from app.db import get_row
from app.domain import leases, model_readiness, model_registry
from app.domain.leaderboard import HeadToHead, head_to_head
from app.domain.preferences import build_snapshot
from app.errors import Conflict
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
from app.round_config import RoundConfig, SnapshotConfig, round_config
from app.tasks_contract import ROUND_STAGE

STAGES = (
    RoundStage.SNAPSHOT,
    RoundStage.SFT,
    RoundStage.REWARD_MODEL,
    RoundStage.POLICY,
    RoundStage.EVALUATE,
    RoundStage.REGISTER,
)
ACTIVE = leases.ACTIVE
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
    _check_enough_data(db, settings, RoundConfig.parse(algorithm, config).snapshot)
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


def _check_enough_data(db: Session, settings: Settings, options: SnapshotConfig) -> None:
    parent = model_readiness.require_ready_model(db, settings)
    available, previous = pairs_available(db, parent, options)
    if message := too_few_pairs(available, options, previous):
        raise Conflict(message)


def pairs_available(
    db: Session, parent: ModelVersion, options: SnapshotConfig
) -> tuple[int, Round | None]:
    """The training pairs a round with these snapshot `options` would get now, and the round
    whose pairs it would not use again (with `train_pairs: new`)."""
    previous, train_after = training_cutoff(db, parent, options)
    snapshot = build_snapshot(db, ties=options.ties, train_after_judgement_id=train_after)
    return len(snapshot.split("train")), previous


def training_cutoff(
    db: Session, parent: ModelVersion, options: SnapshotConfig
) -> tuple[Round | None, int]:
    """With `train_pairs: new`, the round that trained `parent` and the last judgement it
    used (the new round trains on later ones); else (None, 0)."""
    previous = parent_round(db, parent) if options.train_pairs == "new" else None
    if previous is None:
        return None, 0
    return previous, previous.parsed_config().snapshot.up_to_judgement_id or 0


def too_few_pairs(available: int, options: SnapshotConfig, previous: Round | None) -> str | None:
    """Why `available` training pairs are too few for a round (None when they are enough)."""
    needed = max(1, options.min_pairs)
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
        celery.signature(ROUND_STAGE, args=(round_id, stage.value), immutable=True)
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
    return get_row(db, Round, round_id, missing="No round has this id")


def recent_rounds(db: Session, *, limit: int = 20, active: bool = False) -> list[Round]:
    """The newest rounds first; with `active`, only the queued and running ones."""
    return leases.newest(db, Round, limit=limit, active=active)


def claim_stage(db: Session, *, round_id: int, stage: RoundStage, worker: str) -> Round | None:
    """Take the round's lease to run `stage`: None when the round is not waiting for that
    stage, is finished or cancelled, or a live worker holds it."""
    waiting_for = [stage, RoundStage.PENDING] if stage == STAGES[0] else [stage]
    round_ = leases.claim(
        db,
        Round,
        round_id,
        worker=worker,
        where=[Round.cancel_requested.is_(False), Round.stage.in_(waiting_for)],
        values={"stage": stage, "stage_started_at": utcnow()},
    )
    if round_ is not None:
        add_log(db, round_id=round_id, stage=stage, message=f"started on {worker}")
    return round_


def renew_lease(
    db: Session, *, round_id: int, worker: str, progress: float, detail: str | None = None
) -> bool:
    """Extend the lease and record progress; False when the worker no longer holds it or a
    cancel was asked."""
    return leases.renew(
        db,
        Round,
        round_id,
        worker=worker,
        progress=progress,
        detail=detail,
        where=[Round.cancel_requested.is_(False)],
    )


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
    if round_ is None or round_.status not in ACTIVE or leases.held_elsewhere(round_, worker):
        return
    if round_.stage not in (stage, RoundStage.PENDING):
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
    lost = list(db.scalars(select(Round).where(leases.is_lost(Round, after_restart=after_restart))))
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
    if not after_restart:  # never sent (no due time), or due and not taken up
        waiting &= or_(Round.lease_expires_at.is_(None), Round.lease_expires_at < utcnow())
    return list(db.scalars(select(Round).where(waiting).order_by(Round.id)))


# --- the raters' verdict on a round's policy ------------------------------------------------------


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
        gates = round_.parsed_config().promotion
        verdict = human_verdict(db, round_)
        if verdict is None or verdict.n < gates.min_human_judgements:
            continue
        register = dict(round_.metrics["register"])
        current = model_registry.current_policy(db)
        threshold = gates.min_human_win_rate
        if current is None or current.id != round_.parent_version_id:
            outcome = "a newer version is current; not promoted"
        elif verdict.low >= threshold:
            version = model_registry.get_model_version(db, name=register["version"])
            model_registry.promote(db, version_id=version.id)
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
