"""The model registry: model versions with their lineage, the served policy, promotion and
roll-back (against the `ETag` of what is served)."""

from __future__ import annotations

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from app.domain import preconditions
from app.errors import Conflict, NotFound
from app.models import (
    ModelKind,
    ModelStatus,
    ModelVersion,
    utcnow,
)


def get_model_version(db: Session, *, name: str) -> ModelVersion | None:
    return db.scalar(select(ModelVersion).where(ModelVersion.name == name))


def register_model_version(
    db: Session,
    *,
    name: str,
    kind: ModelKind,
    path: str,
    config: dict,
    parent: ModelVersion | None = None,
    metrics: dict | None = None,
    snapshot_sha256: str | None = None,
    rater_count: int | None = None,
    round_id: int | None = None,
) -> ModelVersion:
    """Register a stored model with its lineage: parent version, round, training snapshot."""
    if get_model_version(db, name=name) is not None:
        raise Conflict(f"Model version {name!r} already exists")
    version = ModelVersion(
        name=name,
        kind=kind,
        status=ModelStatus.READY,
        path=path,
        parent_id=parent.id if parent else None,
        round_id=round_id,
        snapshot_sha256=snapshot_sha256,
        rater_count=rater_count,
        config=config,
        metrics=metrics or {},
    )
    db.add(version)
    db.flush()
    return version


def roll_back(db: Session, *, if_match: str | None = None) -> ModelVersion:
    """Stop serving the current promoted version: the one promoted before it (else `base`)
    becomes `current` again. `if_match`: the client's `serving_etag`, see `promote`."""
    current = _lock_serving(db, if_match)
    if current is None or current.promoted_at is None:
        raise Conflict("Nothing to roll back: no promoted version is being served")
    current.promoted_at = None
    db.flush()
    return current_policy(db)


def current_policy(db: Session) -> ModelVersion | None:
    """The policy version being served and rated: the last promoted one, else `base`."""
    promoted = db.scalar(
        select(ModelVersion)
        .where(
            ModelVersion.kind == ModelKind.POLICY,
            ModelVersion.status == ModelStatus.READY,
            ModelVersion.promoted_at.is_not(None),
        )
        .order_by(ModelVersion.promoted_at.desc())
        .limit(1)
    )
    return promoted or get_model_version(db, name="base")


def served_policy(db: Session, *, name: str) -> ModelVersion:
    """The policy version that `/v1` serves for a requested model name (`current` included)."""
    version = current_policy(db) if name == "current" else get_model_version(db, name=name)
    if version is None or version.kind != ModelKind.POLICY or version.status != ModelStatus.READY:
        raise NotFound(f"The model {name!r} does not exist or is not ready", code="model_not_found")
    return version


def list_policies(db: Session) -> list[ModelVersion]:
    return list(
        db.scalars(
            select(ModelVersion)
            .where(ModelVersion.kind == ModelKind.POLICY, ModelVersion.status == ModelStatus.READY)
            .order_by(ModelVersion.created_at, ModelVersion.id)
        )
    )


def list_model_versions(db: Session) -> list[ModelVersion]:
    return list(db.scalars(select(ModelVersion).order_by(ModelVersion.id)))


def serving_etag(current: ModelVersion | None) -> str:
    """The ETag of what is served: which version, and since when (a version promoted again
    after a rollback gets a new one)."""
    return preconditions.etag("serving", current and current.id, current and current.promoted_at)


def _lock_serving(db: Session, if_match: str | None) -> ModelVersion | None:
    """Take the promotion lock, check the client's `If-Match`, return the current policy."""
    preconditions.serialise(db, "serving")
    current = current_policy(db)
    preconditions.check_if_match(if_match, serving_etag(current), what="The served version")
    return current


def promote(db: Session, *, version_id: int, if_match: str | None = None) -> ModelVersion:
    """Make a ready policy version the one served as `current` (one compare-and-set update).
    With `if_match` (a `serving_etag`), only if nobody promoted or rolled back meanwhile: of
    two admins promoting from the same page, the second gets a 412."""
    _lock_serving(db, if_match)
    updated = db.execute(
        update(ModelVersion)
        .where(
            ModelVersion.id == version_id,
            ModelVersion.kind == ModelKind.POLICY,
            ModelVersion.status == ModelStatus.READY,
        )
        .values(promoted_at=utcnow())
        .returning(ModelVersion.id)
    ).first()
    if updated is None:
        raise NotFound("No ready policy version with this id")
    version = db.get(ModelVersion, version_id)
    db.refresh(version)
    return version
