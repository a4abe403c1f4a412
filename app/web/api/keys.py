"""`/api/keys`: a user's own API keys for scripts (create, list, revoke)."""

from __future__ import annotations

from fastapi import APIRouter, Response

from app.domain import accounts
from app.schemas import ApiKeyCreate, ApiKeyCreated, ApiKeyOut, RowId, error_responses
from app.web.deps import Caller, CurrentUser, DbSession

router = APIRouter(prefix="/api/keys", tags=["keys"])


@router.get("", responses=error_responses(401, 403, 429))
def list_keys(db: DbSession, user: CurrentUser) -> list[ApiKeyOut]:
    """The caller's API keys, with their scopes and last use (never the keys themselves)."""
    return [ApiKeyOut.model_validate(key) for key in accounts.list_api_keys(db, user=user)]


@router.post("", status_code=201, responses=error_responses(401, 403, 422, 429))
def create_key(body: ApiKeyCreate, db: DbSession, caller: Caller) -> ApiKeyCreated:
    """Create an API key for the caller with the scope asked for (`inference` unless told);
    answers 201 with the key, shown this once. 403 for a scope beyond the caller's role or
    beyond the key the caller used to ask."""
    api_key, key = accounts.create_api_key(
        db, user=caller.user, name=body.name, scope=body.scope, at_most=caller.power
    )
    db.commit()
    return ApiKeyCreated.shown_once(api_key, key)


@router.delete("/{key_id}", status_code=204, responses=error_responses(401, 403, 404, 429))
def revoke_key(key_id: RowId, db: DbSession, user: CurrentUser) -> Response:
    """Revoke one of the caller's API keys at once; anyone else's id is not found (404)."""
    accounts.revoke_api_key(db, user=user, key_id=key_id)
    db.commit()
    return Response(status_code=204)
