"""Admin pages: training rounds: the list with a form to start one, and each round's page with
its live stage, progress, curves and log, and a cancel button."""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated

from fastapi import APIRouter, Form, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse
from sqlalchemy import select

from app import round_config
from app.domain import model_readiness, model_registry, rounds
from app.errors import Conflict
from app.models import DEFAULT_ALGORITHM, Algorithm, ModelVersion, Round, RoundStage, RunStatus
from app.schemas import RowId
from app.web.deps import DbSession, PageAdmin, SettingsDep
from app.web.templating import render

router = APIRouter(prefix="/admin")

PAGE_SIZE = 50


@router.get("/rounds", response_class=HTMLResponse)
def round_list(
    request: Request,
    db: DbSession,
    settings: SettingsDep,
    admin: PageAdmin,
    before: Annotated[RowId | None, Query()] = None,
) -> HTMLResponse:
    """The training rounds (HTML), newest first, 50 at a time (`before`: the last id of the
    previous page), with what a new round would start from and the form that starts one."""
    return _round_list(request, db, settings, before=before)


def _round_list(
    request: Request,
    db: DbSession,
    settings: SettingsDep,
    *,
    before: int | None = None,
    refusal: Conflict | None = None,
) -> HTMLResponse:
    """The list and its form; `refusal` (a start the form asked for) is shown above the form,
    with a link to the round in the way when there is one."""
    query = select(Round).order_by(Round.id.desc()).limit(PAGE_SIZE + 1)
    found = list(db.scalars(query.where(Round.id < before) if before else query))
    context = {
        "rounds": found[:PAGE_SIZE],
        "older": found[PAGE_SIZE - 1].id if len(found) > PAGE_SIZE else None,
        "algorithms": [algorithm.value for algorithm in Algorithm],
        "default_algorithm": DEFAULT_ALGORITHM.value,
        "presets": list(round_config.PRESETS),
        "readiness": _readiness(db, settings),
        "refusal": refusal.detail if refusal else None,
        "in_the_way": rounds.active_round(db, line="main") if refusal else None,
    }
    status = refusal.status_code if refusal else 200
    return render(request, "admin/rounds.html", context, status_code=status)


def _readiness(db: DbSession, settings: SettingsDep) -> dict:
    """What a new round would start from: the model, and the judged pairs per preset's need.
    Counting the pairs builds a snapshot, so it is skipped while a round runs (the page then
    refreshes itself every few seconds, and a start would be refused anyway)."""
    model = model_readiness.model_state(db, settings)
    if not model.ready:
        return {"model": model, "running": None}
    if (running := rounds.active_round(db, line="main")) is not None:
        return {"model": None, "running": running}
    options = round_config.preset_snapshot(settings.round_preset)
    available, previous = rounds.pairs_available(db, model_registry.current_policy(db), options)
    needed = {name: round_config.preset_snapshot(name).min_pairs for name in round_config.PRESETS}
    return {"model": None, "running": None, "pairs": available, "since": previous, "needed": needed}


@router.post("/rounds", response_model=None)
def start_round(
    request: Request,
    db: DbSession,
    settings: SettingsDep,
    admin: PageAdmin,
    algorithm: Annotated[Algorithm, Form()] = DEFAULT_ALGORITHM,
    preset: Annotated[str, Form(max_length=32)] = "quick",
) -> RedirectResponse | HTMLResponse:
    """Start a round on the main line, as `POST /api/rounds` does, and go to its page (303).
    A refusal (a round already queued or running, no model ready, too few judged pairs) shows
    the list again with why (409)."""
    try:
        round_ = rounds.start_round(
            db,
            algorithm=algorithm,
            preset=preset,
            overrides={},
            created_by=admin,
            settings=settings,
        )
    except Conflict as refused:
        db.rollback()
        return _round_list(request, db, settings, refusal=refused)
    db.commit()
    rounds.send(db, request.app.state.celery, round_.id)
    return RedirectResponse(f"/admin/rounds/{round_.id}", status_code=303)


@router.get("/rounds/{round_id}", response_class=HTMLResponse)
def round_page(request: Request, round_id: RowId, db: DbSession, admin: PageAdmin) -> HTMLResponse:
    """One round's page (HTML): its stage and progress, curves, log, the versions it registered
    and the raters' verdict, refreshing itself while the round runs, with a cancel button."""
    round_ = rounds.get_round(db, round_id)
    versions = db.scalars(select(ModelVersion).where(ModelVersion.round_id == round_id)).all()
    parent = db.get(ModelVersion, round_.parent_version_id) if round_.parent_version_id else None
    context = {
        "round": round_,
        "stages": [stage.value for stage in rounds.STAGES],
        "active": round_.status in rounds.ACTIVE,
        "versions": versions,
        "parent": parent,
        "log": rounds.read_log(db, round_id=round_id),
        "human": rounds.human_verdict(db, round_),
        "too_few": rounds.TOO_FEW_TO_JUDGE,
        "script_text": script_text,
    }
    return render(request, "admin/round.html", context)


def script_text(t: Callable[..., str]) -> dict:
    """The words `static/round.js` writes as the round moves on, in the page's language (`t`,
    which the template passes): a script cannot call `t` itself."""
    return {
        "status": {status.value: t(f"admin.status.{status.value}") for status in RunStatus},
        "stage": {stage.value: t(f"admin.stage.{stage.value}") for stage in RoundStage},
        "eta": {unit: t(f"admin.eta.{unit}") for unit in ("seconds", "minutes", "hours")},
        "range": t("admin.round.range"),
    }


@router.post("/rounds/{round_id}/cancel")
def cancel_round(round_id: RowId, db: DbSession, admin: PageAdmin) -> RedirectResponse:
    """Cancel a round as `POST /api/rounds/{id}/cancel` does, then back to its page (303)."""
    rounds.cancel_round(db, round_id=round_id)
    db.commit()
    return RedirectResponse(f"/admin/rounds/{round_id}", status_code=303)
