"""`/api/users`: accounts, their API keys and password-reset links, and pausing raters (admins)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Header, Request, Response

from app.domain import access_links, accounts, preconditions, quality
from app.schemas import (
    ApiKeyCreate,
    ApiKeyCreated,
    ApiKeyOut,
    LinkIssued,
    PauseIn,
    PauseOut,
    RowId,
    UserAccountOut,
    UserCreate,
    UserUpdate,
    error_responses,
)
from app.web.deps import AdminUser, DbSession, SettingsDep

router = APIRouter(prefix="/api/users")
USERS, QUALITY = ["users"], ["quality"]  # the documentation's sections


@router.get("", tags=USERS)
def list_users(db: DbSession, admin: AdminUser) -> list[UserAccountOut]:
    """Every account, with its role, whether it is active or paused, and its last login."""
    return [UserAccountOut.model_validate(user) for user in accounts.list_users(db)]


@router.post("", tags=USERS, status_code=201)
def create_user(body: UserCreate, db: DbSession, admin: AdminUser) -> UserAccountOut:
    """Create an account with a username, a password and a role; answers 201 with the account.
    409 when the username is taken."""
    user = accounts.create_user(db, username=body.username, password=body.password, role=body.role)
    db.commit()
    return UserAccountOut.model_validate(user)


@router.get("/{user_id}", tags=USERS)
def get_user(user_id: RowId, db: DbSession, admin: AdminUser, response: Response) -> UserAccountOut:
    """One account, with its `ETag` header to send back in `If-Match` when changing it."""
    user = accounts.get_user(db, user_id=user_id)
    response.headers["ETag"] = accounts.user_etag(user)
    return UserAccountOut.model_validate(user)


@router.patch("/{user_id}", tags=USERS, responses=error_responses(412))
def update_user(
    user_id: RowId,
    body: UserUpdate,
    db: DbSession,
    admin: AdminUser,
    response: Response,
    if_match: Annotated[
        str | None, Header(description="The account's `ETag`: refuse (412) if it changed since.")
    ] = None,
) -> UserAccountOut:
    """Disable (which signs the account out at once and revokes all its API keys, so that
    enabling it again revives none), enable, or change the role; answers the account with its
    new `ETag`. 409 for the caller's own account, 412 when `If-Match` names an older state."""
    user = accounts.get_user(db, user_id=user_id, for_update=True)
    preconditions.check_if_match(if_match, accounts.user_etag(user), what="This account")
    accounts.update_user(db, user=user, acting=admin, is_active=body.is_active, role=body.role)
    db.commit()
    response.headers["ETag"] = accounts.user_etag(user)
    return UserAccountOut.model_validate(user)


@router.post("/{user_id}/password-reset", tags=USERS, status_code=201)
def create_password_reset(
    user_id: RowId, request: Request, db: DbSession, settings: SettingsDep, admin: AdminUser
) -> LinkIssued:
    """A one-time link to hand to the user, with when it expires: it sets a new password and
    signs the user out everywhere. Earlier reset links for them stop working."""
    user = accounts.get_user(db, user_id=user_id)
    issued = access_links.create_password_reset(db, user=user, created_by=admin, settings=settings)
    db.commit()
    return LinkIssued(url=issued.url(str(request.base_url)), expires_at=issued.link.expires_at)


@router.get("/{user_id}/keys", tags=USERS)
def list_user_keys(user_id: RowId, db: DbSession, admin: AdminUser) -> list[ApiKeyOut]:
    """The user's API keys, with their scopes and last use (never the keys themselves)."""
    user = accounts.get_user(db, user_id=user_id)
    return [ApiKeyOut.model_validate(key) for key in accounts.list_api_keys(db, user=user)]


@router.post(
    "/{user_id}/keys", tags=USERS, status_code=201, responses=error_responses(401, 403, 404, 422)
)
def create_user_key(
    user_id: RowId, body: ApiKeyCreate, db: DbSession, admin: AdminUser
) -> ApiKeyCreated:
    """Create an API key for the user; answers 201 with the key, shown this once. 403 for a
    scope beyond the user's role."""
    user = accounts.get_user(db, user_id=user_id)
    api_key, key = accounts.create_api_key(db, user=user, name=body.name, scope=body.scope)
    db.commit()
    return ApiKeyCreated.shown_once(api_key, key)


@router.delete("/{user_id}/keys/{key_id}", tags=USERS, status_code=204)
def revoke_user_key(user_id: RowId, key_id: RowId, db: DbSession, admin: AdminUser) -> Response:
    """Revoke one of the user's API keys at once; 404 when the key is not theirs."""
    accounts.revoke_api_key(db, user=accounts.get_user(db, user_id=user_id), key_id=key_id)
    db.commit()
    return Response(status_code=204)


@router.post("/{user_id}/pause", tags=QUALITY)
def pause(user_id: RowId, db: DbSession, admin: AdminUser, body: PauseIn | None = None) -> PauseOut:
    """Stop giving the rater tasks until resumed, with an optional reason: their held tasks go
    back to the pool, `GET /api/tasks/next` answers them 403, their judgements stay. Answers
    the rater's pause state."""
    rater = accounts.get_user(db, user_id=user_id)
    reason = (body.reason if body else "") or f"paused by {admin.username}"
    quality.pause_rater(db, rater, reason=reason)
    db.commit()
    return PauseOut.model_validate(rater)


@router.post("/{user_id}/resume", tags=QUALITY)
def resume(user_id: RowId, db: DbSession, admin: AdminUser) -> PauseOut:
    """Give a paused rater tasks again; answers their pause state."""
    rater = accounts.get_user(db, user_id=user_id)
    quality.resume_rater(rater)
    db.commit()
    return PauseOut.model_validate(rater)
