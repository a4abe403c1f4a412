"""Browser pages for the signed-in user's account (`/account`): language, API keys and login
tokens."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse
from sqlalchemy.orm import Session

from app.domain import accounts
from app.errors import InvalidInput
from app.models import KeyScope, User
from app.schemas import ApiKeyCreate, RowId, form_input
from app.web.deps import DbSession, PageCaller, PageUser
from app.web.i18n import LANGUAGES
from app.web.pages.auth import safe_next_path
from app.web.templating import render

router = APIRouter()


@router.get("/account", response_class=HTMLResponse)
def account(request: Request, db: DbSession, user: PageUser) -> HTMLResponse:
    """The signed-in user's account page (HTML): their language, API keys and login tokens,
    with forms to create a key and to revoke one."""
    return _account_page(request, db, user)


@router.post("/account/keys", response_class=HTMLResponse, status_code=201)
def create_key(
    request: Request,
    db: DbSession,
    caller: PageCaller,
    name: Annotated[str, Form(min_length=1, max_length=100)],
    scope: Annotated[str, Form(max_length=16)] = KeyScope.INFERENCE.value,
) -> HTMLResponse:
    """Create an API key from the account page: answers the page with the new key, shown this
    once (201). 403 for a scope beyond the user's role."""
    body = form_input(ApiKeyCreate, name=name.strip() or "key", scope=scope)
    api_key, key = accounts.create_api_key(
        db, user=caller.user, name=body.name, scope=body.scope, at_most=caller.power
    )
    db.commit()
    return _account_page(request, db, caller.user, new_key=key, new_key_name=api_key.name)


def _account_page(
    request: Request,
    db: Session,
    user: User,
    *,
    new_key: str | None = None,
    new_key_name: str | None = None,
) -> HTMLResponse:
    context = {
        "keys": accounts.list_api_keys(db, user=user),
        "login_tokens": accounts.list_login_tokens(db, user=user),
        "scopes": KeyScope.up_to(KeyScope.of_role(user.role)),
        "new_key": new_key,
        "new_key_name": new_key_name,
    }
    return render(request, "account.html", context, status_code=201 if new_key else 200)


@router.post("/account/language")
def set_language(
    db: DbSession,
    user: PageUser,
    language: Annotated[str, Form(max_length=8)],
    next: Annotated[str, Form(max_length=2000)] = "/account",
) -> RedirectResponse:
    """Choose the language of the user's pages, then back to the page the switch was on (303):
    `next`, a path on this site (anything else goes to the start page, so the form cannot
    redirect away). 422 for a language the site does not offer."""
    if language not in LANGUAGES:
        raise InvalidInput(f"Unknown language {language!r}")
    user.locale = language
    db.commit()
    return RedirectResponse(safe_next_path(next), status_code=303)


@router.post("/account/keys/{key_id}/revoke")
def revoke_key(key_id: RowId, db: DbSession, user: PageUser) -> RedirectResponse:
    """Revoke one of the user's API keys or login tokens at once, then back to the account page
    (303); 404 when it is not theirs."""
    accounts.revoke_api_key(db, user=user, key_id=key_id)
    db.commit()
    return RedirectResponse("/account", status_code=303)
