"""`/api/models`: model versions with their lineage, their leaderboard, promotion and
rollback (admins)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Header, Query, Response

from app.domain import leaderboard as ranking
from app.domain import model_registry
from app.domain.leaderboard import Standing
from app.models import ModelVersion
from app.schemas import ModelVersionOut, RowId, error_responses
from app.web.deps import AdminUser, DbSession

router = APIRouter(prefix="/api/models", tags=["models"])

IfMatch = Annotated[
    str | None,
    Header(
        description="The `ETag` of `GET /api/models`: refuse (412) if another promotion or "
        "rollback happened since."
    ),
]


@router.get("")
def list_models(db: DbSession, admin: AdminUser, response: Response) -> list[ModelVersionOut]:
    """Every model version with its lineage and metrics, `current` true for the one served as
    `current`; the `ETag` header names what is served now (send it back in `If-Match` when
    promoting or rolling back)."""
    current = model_registry.current_policy(db)
    response.headers["ETag"] = model_registry.serving_etag(current)
    return [
        ModelVersionOut.model_validate(version).model_copy(
            update={"current": current is not None and version.id == current.id}
        )
        for version in model_registry.list_model_versions(db)
    ]


@router.get("/leaderboard")
def leaderboard(
    db: DbSession, admin: AdminUser, bootstrap: Annotated[int, Query(ge=1, le=2000)] = 200
) -> list[Standing]:
    """Policy versions ranked by a Bradley-Terry fit of raters' blind comparisons, best first:
    each one's rating (Elo scale, mean 1000) with a 95% interval from `bootstrap` resamples,
    its comparisons and its win rate. Empty until two versions have been compared."""
    return ranking.leaderboard(db, bootstrap=bootstrap)


@router.post("/{version_id}/promote", responses=error_responses(412))
def promote(
    version_id: RowId, db: DbSession, admin: AdminUser, response: Response, if_match: IfMatch = None
) -> ModelVersionOut:
    """Serve this policy version as `current` from the next request on (requests already
    running finish on the version they started with); answers the version, with the new
    `ETag`. 404 when no ready policy version has this id, 412 when `If-Match` names an older
    state (another promotion or rollback happened since)."""
    version = model_registry.promote(db, version_id=version_id, if_match=if_match)
    db.commit()
    return _now_served(version, response)


@router.post("/rollback", responses=error_responses(412))
def roll_back(
    db: DbSession, admin: AdminUser, response: Response, if_match: IfMatch = None
) -> ModelVersionOut:
    """Serve the version that was current before the last promotion (or `base`) again;
    answers it, with the new `ETag`. 409 when no promoted version is being served, 412 as for
    promotion."""
    version = model_registry.roll_back(db, if_match=if_match)
    db.commit()
    return _now_served(version, response)


def _now_served(version: ModelVersion, response: Response) -> ModelVersionOut:
    response.headers["ETag"] = model_registry.serving_etag(version)
    return ModelVersionOut.model_validate(version).model_copy(update={"current": True})
