"""One lease for everything a worker runs, a job or a round's stage: claim, renew, expire and
abandon, with one semantics.

A row is the truth about its work; a broker message only says "look at row N", and may come
twice. A worker runs the work only while it holds the row's lease:
- **claim**: one compare-and-set UPDATE takes a row that is queued or running with no live
  lease (no owner, or an expired one), so of two workers given the same message one wins;
- **renew**: the worker's heartbeat extends the lease and records progress, and learns that
  the row is no longer its own (finished, taken over, cancelled), which stops the work;
- **expire**: a row whose lease ran out is lost (its worker died); reclaim finds it;
- **abandon**: a supervisor whose child process died ends the row, unless another worker
  has taken it since.
What a lost row becomes is the owner's rule (a job is queued again, up to its attempts; a round
fails naming its stage); how it is held is this module's.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime, timedelta
from typing import Any, TypeVar

from sqlalchemy import ColumnElement, or_, select, update
from sqlalchemy.orm import Session

from app.models import Job, Round, RunStatus, utcnow

LEASE = timedelta(minutes=2)
HEARTBEAT_INTERVAL_S = 5.0
"""How often a worker renews its lease; pages see progress this often, too."""
ACTIVE = (RunStatus.QUEUED, RunStatus.RUNNING)

Leased = TypeVar("Leased", Job, Round)


def claim(
    db: Session,
    kind: type[Leased],
    row_id: int,
    *,
    worker: str,
    where: Iterable[ColumnElement[bool]] = (),
    values: dict[str, Any] | None = None,
) -> Leased | None:
    """Take row `row_id` for `worker` if it is active, free and meets `where`, setting
    `values` too; None when another worker holds it or it is not waiting for work."""
    now = utcnow()
    claimed = db.execute(
        update(kind)
        .where(kind.id == row_id, kind.status.in_(ACTIVE), is_free(kind, now), *where)
        .values(
            status=RunStatus.RUNNING,
            lease_owner=worker,
            lease_expires_at=now + LEASE,
            attempts=kind.attempts + 1,
            progress=0.0,
            progress_detail=None,
            **(values or {}),
        )
        .returning(kind.id)
    ).first()
    if claimed is None:
        return None
    row = db.get(kind, row_id, populate_existing=True)
    row.started_at = row.started_at or now
    return row


def renew(
    db: Session,
    kind: type[Leased],
    row_id: int,
    *,
    worker: str,
    progress: float,
    detail: str | None = None,
    where: Iterable[ColumnElement[bool]] = (),
) -> bool:
    """Extend `worker`'s lease and record its progress; False when the row is no longer its
    own, or no longer meets `where` (a cancel, say)."""
    renewed = db.execute(
        update(kind)
        .where(
            kind.id == row_id,
            kind.lease_owner == worker,
            kind.status == RunStatus.RUNNING,
            *where,
        )
        .values(lease_expires_at=utcnow() + LEASE, progress=progress, progress_detail=detail)
        .returning(kind.id)
    ).first()
    return renewed is not None


def newest(db: Session, kind: type[Leased], *, limit: int, active: bool) -> list[Leased]:
    """The newest rows of `kind` first; with `active`, only the queued and running ones."""
    query = select(kind).order_by(kind.id.desc()).limit(limit)
    if active:
        query = query.where(kind.status.in_(ACTIVE))
    return list(db.scalars(query))


def is_free(kind: type[Leased], now: datetime) -> ColumnElement[bool]:
    """No worker holds the row: it has no owner, or its owner's lease ended or ran out."""
    return or_(
        kind.lease_owner.is_(None), kind.lease_expires_at.is_(None), kind.lease_expires_at < now
    )


def is_lost(kind: type[Leased], *, after_restart: bool = False) -> ColumnElement[bool]:
    """Running under a lease that ran out (its worker died); after a restart of the embedded
    default, running under any lease, as its worker thread is gone."""
    lost = (kind.status == RunStatus.RUNNING) & kind.lease_owner.is_not(None)
    return lost if after_restart else lost & (kind.lease_expires_at < utcnow())


def held_elsewhere(row: Job | Round, process: str) -> bool:
    """Another process than `process` (a lease-owner prefix, `host:pid`) holds the row."""
    return row.lease_owner is not None and not row.lease_owner.startswith(f"{process}:")
