"""Admin pages: model versions with their lineage and metrics, the Bradley-Terry leaderboard
(as last stored in the background), and the promote and rollback buttons."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse

from app.domain import leaderboard as ranking
from app.domain import model_registry, quality
from app.models import ModelVersion
from app.schemas import RowId, error_responses
from app.web.deps import DbSession, PageAdmin
from app.web.templating import render

router = APIRouter(prefix="/admin")


@router.get("/models", response_class=HTMLResponse)
def model_list(request: Request, db: DbSession, admin: PageAdmin) -> HTMLResponse:
    """The model versions (HTML), newest first, with their lineage and metrics, which one is
    served, the leaderboard as last computed, and the promote and rollback buttons."""
    versions = model_registry.list_model_versions(db)
    current = model_registry.current_policy(db)
    context = {
        "versions": list(reversed(versions)),
        "lineage": _lineage(versions),
        "current": current,
        "serving": model_registry.serving_etag(current),
        "can_roll_back": current is not None and current.promoted_at is not None,
        "leaderboard": ranking.latest(db),
    }
    return render(request, "admin/models.html", context)


def _lineage(versions: list[ModelVersion]) -> dict[int, list[str]]:
    """Each version's ancestors' names, parent first."""
    by_id = {version.id: version for version in versions}
    chains: dict[int, list[str]] = {}
    for version in versions:
        chain, parent_id = [], version.parent_id
        while parent_id is not None and parent_id in by_id and len(chain) < len(by_id):
            chain.append(by_id[parent_id].name)
            parent_id = by_id[parent_id].parent_id
        chains[version.id] = chain
    return chains


# The buttons send the page's `serving` ETag: an admin who promotes from a page that another
# admin's promotion or rollback made stale gets a 412 page instead of overwriting it.
ServedWhenRead = Annotated[str, Form(max_length=64)]


@router.post("/models/{version_id}/promote", responses=error_responses(412))
def promote(
    version_id: RowId, db: DbSession, admin: PageAdmin, serving: ServedWhenRead = ""
) -> RedirectResponse:
    """Serve a version as `current`, as `POST /api/models/{id}/promote` does, then back to the
    models page (303); 412 when another promotion or rollback happened since the page was
    read."""
    model_registry.promote(db, version_id=version_id, if_match=serving or None)
    db.commit()
    return RedirectResponse("/admin/models", status_code=303)


@router.post("/models/leaderboard/refresh")
def refresh_leaderboard(request: Request, admin: PageAdmin) -> RedirectResponse:
    """Ask for the leaderboard (with the quality figures) to be recomputed in the background,
    then back to the models page (303)."""
    quality.request_refresh(request.app.state.celery)
    return RedirectResponse("/admin/models", status_code=303)


@router.post("/models/rollback", responses=error_responses(412))
def roll_back(db: DbSession, admin: PageAdmin, serving: ServedWhenRead = "") -> RedirectResponse:
    """Serve the previous version again, as `POST /api/models/rollback` does, then back to the
    models page (303); 409 with nothing to roll back, 412 as for promotion."""
    model_registry.roll_back(db, if_match=serving or None)
    db.commit()
    return RedirectResponse("/admin/models", status_code=303)
