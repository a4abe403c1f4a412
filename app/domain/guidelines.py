"""The rating guidelines: one published version at a time, each kept, published against
the version its editor saw; and the shipped default text with its translations."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.orm import Session

from app.domain import preconditions
from app.errors import Conflict
from app.models import (
    GuidelineVersion,
    User,
)

SHIPPED_GUIDELINES = Path(__file__).resolve().parents[1] / "default_guidelines.md"
"""Published as version 1 on first start (`bootstrap.publish_default_guidelines`)."""
SHIPPED_TRANSLATIONS = {"zh": SHIPPED_GUIDELINES.with_name("default_guidelines.zh.md")}
"""The shipped text in other interface languages, shown in place of the English one."""


@dataclass(frozen=True)
class GuidelinesText:
    """A guidelines version as one reader sees it."""

    version: int
    created_at: datetime
    body: str


def current_guidelines(db: Session) -> GuidelineVersion | None:
    return db.scalar(select(GuidelineVersion).order_by(GuidelineVersion.version.desc()).limit(1))


def guidelines_for_reader(db: Session, *, language: str) -> GuidelinesText | None:
    """The current guidelines in the reader's language when they are still the shipped text:
    a version stores one text, so a translation exists only for the text we ship, and an
    admin's own guidelines show as they wrote them. Judgements keep recording the version."""
    current = current_guidelines(db)
    if current is None:
        return None
    body = current.body
    translation = SHIPPED_TRANSLATIONS.get(language)
    if translation is not None and _same_text(body, SHIPPED_GUIDELINES.read_text("utf-8")):
        body = translation.read_text("utf-8")
    return GuidelinesText(version=current.version, created_at=current.created_at, body=body)


def _same_text(published: str, shipped: str) -> bool:
    """Equal apart from line endings and surrounding blank space, which a browser's text box
    changes when an admin saves the shipped text again unedited."""
    return published.replace("\r\n", "\n").strip() == shipped.strip()


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
        self.based_on = based_on


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
