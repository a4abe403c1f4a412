"""`/api/export/preferences`: the collected preferences as a JSON Lines download (admins)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query
from fastapi.responses import StreamingResponse
from pydantic import BeforeValidator

from app.domain.export import FORMATS, export_lines
from app.schemas import RowId, documented
from app.web.deps import AdminUser, DbSession, SettingsDep

router = APIRouter(prefix="/api/export", tags=["export"])

RoundId = Annotated[
    RowId | None,
    # the admin page's form sends its "everything so far" choice as `round=`
    BeforeValidator(lambda value: None if value == "" else value),
]


@router.get(
    "/preferences",
    responses=documented(
        {
            200: "JSON Lines, streamed: the judgements committed when the export started (what "
            "raters submit meanwhile goes into the next one), or exactly a round's snapshot",
            404: "No round with a snapshot has this id, or its snapshot file is missing",
            422: "Unknown format or invalid round id",
        }
    ),
)
def export_preferences(
    db: DbSession,
    settings: SettingsDep,
    admin: AdminUser,
    file_format: Annotated[
        str, Query(alias="format", description=f"one of {', '.join(FORMATS)}")
    ] = "trl",
    round_id: Annotated[RoundId, Query(alias="round")] = None,
) -> StreamingResponse:
    """Download the collected preferences as JSON Lines in the `format` asked for, streamed:
    the judgements committed when the export started or, with `round`, exactly the data that
    round trained on. 404 when no round with a snapshot has that id."""
    lines = export_lines(
        db, file_format=file_format, round_id=round_id, snapshots_dir=settings.snapshots_dir
    )
    name = f"alignloop-{file_format}{f'-round-{round_id}' if round_id else ''}.jsonl"
    return StreamingResponse(
        lines,
        media_type="application/x-ndjson",
        headers={"Content-Disposition": f'attachment; filename="{name}"'},
    )
