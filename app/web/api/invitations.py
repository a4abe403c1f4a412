"""`/api/invitations`: one-time links that let someone create an account with a given role
(admins)."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response

from app.domain import access_links
from app.schemas import InvitationCreate, InvitationIssued, InvitationOut, RowId
from app.web.deps import AdminUser, DbSession, SettingsDep

router = APIRouter(prefix="/api/invitations", tags=["users"])


@router.get("")
def list_invitations(db: DbSession, admin: AdminUser) -> list[InvitationOut]:
    """Invitations not yet used, revoked or expired, newest first (never their links, which
    were shown once, when created)."""
    return [InvitationOut.model_validate(link) for link in access_links.pending_invitations(db)]


@router.post("", status_code=201)
def create_invitation(
    body: InvitationCreate, request: Request, db: DbSession, settings: SettingsDep, admin: AdminUser
) -> InvitationIssued:
    """Invite someone with a role (and a note for the admins): answers 201 with the one-time
    link, shown this once, and when it expires. Whoever opens the link chooses a username and
    a password."""
    issued = access_links.create_invitation(
        db, role=body.role, note=body.note, created_by=admin, settings=settings
    )
    db.commit()
    return InvitationIssued(
        id=issued.link.id,
        url=issued.url(str(request.base_url)),
        expires_at=issued.link.expires_at,
    )


@router.delete("/{invitation_id}", status_code=204)
def revoke_invitation(invitation_id: RowId, db: DbSession, admin: AdminUser) -> Response:
    """Make an invitation's link unusable at once (a used or revoked one stays as it is)."""
    access_links.revoke_invitation(db, link_id=invitation_id)
    db.commit()
    return Response(status_code=204)
