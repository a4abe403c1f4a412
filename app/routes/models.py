"""`/api/models`: model versions with their lineage, their leaderboard, promotion and
rollback (admins)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from app import crud
from app import leaderboard as ranking
from app.deps import AdminUser, DbSession
from app.leaderboard import Standing
from app.schemas import ModelVersionOut, RowId

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


@router.get("/leaderboard")
def leaderboard(
    db: DbSession, admin: AdminUser, bootstrap: Annotated[int, Query(ge=0, le=2000)] = 200
) -> list[Standing]:
    """Policy versions ranked by a Bradley-Terry fit of raters' blind comparisons, with 95%
    bootstrap intervals (Elo scale, mean 1000)."""
    return ranking.leaderboard(db, bootstrap=bootstrap)


@router.post("/{version_id}/promote")
def promote(version_id: RowId, db: DbSession, admin: AdminUser) -> ModelVersionOut:
    """Serve this version as `current` from the next request on; running requests finish on
    the version they started with."""
    version = crud.promote(db, version_id=version_id)
    db.commit()
    return ModelVersionOut.model_validate(version).model_copy(update={"current": True})


@router.post("/rollback")
def roll_back(db: DbSession, admin: AdminUser) -> ModelVersionOut:
    """Serve the version that was current before the last promotion (or `base`) again."""
    version = crud.roll_back(db)
    db.commit()
    return ModelVersionOut.model_validate(version).model_copy(update={"current": True})
