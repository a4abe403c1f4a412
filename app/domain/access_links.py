"""One-time access links: invitations that create an account, and password resets.

An admin hands a link out; whoever holds it may use it once, before it expires. The URL carries a
random 256-bit token and only its SHA-256 digest is stored (as for sessions and API keys), so a
copy of the database opens nothing. Using a link is one compare-and-set UPDATE, so of two
concurrent redemptions of the same link exactly one succeeds.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy import ColumnElement, and_, select, update
from sqlalchemy.orm import Session

from app import security
from app.config import Settings
from app.domain import accounts
from app.errors import NotFound
from app.models import AccessLink, LinkPurpose, Role, User, utcnow

LINK_UNUSABLE = "This link is invalid, has expired or was already used; ask an admin for a new one."
"""One answer for unknown, expired, used and revoked links, so a visitor learns nothing more."""
LINK_UNUSABLE_CODE = "link_unusable"
"""Its code, by which the link pages say it in the visitor's language."""
PATHS = {LinkPurpose.INVITATION: "/invite/", LinkPurpose.PASSWORD_RESET: "/reset/"}


@dataclass(frozen=True)
class IssuedLink:
    """A link just created, with its path: the only moment its token exists on the server."""

    link: AccessLink
    path: str

    def url(self, base_url: str) -> str:
        return base_url.rstrip("/") + self.path


def create_invitation(
    db: Session, *, role: Role, note: str, created_by: User | None, settings: Settings
) -> IssuedLink:
    link = AccessLink(purpose=LinkPurpose.INVITATION, role=role, note=note)
    return _issue(db, link, created_by=created_by, hours=settings.invitation_hours)


def create_password_reset(
    db: Session, *, user: User, created_by: User | None, settings: Settings
) -> IssuedLink:
    """A reset link for `user`; their earlier unused reset links stop working."""
    db.execute(
        update(AccessLink)
        .where(
            AccessLink.purpose == LinkPurpose.PASSWORD_RESET,
            AccessLink.user_id == user.id,
            _pending(),
        )
        .values(revoked_at=utcnow())
    )
    link = AccessLink(purpose=LinkPurpose.PASSWORD_RESET, user_id=user.id)
    return _issue(db, link, created_by=created_by, hours=settings.password_reset_hours)


def _issue(db: Session, link: AccessLink, *, created_by: User | None, hours: float) -> IssuedLink:
    token = security.new_token()
    link.token_hash = security.token_digest(token)
    link.created_by_id = created_by.id if created_by else None
    link.expires_at = utcnow() + timedelta(hours=hours)
    db.add(link)
    db.flush()
    return IssuedLink(link=link, path=PATHS[link.purpose] + token)


def _pending() -> ColumnElement[bool]:
    return and_(
        AccessLink.used_at.is_(None),
        AccessLink.revoked_at.is_(None),
        AccessLink.expires_at > utcnow(),
    )


def pending_invitations(db: Session) -> list[AccessLink]:
    return list(
        db.scalars(
            select(AccessLink)
            .where(AccessLink.purpose == LinkPurpose.INVITATION, _pending())
            .order_by(AccessLink.created_at.desc(), AccessLink.id.desc())
        )
    )


def revoke_invitation(db: Session, *, link_id: int) -> None:
    """Make an invitation unusable; revoking a used or revoked one changes nothing."""
    link = db.scalar(
        select(AccessLink).where(
            AccessLink.id == link_id, AccessLink.purpose == LinkPurpose.INVITATION
        )
    )
    if link is None:
        raise NotFound("Invitation not found")
    if link.used_at is None and link.revoked_at is None:
        link.revoked_at = utcnow()


def usable_link(db: Session, *, token: str, purpose: LinkPurpose) -> AccessLink:
    """The pending link behind `token`, for showing its form (showing does not use it)."""
    link = db.scalar(select(AccessLink).where(*_matching(token, purpose), _pending()))
    if link is None:
        raise NotFound(LINK_UNUSABLE, code=LINK_UNUSABLE_CODE)
    return link


def accept_invitation(db: Session, *, token: str, username: str, password: str) -> User:
    """Create the invited account with the invitation's role; a taken username (`Conflict`)
    leaves the link unused, so the invitee can pick another."""
    with db.begin_nested():  # an error below also takes back the claim on the link
        link = _claim(db, token=token, purpose=LinkPurpose.INVITATION)
        assert link.role is not None  # a CHECK constraint: invitations carry a role
        user = accounts.create_user(db, username=username, password=password, role=link.role)
        db.flush()
        link.user_id = user.id
    return user


def reset_password(db: Session, *, token: str, password: str) -> User:
    """Set the new password and sign the account out everywhere: its browser sessions end and
    its login tokens are revoked, so whoever knew the old password keeps no way in."""
    link = _claim(db, token=token, purpose=LinkPurpose.PASSWORD_RESET)
    assert link.user_id is not None  # a CHECK constraint: resets name their user
    user = accounts.get_user(db, user_id=link.user_id)
    user.password_hash = security.hash_password(password)
    accounts.end_user_sessions(db, user=user)
    return user


def _matching(token: str, purpose: LinkPurpose) -> tuple[ColumnElement[bool], ...]:
    return AccessLink.token_hash == security.token_digest(token), AccessLink.purpose == purpose


def _claim(db: Session, *, token: str, purpose: LinkPurpose) -> AccessLink:
    """Mark the link used if it is still pending, in one UPDATE: a concurrent claim waits for
    this row (PostgreSQL row lock, SQLite write lock), then finds it used and matches nothing."""
    link = db.scalars(
        update(AccessLink)
        .where(*_matching(token, purpose), _pending())
        .values(used_at=utcnow())
        .returning(AccessLink)
    ).one_or_none()
    if link is None:
        raise NotFound(LINK_UNUSABLE, code=LINK_UNUSABLE_CODE)
    return link
