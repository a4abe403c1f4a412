"""`/api/keys`: a user's own API keys for scripts (create, list, revoke)."""

from __future__ import annotations

from fastapi import APIRouter, Response

from app import crud
from app.deps import CurrentUser, DbSession
from app.schemas import ApiKeyCreate, ApiKeyCreated, ApiKeyOut, RowId

router = APIRouter(prefix="/api/keys", tags=["keys"])


@router.get("")
def list_keys(db: DbSession, user: CurrentUser) -> list[ApiKeyOut]:
    return [ApiKeyOut.model_validate(key) for key in crud.list_api_keys(db, user=user)]


@router.post("", status_code=201)
def create_key(body: ApiKeyCreate, db: DbSession, user: CurrentUser) -> ApiKeyCreated:
    api_key, key = crud.create_api_key(db, user=user, name=body.name)
    db.commit()
    return ApiKeyCreated.shown_once(api_key, key)


@router.delete("/{key_id}", status_code=204)
def revoke_key(key_id: RowId, db: DbSession, user: CurrentUser) -> Response:
    crud.revoke_api_key(db, user=user, key_id=key_id)
    db.commit()
    return Response(status_code=204)
