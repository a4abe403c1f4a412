"""Admin pages: training rounds (to be written)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Form, Request
from fastapi.responses import RedirectResponse

from app import rounds
from app.deps import DbSession, PageAdmin
from app.models import Algorithm

router = APIRouter(prefix="/admin")


@router.post("/rounds")
def start_round(
    request: Request,
    db: DbSession,
    admin: PageAdmin,
    algorithm: Annotated[Algorithm, Form()] = Algorithm.PPO,
    preset: Annotated[str, Form(max_length=32)] = "quick",
) -> RedirectResponse:
    round_ = rounds.start_round(
        db, algorithm=algorithm, preset=preset, overrides={}, created_by=admin
    )
    db.commit()
    rounds.send(db, request.app.state.celery, round_.id)
    return RedirectResponse("/admin", status_code=303)
