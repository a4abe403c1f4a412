"""The rating guidelines: one published version at a time, each kept, published against
the version its editor saw."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from app.domain import preconditions
from app.errors import Conflict
from app.models import (
    GuidelineVersion,
    User,
)


def current_guidelines(db: Session) -> GuidelineVersion | None:
    return db.scalar(select(GuidelineVersion).order_by(GuidelineVersion.version.desc()).limit(1))


def get_guidelines(db: Session, *, version: int) -> GuidelineVersion | None:
    return db.scalar(select(GuidelineVersion).where(GuidelineVersion.version == version))


class StaleGuidelines(Conflict):
    """The editor started from an older version than the one published since."""

    def __init__(self, published: GuidelineVersion, based_on: int) -> None:
        super().__init__(
            f"Version {published.version} was published after the version {based_on} you "
            "edited; compare both, then publish again."
        )
        self.published = published


def publish_guidelines(
    db: Session, *, body: str, author: User | None, based_on: int | None = None
) -> GuidelineVersion:
    """A new guideline version; earlier versions stay, as judgements refer to them.
    `based_on`, the version the editor started from (0 for none), must still be the latest:
    otherwise `StaleGuidelines`, so that one admin never silently overwrites another."""
    preconditions.serialise(db, "guidelines")
    latest = current_guidelines(db)
    if based_on is not None and based_on != (latest.version if latest else 0):
        raise StaleGuidelines(latest, based_on)
    guideline = GuidelineVersion(
        version=(latest.version + 1) if latest else 1,
        body=body,
        created_by_id=author.id if author else None,
    )
    db.add(guideline)
    db.flush()
    return guideline
