"""Admin pages: users (`/admin/users`): accounts, lockouts, invitations, password-reset links,
API keys.

Forms post and redirect back to the page, except where a secret (a link, a key) must be shown
once: then the response is the page itself with the secret, which no later request can show.
"""

from __future__ import annotations

from typing import Annotated, NamedTuple

from fastapi import APIRouter, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse
from sqlalchemy.orm import Session

from app.domain import access_links, accounts
from app.models import KeyScope, Role
from app.schemas import ApiKeyCreate, InvitationCreate, RowId, UserCreate, form_input
from app.web import throttles
from app.web.deps import DbSession, PageAdmin, SettingsDep
from app.web.templating import render

router = APIRouter(prefix="/admin")

PAGE = "/admin/users"
ShortText = Annotated[str, Form(max_length=256)]


class ShownOnce(NamedTuple):
    """A secret for the page to show this one time, with what it is: the catalogue key of its
    label (`admin.users.shown.*`) and the label's fields, so the page says it in the admin's
    language."""

    label: str
    fields: dict[str, str]
    secret: str


@router.get("/users", response_class=HTMLResponse)
def users_page(request: Request, db: DbSession, admin: PageAdmin) -> HTMLResponse:
    """The users page (HTML): every account with its API keys, the pending invitations, and the
    forms that manage them."""
    return _users_page(request, db)


@router.post("/users")
def create_user(
    db: DbSession,
    admin: PageAdmin,
    username: ShortText = "",
    password: ShortText = "",
    role: ShortText = "",
) -> RedirectResponse:
    """Create an account, as `POST /api/users` does, then back to the users page (303); 409
    when the username is taken, 422 for invalid fields."""
    body = form_input(UserCreate, username=username, password=password, role=role)
    accounts.create_user(db, username=body.username, password=body.password, role=body.role)
    db.commit()
    return RedirectResponse(PAGE, status_code=303)


@router.post("/users/{user_id}/status")
def set_user_status(
    user_id: RowId, db: DbSession, admin: PageAdmin, is_active: Annotated[bool, Form()]
) -> RedirectResponse:
    """Disable (signing the account out at once) or enable an account, then back to the users
    page (303); 409 for the admin's own account."""
    user = accounts.get_user(db, user_id=user_id)
    accounts.update_user(db, user=user, acting=admin, is_active=is_active)
    db.commit()
    return RedirectResponse(PAGE, status_code=303)


@router.post("/users/{user_id}/unlock")
def unlock_user(user_id: RowId, db: DbSession, admin: PageAdmin) -> RedirectResponse:
    """Lift the lockout that wrong passwords put on the account, so it can sign in at once,
    then back to the users page (303)."""
    throttles.unlock_account(db, username=accounts.get_user(db, user_id=user_id).username)
    db.commit()
    return RedirectResponse(PAGE, status_code=303)


@router.post("/users/{user_id}/reset-link", response_class=HTMLResponse, status_code=201)
def create_reset_link(
    request: Request, user_id: RowId, db: DbSession, settings: SettingsDep, admin: PageAdmin
) -> HTMLResponse:
    """Make a password-reset link for the user, as `POST /api/users/{id}/password-reset` does:
    answers the users page with the link, shown this once (201)."""
    user = accounts.get_user(db, user_id=user_id)
    issued = access_links.create_password_reset(db, user=user, created_by=admin, settings=settings)
    db.commit()
    label = "admin.users.shown.reset_link"
    url = issued.url(str(request.base_url))
    return _users_page(request, db, ShownOnce(label, {"username": user.username}, url))


@router.post("/users/{user_id}/keys", response_class=HTMLResponse, status_code=201)
def create_key(
    request: Request,
    user_id: RowId,
    db: DbSession,
    admin: PageAdmin,
    name: ShortText = "",
    scope: ShortText = KeyScope.INFERENCE.value,
) -> HTMLResponse:
    """Create an API key for the user: answers the users page with the key, shown this once
    (201). 403 for a scope beyond the user's role."""
    user = accounts.get_user(db, user_id=user_id)
    body = form_input(ApiKeyCreate, name=name, scope=scope)
    api_key, key = accounts.create_api_key(db, user=user, name=body.name, scope=body.scope)
    db.commit()
    fields = {"name": api_key.name, "username": user.username}
    return _users_page(request, db, ShownOnce("admin.users.shown.api_key", fields, key))


@router.post("/users/{user_id}/keys/{key_id}/revoke")
def revoke_key(user_id: RowId, key_id: RowId, db: DbSession, admin: PageAdmin) -> RedirectResponse:
    """Revoke one of the user's API keys at once, then back to the users page (303)."""
    accounts.revoke_api_key(db, user=accounts.get_user(db, user_id=user_id), key_id=key_id)
    db.commit()
    return RedirectResponse(PAGE, status_code=303)


@router.post("/invitations", response_class=HTMLResponse, status_code=201)
def create_invitation(
    request: Request,
    db: DbSession,
    settings: SettingsDep,
    admin: PageAdmin,
    role: ShortText = "",
    note: ShortText = "",
) -> HTMLResponse:
    """Invite someone with a role: answers the users page with the one-time link, shown this
    once (201)."""
    body = form_input(InvitationCreate, role=role, note=note)
    issued = access_links.create_invitation(
        db, role=body.role, note=body.note, created_by=admin, settings=settings
    )
    db.commit()
    label = f"admin.users.shown.invitation.{body.role.value}"
    return _users_page(request, db, ShownOnce(label, {}, issued.url(str(request.base_url))))


@router.post("/invitations/{invitation_id}/revoke")
def revoke_invitation(invitation_id: RowId, db: DbSession, admin: PageAdmin) -> RedirectResponse:
    """Make an invitation's link unusable at once, then back to the users page (303)."""
    access_links.revoke_invitation(db, link_id=invitation_id)
    db.commit()
    return RedirectResponse(PAGE, status_code=303)


def _users_page(request: Request, db: Session, shown_once: ShownOnce | None = None) -> HTMLResponse:
    context = {
        "accounts": accounts.list_users(db),
        "keys": accounts.api_keys_by_user(db),
        "locks": throttles.account_locks(db),
        "invitations": access_links.pending_invitations(db),
        "roles": [role.value for role in Role],
        "scopes_by_role": {role: KeyScope.up_to(KeyScope.of_role(role)) for role in Role},
        "shown_once": shown_once,
    }
    return render(request, "admin/users.html", context, status_code=201 if shown_once else 200)
