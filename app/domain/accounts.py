"""Accounts: users, browser sessions, API keys and login tokens, and purging what expired.

Small keyword-only functions over an explicit session: they flush but never commit (the caller
owns the transaction), and report broken rules with the exceptions of `app.errors`.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import ColumnElement, Select, delete, func, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, joinedload

from app import security
from app.domain import preconditions
from app.domain.credentials import credentials_changed
from app.errors import Conflict, NotFound, PermissionDenied
from app.models import (
    ApiKey,
    KeyScope,
    LoginThrottle,
    Role,
    User,
    WebSession,
    utcnow,
)

API_KEY_TOUCH_INTERVAL = timedelta(minutes=1)


def create_user(db: Session, *, username: str, password: str, role: Role) -> User:
    """Create an account; `username` must already be validated (see `schemas.Username`)."""
    if get_user_by_username(db, username=username) is not None:
        raise Conflict(f"User {username!r} already exists")
    user = User(username=username, password_hash=security.hash_password(password), role=role)
    try:
        with db.begin_nested():  # a concurrent request may have taken the name meanwhile
            db.add(user)
    except IntegrityError:
        raise Conflict(f"User {username!r} already exists") from None
    return user


def get_user(db: Session, *, user_id: int, for_update: bool = False) -> User:
    """The user; `for_update` locks the row until the transaction ends (and re-reads it)."""
    user = db.get(User, user_id, with_for_update=for_update or None, populate_existing=for_update)
    if user is None:
        raise NotFound("User not found")
    return user


def user_etag(user: User) -> str:
    """Changes with whatever `PATCH /api/users/{id}` can change."""
    return preconditions.etag("user", user.id, user.role, user.is_active)


def update_user(
    db: Session,
    *,
    user: User,
    acting: User | None,
    is_active: bool | None = None,
    role: Role | None = None,
) -> User:
    """Disable, enable or change the role of an account; `acting` (the admin, or None from the
    CLI) may not disable or demote themselves, so that the console cannot lock itself out."""
    disabling, changing_role = is_active is False, role is not None and role != user.role
    if acting is not None and acting.id == user.id and (disabling or changing_role):
        raise Conflict("You cannot disable your own account or change your own role")
    if role is not None:
        user.role = role
    if is_active is not None:
        user.is_active = is_active
    credentials_changed(db)
    if disabling:  # revoked, not just unusable while disabled: enabling revives no old key
        end_user_sessions(db, user=user)
        _revoke_keys(db, ApiKey.user_id == user.id)
    return user


def get_user_by_username(db: Session, *, username: str) -> User | None:
    return db.scalar(select(User).where(User.username == username.strip().lower()))


def list_users(db: Session) -> list[User]:
    return list(db.scalars(select(User).order_by(User.username)))


def count_users(db: Session) -> int:
    return db.scalar(select(func.count()).select_from(User)) or 0


def authenticate_user(db: Session, *, username: str, password: str) -> User | None:
    """The active user with these credentials, or None; unknown names cost a full hash check."""
    user = get_user_by_username(db, username=username)
    stored_hash = user.password_hash if user is not None and user.is_active else None
    if not security.verify_password(password, stored_hash):
        return None
    assert user is not None
    if security.password_needs_rehash(user.password_hash):
        user.password_hash = security.hash_password(password)
    user.last_login_at = utcnow()
    return user


def create_web_session(db: Session, *, user: User, ttl: timedelta) -> tuple[WebSession, str]:
    """A new session for `user`; returns the row and the cookie token (stored only as a digest)."""
    token = security.new_token()
    web_session = WebSession(
        token_hash=security.token_digest(token),
        user_id=user.id,
        csrf_token=security.new_token(),
        expires_at=utcnow() + ttl,
    )
    db.add(web_session)
    db.flush()
    return web_session, token


def get_web_session(db: Session, *, token: str) -> WebSession | None:
    return db.scalar(
        select(WebSession)
        .options(joinedload(WebSession.user))
        .join(User)
        .where(
            WebSession.token_hash == security.token_digest(token),
            WebSession.expires_at > utcnow(),
            User.is_active.is_(True),
        )
    )


def end_web_session(db: Session, *, token: str) -> None:
    credentials_changed(db)
    db.execute(delete(WebSession).where(WebSession.token_hash == security.token_digest(token)))


def end_user_sessions(db: Session, *, user: User) -> int:
    """Sign `user` out everywhere: every browser session ends and every login token from
    `/api/auth/token` is revoked (keys made on purpose stay); returns how many ended."""
    ended = db.execute(delete(WebSession).where(WebSession.user_id == user.id)).rowcount or 0
    return ended + _revoke_keys(db, ApiKey.user_id == user.id, IS_LOGIN_TOKEN)


IS_LOGIN_TOKEN = ApiKey.expires_at.is_not(None)
"""Login tokens from `/api/auth/token` are the keys that expire; keys made on purpose do not."""


def create_api_key(
    db: Session,
    *,
    user: User,
    name: str,
    scope: KeyScope,
    at_most: KeyScope | None = None,
    expires_at: datetime | None = None,
) -> tuple[ApiKey, str]:
    """A new key for `user`: the row, and the key itself (never stored, never shown again).

    `scope` may not exceed the owner's role, nor `at_most`: the power of whoever asks (a key
    used to create another must not hand out more than it has itself).
    """
    limit = KeyScope.of_role(user.role).narrowed_to(at_most or KeyScope.ADMIN)
    if not scope.within(limit):
        allowed = " or ".join(repr(each.value) for each in KeyScope.up_to(limit))
        raise PermissionDenied(
            f"This key can have the scope {allowed}, not {scope.value!r}: a key has no more "
            "power than its owner's role, nor than the key used to create it."
        )
    key = security.new_api_key()
    api_key = ApiKey(
        user_id=user.id,
        name=name,
        prefix=key[: security.DISPLAY_PREFIX_LENGTH],
        key_hash=security.token_digest(key),
        scope=scope,
        expires_at=expires_at,
    )
    db.add(api_key)
    db.flush()
    return api_key, key


def get_api_key(db: Session, *, key: str) -> ApiKey | None:
    """The live key row for a presented key (not revoked, not expired, owner active)."""
    now = utcnow()
    api_key = db.scalar(
        select(ApiKey)
        .options(joinedload(ApiKey.user))
        .join(User)
        .where(
            ApiKey.key_hash == security.token_digest(key),
            ApiKey.revoked_at.is_(None),
            or_(ApiKey.expires_at.is_(None), ApiKey.expires_at > now),
            User.is_active.is_(True),
        )
    )
    if api_key is not None and (
        api_key.last_used_at is None or now - api_key.last_used_at > API_KEY_TOUCH_INTERVAL
    ):
        api_key.last_used_at = now
    return api_key


def _newest_first(statement: Select[tuple[ApiKey]]) -> Select[tuple[ApiKey]]:
    return statement.order_by(ApiKey.created_at.desc(), ApiKey.id.desc())


def _keys_made_on_purpose() -> Select[tuple[ApiKey]]:
    """Keys people created (login tokens from `/api/auth/token` are left out)."""
    return _newest_first(select(ApiKey).where(~IS_LOGIN_TOKEN))


def list_api_keys(db: Session, *, user: User) -> list[ApiKey]:
    return list(db.scalars(_keys_made_on_purpose().where(ApiKey.user_id == user.id)))


def api_keys_by_user(db: Session) -> dict[int, list[ApiKey]]:
    """Everyone's keys in one query, by user id, for the admin console."""
    keys: dict[int, list[ApiKey]] = {}
    for api_key in db.scalars(_keys_made_on_purpose()):
        keys.setdefault(api_key.user_id, []).append(api_key)
    return keys


def list_login_tokens(db: Session, *, user: User) -> list[ApiKey]:
    """`user`'s login tokens that still work (neither revoked nor expired)."""
    return list(
        db.scalars(
            _newest_first(select(ApiKey)).where(
                ApiKey.user_id == user.id,
                IS_LOGIN_TOKEN,
                ApiKey.expires_at > utcnow(),
                ApiKey.revoked_at.is_(None),
            )
        )
    )


def revoke_api_key(db: Session, *, user: User, key_id: int) -> ApiKey:
    """Revoke one of `user`'s keys; someone else's key id is reported as not found."""
    return _revoke_owned(db, ApiKey.id == key_id, ApiKey.user_id == user.id, what="API key")


def revoke_login_token(db: Session, *, user: User, token_id: int) -> ApiKey:
    """Revoke one of `user`'s login tokens; any other id is reported as not found."""
    return _revoke_owned(
        db, ApiKey.id == token_id, ApiKey.user_id == user.id, IS_LOGIN_TOKEN, what="Login token"
    )


def _revoke_owned(db: Session, *conditions: ColumnElement[bool], what: str) -> ApiKey:
    api_key = db.scalar(select(ApiKey).where(*conditions))
    if api_key is None:
        raise NotFound(f"{what} not found")
    if api_key.revoked_at is None:
        api_key.revoked_at = utcnow()
        credentials_changed(db)
    return api_key


def _revoke_keys(db: Session, *conditions: ColumnElement[bool]) -> int:
    """Revoke every live key matching `conditions`; returns how many."""
    statement = update(ApiKey).where(ApiKey.revoked_at.is_(None), *conditions)
    credentials_changed(db)
    return db.execute(statement.values(revoked_at=utcnow())).rowcount or 0


def revoke_api_keys_by_prefix(db: Session, *, user: User, prefix: str) -> int:
    return _revoke_keys(db, ApiKey.user_id == user.id, ApiKey.prefix == prefix)


def purge_expired_credentials(db: Session, *, throttle_window: timedelta) -> int:
    """Delete expired sessions, expired tokens and throttles unlocked and older than the
    longest throttle window; returns rows removed."""
    now = utcnow()
    statements = [
        delete(WebSession).where(WebSession.expires_at <= now),
        delete(ApiKey).where(ApiKey.expires_at.is_not(None), ApiKey.expires_at <= now),
        delete(LoginThrottle).where(
            LoginThrottle.window_started_at <= now - throttle_window,
            or_(LoginThrottle.locked_until.is_(None), LoginThrottle.locked_until <= now),
        ),
    ]
    return sum(db.execute(statement).rowcount or 0 for statement in statements)
