"""The public pages behind one-time links: accepting an invitation (`/invite/{token}`) and
choosing a new password (`/reset/{token}`).

Nobody is signed in here, so the forms carry the login form's kind of CSRF token. An unknown,
expired, used or revoked link always gets the same 404 page.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from sqlalchemy.orm import Session

from app.config import Settings
from app.domain import access_links, accounts
from app.errors import Conflict, InvalidInput, PermissionDenied
from app.models import AccessLink, LinkPurpose
from app.schemas import AccountForm, PasswordForm, form_input
from app.web.deps import DbSession, PublicRoute, SettingsDep
from app.web.i18n import translate
from app.web.public_forms import PublicForm
from app.web.templating import page_language

router = APIRouter()

INVITE_FORM = PublicForm(purpose="invite", path="/invite")
RESET_FORM = PublicForm(purpose="reset", path="/reset")

UsernameField = Annotated[str, Form(max_length=64)]
PasswordField = Annotated[str, Form(max_length=256)]
FormTokenField = Annotated[str, Form(max_length=500)]


@router.get("/invite/{token}", dependencies=[PublicRoute], response_class=HTMLResponse)
def invitation_page(
    request: Request, token: str, db: DbSession, settings: SettingsDep
) -> HTMLResponse:
    """The invitation's form (HTML), for anyone with the link: choose a username and a password
    for an account with the invited role. 404 for a link that is unknown, expired, used or
    revoked."""
    link = access_links.usable_link(db, token=token, purpose=LinkPurpose.INVITATION)
    return _invitation_form(request, settings, link)


@router.post("/invite/{token}", dependencies=[PublicRoute], response_class=HTMLResponse)
def accept_invitation(
    request: Request,
    token: str,
    db: DbSession,
    settings: SettingsDep,
    username: UsernameField = "",
    password: PasswordField = "",
    password_again: PasswordField = "",
    form_token: FormTokenField = "",
) -> Response:
    """Create the invited account and go to the login page (303), which says so; the link is
    then used up. An invalid or taken username, or passwords that differ, show the form again
    with what to change (422 or 409), a form not sent by this site with 403; the link stays
    usable. 404 as for the form."""
    link = access_links.usable_link(db, token=token, purpose=LinkPurpose.INVITATION)
    try:
        _check_form_token(INVITE_FORM, request, settings, form_token)
        account = form_input(
            AccountForm, username=username, password=password, password_again=password_again
        )
        access_links.accept_invitation(
            db, token=token, username=account.username, password=account.password
        )
    except (PermissionDenied, InvalidInput, Conflict) as exc:  # a taken name leaves the link
        return _invitation_form(
            request, settings, link, error=exc.detail, status_code=exc.status_code
        )
    db.commit()
    return _done(INVITE_FORM, notice="account-created")


@router.get("/reset/{token}", dependencies=[PublicRoute], response_class=HTMLResponse)
def password_reset_page(
    request: Request, token: str, db: DbSession, settings: SettingsDep
) -> HTMLResponse:
    """The password-reset form (HTML), for anyone with the link: choose a new password for the
    account it names. 404 for a link that is unknown, expired, used or revoked."""
    link = access_links.usable_link(db, token=token, purpose=LinkPurpose.PASSWORD_RESET)
    return _reset_form(request, settings, db, link)


@router.post("/reset/{token}", dependencies=[PublicRoute], response_class=HTMLResponse)
def reset_password(
    request: Request,
    token: str,
    db: DbSession,
    settings: SettingsDep,
    password: PasswordField = "",
    password_again: PasswordField = "",
    form_token: FormTokenField = "",
) -> Response:
    """Set the new password, sign the account out everywhere (sessions and login tokens) and go
    to the login page (303), which says so; the link is then used up. An invalid password, or
    passwords that differ, show the form again (422), a form not sent by this site with 403.
    404 as for the form."""
    link = access_links.usable_link(db, token=token, purpose=LinkPurpose.PASSWORD_RESET)
    try:
        _check_form_token(RESET_FORM, request, settings, form_token)
        new = form_input(PasswordForm, password=password, password_again=password_again)
    except (PermissionDenied, InvalidInput) as exc:
        return _reset_form(
            request, settings, db, link, error=exc.detail, status_code=exc.status_code
        )
    access_links.reset_password(db, token=token, password=new.password)
    db.commit()
    return _done(RESET_FORM, notice="password-reset")


def _check_form_token(form: PublicForm, request: Request, settings: Settings, signed: str) -> None:
    if not form.verify(request, settings, signed):
        raise PermissionDenied(translate(page_language(request), "links.form_expired"))


def _done(form: PublicForm, *, notice: str) -> RedirectResponse:
    """On to the login page, which says what happened (see `auth.LOGIN_NOTICES`)."""
    response = RedirectResponse(f"/login?notice={notice}", status_code=303)
    form.forget(response)
    return response


def _invitation_form(
    request: Request,
    settings: Settings,
    link: AccessLink,
    *,
    error: str | None = None,
    status_code: int = 200,
) -> HTMLResponse:
    context = {
        "role": link.role,
        "expires_at": link.expires_at,
        "error": error,
    }
    return INVITE_FORM.render(request, settings, "invite.html", context, status_code=status_code)


def _reset_form(
    request: Request,
    settings: Settings,
    db: Session,
    link: AccessLink,
    *,
    error: str | None = None,
    status_code: int = 200,
) -> HTMLResponse:
    assert link.user_id is not None
    account = accounts.get_user(db, user_id=link.user_id)
    context = {"account": account, "error": error}
    return RESET_FORM.render(request, settings, "reset.html", context, status_code=status_code)
