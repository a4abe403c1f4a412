"""`/api/models`: model versions with their lineage, and promotion (admins)."""

from __future__ import annotations

from fastapi import APIRouter

from app import crud
from app.deps import AdminUser, DbSession
from app.schemas import ModelVersionOut

router = APIRouter(prefix="/api/models", tags=["models"])


@router.get("")
def list_models(db: DbSession, admin: AdminUser) -> list[ModelVersionOut]:
    current = crud.current_policy(db)
    return [
        ModelVersionOut.model_validate(version).model_copy(
            update={"current": current is not None and version.id == current.id}
        )
        for version in crud.list_model_versions(db)
    ]


@router.post("/{version_id}/promote")
def promote(version_id: int, db: DbSession, admin: AdminUser) -> ModelVersionOut:
    """Serve this version as `current` from the next request on; running requests finish on
    the version they started with."""
    version = crud.promote(db, version_id=version_id)
    db.commit()
    return ModelVersionOut.model_validate(version).model_copy(update={"current": True})
