"""Request dependencies: database session, settings, and who is calling with which role.

Every route declares its audience with exactly one of the aliases at the bottom (`PublicRoute`,
`CurrentUser` or `Caller`, `RaterUser`, `AdminUser`, or their `Page*` forms for browser pages).
Cookie authentication and CSRF are checked together here, so a state-changing route that accepts
a browser session cannot forget the CSRF check: it is part of being authenticated.

A caller with an API key acts with the lesser of the owner's role and the key's scope: an
`inference` key reaches `/v1` only, and an admin's `rater` key no admin route. Invalid keys are
throttled per client address (`app.web.throttles`). Verified credentials are remembered for a few
seconds (`app.domain.credentials`), so most requests authenticate without the database; the rater
API's hot path (`RaterCredential`) then needs no database session at all.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Annotated, Literal, NamedTuple
from urllib.parse import urlsplit

import anyio
from fastapi import Depends, Request
from sqlalchemy.orm import Session
from starlette.datastructures import FormData

from app import security
from app.config import Settings
from app.domain import accounts
from app.domain.credentials import REMEMBERED, Credential
from app.errors import LoginRequired, PermissionDenied, Unauthenticated
from app.models import KeyScope, Role, User
from app.web import throttles

SESSION_COOKIE = "alignloop_session"
CSRF_HEADER = "x-csrf-token"
CSRF_FORM_FIELD = "csrf_token"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
FORM_CONTENT_TYPES = ("application/x-www-form-urlencoded", "multipart/form-data")
RATER_ROLES = frozenset({Role.RATER, Role.ADMIN})
INVALID_KEY = "Invalid, expired or revoked API key"
INFERENCE_ONLY = (
    "This API key has the 'inference' scope, which serves /v1 only; use a key with the "
    "'rater' or 'admin' scope here."
)


async def get_settings(request: Request) -> Settings:
    return request.app.state.settings


def get_db(request: Request) -> Iterator[Session]:
    with request.app.state.session_factory() as session:
        yield session


SettingsDep = Annotated[Settings, Depends(get_settings)]
DbSession = Annotated[Session, Depends(get_db)]


@dataclass(frozen=True)
class Principal:
    """The authenticated caller as a user row, with the credential they proved it by."""

    user: User
    credential: Credential

    @property
    def api_key_id(self) -> int | None:
        return self.credential.api_key_id

    @property
    def scope(self) -> KeyScope | None:
        return self.credential.scope

    @property
    def csrf_token(self) -> str | None:
        return self.credential.csrf_token

    @property
    def power(self) -> KeyScope:
        return self.credential.power

    @property
    def role(self) -> Role | None:
        return self.credential.role


async def submitted_csrf_token(request: Request) -> str | None:
    """The CSRF token sent with an unsafe request, from the header or the form body.

    Async only to read the form; FastAPI caches the parsed form for the route's own parameters.
    """
    if request.method in SAFE_METHODS:
        return None
    if header := request.headers.get(CSRF_HEADER):
        return header
    if request.headers.get("content-type", "").startswith(FORM_CONTENT_TYPES):
        value = (await request.form()).get(CSRF_FORM_FIELD)
        return value if isinstance(value, str) else None
    return None


async def form_data(request: Request) -> FormData:
    """The parsed form body, for sync handlers that read fields by computed names."""
    return await request.form()


def bearer_token(request: Request) -> str | None:
    scheme, _, credentials = request.headers.get("authorization", "").partition(" ")
    return credentials.strip() if scheme.lower() == "bearer" and credentials.strip() else None


def client_address(request: Request) -> str:
    """The caller's address: the connection's peer, or the client that a trusted proxy names
    (uvicorn rewrites it only for `ALIGNLOOP_TRUSTED_PROXIES`)."""
    return request.client.host if request.client else "unknown"


def _verified_key(request: Request, db: Session, key: str, address: str) -> Credential:
    """Check a presented key against the database. An invalid one counts against the caller's
    address, and an address that sent too many gets 429 for any key until its lock ends, so
    that guessing stops there. A valid key writes nothing here but its last use (at most once
    a minute)."""
    counters = throttles.api_key_counters(request.app.state.settings, address=address)
    throttles.ensure_allowed(db, counters, message=throttles.TOO_MANY_INVALID_KEYS)
    api_key = accounts.get_api_key(db, key=key)
    if api_key is None:
        throttles.record_failure(db, counters)
        db.commit()
        REMEMBERED.forget_address(address)
        raise Unauthenticated(INVALID_KEY)
    credential = Credential.of_key(api_key)
    db.commit()  # last_used_at, when it moved on; and no transaction is held past this
    return credential


class Presented(NamedTuple):
    """A credential as a request presents it."""

    kind: Literal["session", "api_key"]
    token: str
    address: str
    """The client address a key is remembered under (none for a session)."""


def _presented(request: Request, *, cookies: bool = True) -> Presented | None:
    if (key := bearer_token(request)) is not None:
        return Presented("api_key", key, throttles.address_group(client_address(request)))
    if cookies and (token := request.cookies.get(SESSION_COOKIE)):
        return Presented("session", token, "")
    return None


def _recalled(presented: Presented | None) -> Credential | None:
    """The presented credential if this process verified it in the last few seconds."""
    if presented is None:
        return None
    return REMEMBERED.recall(security.token_digest(presented.token), presented.address)


def _verified(request: Request, db: Session, presented: Presented | None) -> Credential | None:
    """The presented credential, from memory or verified against the database (None for a
    session cookie that is unknown or ended: the caller is then not signed in)."""
    if presented is None:
        return None
    if (credential := _recalled(presented)) is not None:
        return credential
    kind, token, address = presented
    if kind == "api_key":
        credential = _verified_key(request, db, token, address)
    elif web_session := accounts.get_web_session(db, token=token):
        credential = Credential.of_session(web_session)
        db.commit()
    else:
        return None
    REMEMBERED.remember(security.token_digest(token), address, credential)
    return credential


def _checked(
    request: Request, credential: Credential | None, csrf_token: str | None, *, missing
) -> Credential:
    """The credential, refused when absent, when it is an `inference` key, or when a browser's
    write lacks its CSRF token or comes from another site."""
    if credential is None:
        raise missing()
    if credential.role is None:
        raise PermissionDenied(INFERENCE_ONLY)
    if credential.via == "session" and request.method not in SAFE_METHODS:
        _check_cookie_write(request, credential, csrf_token)
    return credential


def _principal(request: Request, db: Session, credential: Credential, *, missing) -> Principal:
    user = db.get(User, credential.user_id)
    if user is None:
        raise missing()
    principal = Principal(user=user, credential=credential)
    request.state.principal = principal
    return principal


def _authenticate(
    request: Request, db: Session, csrf_token: str | None, *, missing: type[Unauthenticated]
) -> Principal:
    credential = _verified(request, db, _presented(request))
    return _principal(
        request, db, _checked(request, credential, csrf_token, missing=missing), missing=missing
    )


def _check_cookie_write(request: Request, credential: Credential, csrf_token: str | None) -> None:
    """A browser's write must come from our own pages: the session's CSRF token, and an
    `Origin` (which browsers send with every cross-site POST) naming this host. A request
    without `Origin` (an older browser) still needs the token."""
    origin = request.headers.get("origin")
    if origin is not None and urlsplit(origin).netloc != request.headers.get("host"):
        raise PermissionDenied(f"Cross-site request refused (Origin {origin[:100]}).")
    if not security.tokens_match(credential.csrf_token, csrf_token):
        raise PermissionDenied("CSRF token missing or invalid; reload the page and retry.")


def current_principal(
    request: Request,
    db: DbSession,
    csrf_token: Annotated[str | None, Depends(submitted_csrf_token)],
) -> Principal:
    return _authenticate(request, db, csrf_token, missing=Unauthenticated)


def current_page_principal(
    request: Request,
    db: DbSession,
    csrf_token: Annotated[str | None, Depends(submitted_csrf_token)],
) -> Principal:
    return _authenticate(request, db, csrf_token, missing=LoginRequired)


def optional_page_principal(request: Request, db: DbSession) -> Principal | None:
    """The browser session's principal if there is one, for public pages such as the login form."""
    presented = _presented(request)
    if presented is None or presented.kind != "session":
        return None
    credential = _verified(request, db, presented)
    return (
        None if credential is None else _principal(request, db, credential, missing=LoginRequired)
    )


def api_key_principal(request: Request, db: DbSession) -> Principal:
    """Bearer API keys only, of any scope: `/v1` ignores cookies, so no browser session can be
    ridden."""
    presented = _presented(request, cookies=False)
    if presented is None:
        raise Unauthenticated("A valid API key is required (Authorization: Bearer <key>).")
    principal = _principal(request, db, _verified(request, db, presented), missing=Unauthenticated)
    db.commit()  # end the transaction: a generation can outlive it by minutes
    return principal


async def rater_credential(
    request: Request, csrf_token: Annotated[str | None, Depends(submitted_csrf_token)]
) -> Credential:
    """A rater's or admin's credential, without a database session: the rater API's hot path.
    Remembered credentials answer on the event loop; others are verified in a thread."""
    presented = _presented(request)
    credential = _recalled(presented)
    if credential is None and presented is not None:
        credential = await anyio.to_thread.run_sync(_verify_in_own_session, request, presented)
    credential = _checked(request, credential, csrf_token, missing=Unauthenticated)
    if credential.role not in RATER_ROLES:
        raise PermissionDenied("Your role does not allow this.")
    return credential


def _verify_in_own_session(request: Request, presented: Presented) -> Credential | None:
    with request.app.state.session_factory() as db:
        return _verified(request, db, presented)


def _require(*roles: Role, principal_dependency):
    allowed = frozenset(roles)
    least = min((KeyScope.of_role(role) for role in roles), key=list(KeyScope).index)

    # A default, not `Annotated`: string annotations cannot see this closure's variables.
    async def require_role(principal: Principal = Depends(principal_dependency)) -> User:
        if principal.user.role not in allowed:
            raise PermissionDenied("Your role does not allow this.")
        if principal.role not in allowed:
            raise PermissionDenied(
                f"This API key has the '{principal.scope}' scope, which does not allow this; "
                f"it needs a key with the '{least}' scope."
            )
        return principal.user

    return require_role


async def public_route() -> None:
    """Marks a route that anyone may call; see the module docstring."""


async def _user(principal: Annotated[Principal, Depends(current_principal)]) -> User:
    return principal.user


async def _page_user(principal: Annotated[Principal, Depends(current_page_principal)]) -> User:
    return principal.user


require_rater = _require(Role.RATER, Role.ADMIN, principal_dependency=current_principal)
require_admin = _require(Role.ADMIN, principal_dependency=current_principal)
require_page_rater = _require(Role.RATER, Role.ADMIN, principal_dependency=current_page_principal)
require_page_admin = _require(Role.ADMIN, principal_dependency=current_page_principal)

PublicRoute = Depends(public_route)
CurrentUser = Annotated[User, Depends(_user)]
Caller = Annotated[Principal, Depends(current_principal)]
"""Any signed-in caller, with how they proved it (for what depends on a key's scope)."""
PageCaller = Annotated[Principal, Depends(current_page_principal)]
RaterUser = Annotated[User, Depends(require_rater)]
AdminUser = Annotated[User, Depends(require_admin)]
PageUser = Annotated[User, Depends(_page_user)]
PageRater = Annotated[User, Depends(require_page_rater)]
PageAdmin = Annotated[User, Depends(require_page_admin)]
ApiKeyPrincipal = Annotated[Principal, Depends(api_key_principal)]
RaterCredential = Annotated[Credential, Depends(rater_credential)]
"""A rater's or admin's credential, with no database session (the rater API's hot path)."""
OptionalPagePrincipal = Annotated[Principal | None, Depends(optional_page_principal)]
Form = Annotated[FormData, Depends(form_data)]

ROLE_DEPENDENCIES = frozenset(
    {
        public_route,
        _user,
        _page_user,
        current_principal,
        current_page_principal,
        require_rater,
        require_admin,
        require_page_rater,
        require_page_admin,
        api_key_principal,
        rater_credential,
    }
)
"""Every route must depend on one of these (checked by a test that walks the routes)."""
