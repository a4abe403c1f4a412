"""Data access: small keyword-only functions over an explicit session.

They flush but never commit: the caller (a route, a CLI command, a task) owns the transaction.
Domain rules that need the database (unique names, ownership, key scopes) are enforced here and
reported with the exceptions of `app.errors`.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from datetime import datetime, timedelta
from typing import NamedTuple

from sqlalchemy import ColumnElement, Select, delete, func, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, joinedload

from app import security
from app.domain import preconditions
from app.domain.credentials import credentials_changed
from app.errors import Conflict, NotFound, PermissionDenied
from app.models import (
    ApiKey,
    GuidelineVersion,
    KeyScope,
    LoginThrottle,
    ModelKind,
    ModelStatus,
    ModelVersion,
    Prompt,
    Role,
    User,
    WebSession,
    utcnow,
)
from app.schemas import PromptIn

API_KEY_TOUCH_INTERVAL = timedelta(minutes=1)

# --- users ---------------------------------------------------------------------------------------


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


# --- browser sessions ----------------------------------------------------------------------------


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


# --- API keys ------------------------------------------------------------------------------------


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


# --- expired credentials -------------------------------------------------------------------------


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


# --- prompts -------------------------------------------------------------------------------------


def prompt_dedup_hash(prompt: PromptIn) -> str:
    """Digest of the conversation with whitespace normalised; tags and source do not count."""
    canonical = [
        {"role": message.role, "content": " ".join(message.content.split())}
        for message in prompt.messages
    ]
    encoded = json.dumps(canonical, ensure_ascii=False, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(encoded.encode()).hexdigest()


class PromptCounts(NamedTuple):
    created: int
    already_stored: int
    repeated: int
    """Copies of a prompt that came earlier in the same batch (or import: `seen`)."""
    created_ids: list[int]
    """The new prompts' ids, in the order they came."""


def add_prompts(
    db: Session,
    *,
    prompts: Iterable[PromptIn],
    created_by: User | None,
    seen: set[str] | None = None,
) -> PromptCounts:
    """Insert the prompts not seen before; a duplicate keeps the stored prompt's tags.

    `seen` holds the hashes of the prompts that came earlier in an import that arrives in
    batches (they count as repeated here), and gets this batch's added."""
    seen = set() if seen is None else seen
    by_hash: dict[str, PromptIn] = {}
    repeated = 0
    for prompt in prompts:
        digest = prompt_dedup_hash(prompt)
        if digest in seen or digest in by_hash:
            repeated += 1
        else:
            by_hash[digest] = prompt
    seen.update(by_hash)
    existing = set(
        db.scalars(select(Prompt.dedup_hash).where(Prompt.dedup_hash.in_(list(by_hash))))
    )
    created = [
        Prompt(
            messages=[message.model_dump() for message in prompt.messages],
            source=prompt.source,
            tags=prompt.tags,
            split=prompt.split,
            dedup_hash=digest,
            created_by_id=created_by.id if created_by else None,
        )
        for digest, prompt in by_hash.items()
        if digest not in existing
    ]
    db.add_all(created)
    db.flush()
    return PromptCounts(len(created), len(existing), repeated, [row.id for row in created])


def count_prompts(db: Session) -> int:
    return db.scalar(select(func.count()).select_from(Prompt)) or 0


# --- model versions ------------------------------------------------------------------------------


def get_model_version(db: Session, *, name: str) -> ModelVersion | None:
    return db.scalar(select(ModelVersion).where(ModelVersion.name == name))


def register_model_version(
    db: Session,
    *,
    name: str,
    kind: ModelKind,
    path: str,
    config: dict,
    parent: ModelVersion | None = None,
    metrics: dict | None = None,
    snapshot_sha256: str | None = None,
    rater_count: int | None = None,
    round_id: int | None = None,
) -> ModelVersion:
    """Register a stored model with its lineage: parent version, round, training snapshot."""
    if get_model_version(db, name=name) is not None:
        raise Conflict(f"Model version {name!r} already exists")
    version = ModelVersion(
        name=name,
        kind=kind,
        status=ModelStatus.READY,
        path=path,
        parent_id=parent.id if parent else None,
        round_id=round_id,
        snapshot_sha256=snapshot_sha256,
        rater_count=rater_count,
        config=config,
        metrics=metrics or {},
    )
    db.add(version)
    db.flush()
    return version


def roll_back(db: Session, *, if_match: str | None = None) -> ModelVersion:
    """Stop serving the current promoted version: the one promoted before it (else `base`)
    becomes `current` again. `if_match`: the client's `serving_etag`, see `promote`."""
    current = _lock_serving(db, if_match)
    if current is None or current.promoted_at is None:
        raise Conflict("Nothing to roll back: no promoted version is being served")
    current.promoted_at = None
    db.flush()
    return current_policy(db)


# --- rating guidelines ---------------------------------------------------------------------------


def current_guidelines(db: Session) -> GuidelineVersion | None:
    return db.scalar(select(GuidelineVersion).order_by(GuidelineVersion.version.desc()).limit(1))


def get_guidelines(db: Session, *, version: int) -> GuidelineVersion | None:
    return db.scalar(select(GuidelineVersion).where(GuidelineVersion.version == version))


class StaleGuidelines(Conflict):
    """The editor started from an older version than the one published since."""

    def __init__(self, published: GuidelineVersion, based_on: int) -> None:
        super().__init__(
            f"Version {published.version} was published after the version {based_on} you "
            "edited; compare both, then publish again."
        )
        self.published = published


def publish_guidelines(
    db: Session, *, body: str, author: User | None, based_on: int | None = None
) -> GuidelineVersion:
    """A new guideline version; earlier versions stay, as judgements refer to them.
    `based_on`, the version the editor started from (0 for none), must still be the latest:
    otherwise `StaleGuidelines`, so that one admin never silently overwrites another."""
    preconditions.serialise(db, "guidelines")
    latest = current_guidelines(db)
    if based_on is not None and based_on != (latest.version if latest else 0):
        raise StaleGuidelines(latest, based_on)
    guideline = GuidelineVersion(
        version=(latest.version + 1) if latest else 1,
        body=body,
        created_by_id=author.id if author else None,
    )
    db.add(guideline)
    db.flush()
    return guideline


def current_policy(db: Session) -> ModelVersion | None:
    """The policy version being served and rated: the last promoted one, else `base`."""
    promoted = db.scalar(
        select(ModelVersion)
        .where(
            ModelVersion.kind == ModelKind.POLICY,
            ModelVersion.status == ModelStatus.READY,
            ModelVersion.promoted_at.is_not(None),
        )
        .order_by(ModelVersion.promoted_at.desc())
        .limit(1)
    )
    return promoted or get_model_version(db, name="base")


def served_policy(db: Session, *, name: str) -> ModelVersion:
    """The policy version that `/v1` serves for a requested model name (`current` included)."""
    version = current_policy(db) if name == "current" else get_model_version(db, name=name)
    if version is None or version.kind != ModelKind.POLICY or version.status != ModelStatus.READY:
        raise NotFound(f"The model {name!r} does not exist or is not ready", code="model_not_found")
    return version


def list_policies(db: Session) -> list[ModelVersion]:
    return list(
        db.scalars(
            select(ModelVersion)
            .where(ModelVersion.kind == ModelKind.POLICY, ModelVersion.status == ModelStatus.READY)
            .order_by(ModelVersion.created_at, ModelVersion.id)
        )
    )


def list_model_versions(db: Session) -> list[ModelVersion]:
    return list(db.scalars(select(ModelVersion).order_by(ModelVersion.id)))


def serving_etag(current: ModelVersion | None) -> str:
    """The ETag of what is served: which version, and since when (a version promoted again
    after a rollback gets a new one)."""
    return preconditions.etag("serving", current and current.id, current and current.promoted_at)


def _lock_serving(db: Session, if_match: str | None) -> ModelVersion | None:
    """Take the promotion lock, check the client's `If-Match`, return the current policy."""
    preconditions.serialise(db, "serving")
    current = current_policy(db)
    preconditions.check_if_match(if_match, serving_etag(current), what="The served version")
    return current


def promote(db: Session, *, version_id: int, if_match: str | None = None) -> ModelVersion:
    """Make a ready policy version the one served as `current` (one compare-and-set update).
    With `if_match` (a `serving_etag`), only if nobody promoted or rolled back meanwhile: of
    two admins promoting from the same page, the second gets a 412."""
    _lock_serving(db, if_match)
    updated = db.execute(
        update(ModelVersion)
        .where(
            ModelVersion.id == version_id,
            ModelVersion.kind == ModelKind.POLICY,
            ModelVersion.status == ModelStatus.READY,
        )
        .values(promoted_at=utcnow())
        .returning(ModelVersion.id)
    ).first()
    if updated is None:
        raise NotFound("No ready policy version with this id")
    version = db.get(ModelVersion, version_id)
    db.refresh(version)
    return version
