"""Request dependencies: database session, settings, and who is calling with which role.

Every route declares its audience with exactly one of the aliases at the bottom (`PublicRoute`,
`CurrentUser` or `Caller`, `RaterUser`, `AdminUser`, or their `Page*` forms for browser pages).
Cookie authentication and CSRF are checked together here, so a state-changing route that accepts
a browser session cannot forget the CSRF check: it is part of being authenticated.

A caller with an API key acts with the lesser of the owner's role and the key's scope: an
`inference` key reaches `/v1` only, and an admin's `rater` key no admin route. Invalid keys are
throttled per client address (`app.throttles`).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Annotated, Literal
from urllib.parse import urlsplit

from fastapi import Depends, Request
from sqlalchemy.orm import Session
from starlette.datastructures import FormData

from app import crud, security, throttles
from app.config import Settings
from app.errors import LoginRequired, PermissionDenied, Unauthenticated
from app.models import ApiKey, KeyScope, Role, User, WebSession

SESSION_COOKIE = "alignloop_session"
CSRF_HEADER = "x-csrf-token"
CSRF_FORM_FIELD = "csrf_token"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
FORM_CONTENT_TYPES = ("application/x-www-form-urlencoded", "multipart/form-data")
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
    """The authenticated caller, how they proved it, and what that lets them do."""

    user: User
    via: Literal["session", "api_key"]
    web_session: WebSession | None = None
    api_key_id: int | None = None
    scope: KeyScope | None = None
    """The API key's scope; None for a browser session."""

    @classmethod
    def with_key(cls, api_key: ApiKey) -> Principal:
        return cls(user=api_key.user, via="api_key", api_key_id=api_key.id, scope=api_key.scope)

    @property
    def csrf_token(self) -> str | None:
        return self.web_session.csrf_token if self.web_session else None

    @property
    def power(self) -> KeyScope:
        """What the caller may do: the user's role, narrowed by the key's scope."""
        of_role = KeyScope.of_role(self.user.role)
        return of_role if self.scope is None else self.scope.narrowed_to(of_role)

    @property
    def role(self) -> Role | None:
        """The role the caller acts with; None for an `inference` key (`/v1` only)."""
        return None if self.power is KeyScope.INFERENCE else Role(self.power.value)


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


def _live_api_key(request: Request, db: Session, key: str) -> ApiKey:
    """The row of a presented key. An invalid one counts against the caller's address, and an
    address that sent too many gets 429 for any key until its lock ends, so that guessing
    stops there (checking reads only: a valid key writes nothing here)."""
    counters = throttles.api_key_counters(
        request.app.state.settings, address=client_address(request)
    )
    throttles.ensure_allowed(db, counters, message=throttles.TOO_MANY_INVALID_KEYS)
    api_key = crud.get_api_key(db, key=key)
    if api_key is None:
        throttles.record_failure(db, counters)
        db.commit()
        raise Unauthenticated(INVALID_KEY)
    return api_key


def _authenticate(
    request: Request, db: Session, csrf_token: str | None, *, missing: type[Unauthenticated]
) -> Principal:
    if (key := bearer_token(request)) is not None:
        api_key = _live_api_key(request, db, key)
        if db.dirty:  # last_used_at moved on (at most once a minute)
            db.commit()
        principal = Principal.with_key(api_key)
        if principal.role is None:
            raise PermissionDenied(INFERENCE_ONLY)
    elif (token := request.cookies.get(SESSION_COOKIE)) and (
        web_session := crud.get_web_session(db, token=token)
    ):
        if request.method not in SAFE_METHODS:
            _check_cookie_write(request, web_session, csrf_token)
        principal = Principal(user=web_session.user, via="session", web_session=web_session)
    else:
        raise missing()
    request.state.principal = principal
    return principal


def _check_cookie_write(request: Request, web_session: WebSession, csrf_token: str | None) -> None:
    """A browser's write must come from our own pages: the session's CSRF token, and an
    `Origin` (which browsers send with every cross-site POST) naming this host. A request
    without `Origin` (an older browser) still needs the token."""
    origin = request.headers.get("origin")
    if origin is not None and urlsplit(origin).netloc != request.headers.get("host"):
        raise PermissionDenied(f"Cross-site request refused (Origin {origin[:100]}).")
    if not security.tokens_match(web_session.csrf_token, csrf_token):
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
    token = request.cookies.get(SESSION_COOKIE)
    web_session = crud.get_web_session(db, token=token) if token else None
    if web_session is None:
        return None
    principal = Principal(user=web_session.user, via="session", web_session=web_session)
    request.state.principal = principal
    return principal


def api_key_principal(request: Request, db: DbSession) -> Principal:
    """Bearer API keys only, of any scope: `/v1` ignores cookies, so no browser session can be
    ridden."""
    if (key := bearer_token(request)) is None:
        raise Unauthenticated("A valid API key is required (Authorization: Bearer <key>).")
    principal = Principal.with_key(_live_api_key(request, db, key))
    db.commit()  # end the transaction: a generation can outlive it by minutes
    request.state.principal = principal
    return principal


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
    }
)
"""Every route must depend on one of these (checked by a test that walks the routes)."""
