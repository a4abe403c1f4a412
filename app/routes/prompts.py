"""`/api/prompts`: importing a prompt file (admins)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, File, Form, UploadFile

from app.deps import AdminUser, DbSession
from app.prompt_import import import_prompts, options_from_text
from app.schemas import PromptImportReport, documented

router = APIRouter(prefix="/api/prompts", tags=["prompts"])


@router.post(
    "",
    status_code=201,
    responses=documented(
        {
            201: "Imported; the report counts the new, duplicate and skipped rows",
            413: "The file is over ALIGNLOOP_MAX_BODY_BYTES",
            422: "The file as a whole is unreadable (not UTF-8, empty, not its format), or "
            "an option is invalid; nothing is written",
        }
    ),
)
def upload_prompts(
    db: DbSession,
    admin: AdminUser,
    file: Annotated[UploadFile, File(description="JSON Lines, JSON or CSV")],
    file_format: Annotated[str, Form(alias="format", description="default: the extension's")] = "",
    tags: Annotated[str, Form(description="comma-separated, added to every prompt")] = "",
    split: Annotated[str, Form(description="train or eval; default: as the file says")] = "",
    source: Annotated[str, Form(description="default: as the file says")] = "",
) -> PromptImportReport:
    """Deduplicated import; the report says why each skipped row was skipped.

    Sync, so FastAPI runs it on its thread pool, off the event loop; the file is read from
    its spool a batch of rows at a time (`app.prompt_import`)."""
    report = import_prompts(
        db,
        file=file.file,
        filename=file.filename or "",
        file_format=file_format,
        options=options_from_text(tags=tags, split=split, source=source),
        created_by=admin,
    )
    db.commit()
    return report
