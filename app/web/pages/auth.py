"""Signing in and out: the login page, session cookies, logout, and `/api/auth` for scripts
(login tokens: issued, listed and revoked)."""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated

from fastapi import APIRouter, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from sqlalchemy.orm import Session

from app.config import Settings
from app.domain import accounts
from app.errors import RateLimited, Unauthenticated
from app.models import KeyScope, User, utcnow
from app.schemas import (
    ApiKeyOut,
    RowId,
    TokenRequest,
    TokenResponse,
    UserOut,
    error_responses,
)
from app.web import throttles
from app.web.deps import (
    SESSION_COOKIE,
    CurrentUser,
    DbSession,
    OptionalPagePrincipal,
    PageUser,
    PublicRoute,
    SettingsDep,
    client_address,
)
from app.web.i18n import translate
from app.web.public_forms import PublicForm, is_https
from app.web.templating import page_language

router = APIRouter()

INVALID_CREDENTIALS = "Incorrect username or password"
LOGIN_FORM = PublicForm(purpose="login", path="/login", field="login_token")
LOGIN_NOTICES = frozenset({"account-created", "password-reset"})
"""What `/login?notice=...` may say (`auth.notice.<name>` in `app.web.i18n`); a fixed list, so
that a link cannot put words on the page."""


def verify_login(
    db: Session, settings: Settings, *, username: str, password: str, address: str
) -> User:
    """The user for these credentials. Every failure counts against the username from this
    address, the account and the address (`app.web.throttles`); while any of them is locked, even
    the right password gets 429, and an unknown username is counted just like a known one."""
    counters = throttles.login_counters(settings, username=username, address=address)
    throttles.ensure_allowed(db, counters, message=throttles.TOO_MANY_LOGINS)
    user = accounts.authenticate_user(db, username=username, password=password)
    if user is None:
        throttles.record_failure(db, counters)
        db.commit()
        raise Unauthenticated(INVALID_CREDENTIALS)
    throttles.forgive(db, counters[0])  # a typo or two from here is no attack
    return user


def safe_next_path(target: str | None) -> str:
    """Only same-site paths may follow a login, so the form cannot be used to redirect away."""
    if target and target.startswith("/") and not target.startswith("//") and "\\" not in target:
        return target
    return "/"


def _login_form(
    request: Request,
    settings: Settings,
    *,
    next_path: str,
    error: str | None = None,
    notice: str | None = None,
    status_code: int = 200,
    headers: dict[str, str] | None = None,
) -> HTMLResponse:
    context = {
        "next_path": safe_next_path(next_path),
        "error": error,
        "notice": notice,
    }
    return LOGIN_FORM.render(
        request, settings, "login.html", context, status_code=status_code, headers=headers
    )


@router.get("/login", dependencies=[PublicRoute], response_class=HTMLResponse)
def login_page(
    request: Request,
    settings: SettingsDep,
    principal: OptionalPagePrincipal,
    next: str = "/",
    notice: str = "",
) -> Response:
    """The login form (HTML), which signs in and goes on to `next`; a browser already signed
    in goes there at once (303)."""
    if principal is not None:
        return RedirectResponse(safe_next_path(next), status_code=303)
    known = notice if notice in LOGIN_NOTICES else None
    return _login_form(request, settings, next_path=next, notice=known)


@router.post(
    "/login",
    dependencies=[PublicRoute],
    response_class=HTMLResponse,
    responses=error_responses(401, 403, 429),
)
def login(
    request: Request,
    db: DbSession,
    settings: SettingsDep,
    username: Annotated[str, Form(max_length=64)],
    password: Annotated[str, Form(max_length=256)],
    login_token: Annotated[str, Form(max_length=500)] = "",
    next: Annotated[str, Form(max_length=2000)] = "/",
) -> Response:
    """Sign a browser in from the login form: sets the session cookie and redirects (303) to
    `next` (a path on this site). A wrong username or password shows the form again with 401,
    a form not sent by this site with 403; repeated failures lock the username and the address
    for a while (429 with `Retry-After`)."""
    language = page_language(request)
    if not LOGIN_FORM.verify(request, settings, login_token):
        error = translate(language, "auth.form_expired")
        return _login_form(request, settings, next_path=next, error=error, status_code=403)
    try:
        user = verify_login(
            db,
            settings,
            username=username,
            password=password,
            address=client_address(request),
        )
    except (Unauthenticated, RateLimited) as exc:
        return _login_form(
            request,
            settings,
            next_path=next,
            error=translate(language, "auth.invalid")
            if isinstance(exc, Unauthenticated)
            else exc.detail,
            status_code=exc.status_code,
            headers=exc.headers,
        )
    # Rotate: a session that existed before login (possibly planted) never becomes authenticated.
    if previous_token := request.cookies.get(SESSION_COOKIE):
        accounts.end_web_session(db, token=previous_token)
    _, token = accounts.create_web_session(
        db, user=user, ttl=timedelta(hours=settings.session_hours)
    )
    db.commit()
    response = RedirectResponse(safe_next_path(next), status_code=303)
    response.set_cookie(
        SESSION_COOKIE,
        token,
        max_age=int(settings.session_hours * 3600),
        httponly=True,
        samesite="lax",
        secure=is_https(request),
    )
    LOGIN_FORM.forget(response)
    return response


@router.post("/logout")
def logout(request: Request, db: DbSession, user: PageUser) -> RedirectResponse:
    """End the browser's session and go to the login page (303)."""
    if token := request.cookies.get(SESSION_COOKIE):
        accounts.end_web_session(db, token=token)
        db.commit()
    response = RedirectResponse("/login", status_code=303)
    response.delete_cookie(SESSION_COOKIE)
    return response


@router.post(
    "/api/auth/token", dependencies=[PublicRoute], responses=error_responses(401, 403, 422, 429)
)
def issue_token(
    request: Request, body: TokenRequest, db: DbSession, settings: SettingsDep
) -> TokenResponse:
    """Exchange a username and password for a bearer token that expires with a session, with
    the scope asked for (by default the user's role). Signing out everywhere (a password reset,
    a disabled account) or `DELETE /api/auth/tokens/{id}` revokes it. 401 for a wrong username
    or password, 403 for a scope beyond the user's role, 429 with `Retry-After` after repeated
    failures for the username or from the address."""
    user = verify_login(
        db,
        settings,
        username=body.username,
        password=body.password,
        address=client_address(request),
    )
    expires_at = utcnow() + timedelta(hours=settings.session_hours)
    scope = body.scope or KeyScope.of_role(user.role)
    _, token = accounts.create_api_key(
        db, user=user, name="login token", scope=scope, expires_at=expires_at
    )
    db.commit()
    return TokenResponse(access_token=token, expires_at=expires_at, scope=scope)


@router.get("/api/auth/tokens", responses=error_responses(401, 403, 429))
def list_login_tokens(db: DbSession, user: CurrentUser) -> list[ApiKeyOut]:
    """The caller's login tokens that still work (never the tokens themselves)."""
    return [ApiKeyOut.model_validate(token) for token in accounts.list_login_tokens(db, user=user)]


@router.delete(
    "/api/auth/tokens/{token_id}", status_code=204, responses=error_responses(401, 403, 404, 429)
)
def revoke_login_token(token_id: RowId, db: DbSession, user: CurrentUser) -> Response:
    """Revoke one of the caller's login tokens at once; anyone else's id is not found."""
    accounts.revoke_login_token(db, user=user, token_id=token_id)
    db.commit()
    return Response(status_code=204)


@router.get("/api/auth/me", responses=error_responses(401, 403, 429))
def who_am_i(user: CurrentUser) -> UserOut:
    """The caller's account: id, username, role and language."""
    return UserOut.model_validate(user)
