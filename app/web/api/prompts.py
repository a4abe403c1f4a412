"""`/api/prompts`: importing prompts (admins), from a JSON body or an uploaded file."""

from __future__ import annotations

import io
from typing import Annotated, Any

from fastapi import APIRouter, Depends, File, Form, Request, UploadFile

from app.domain.prompt_import import import_prompts, options_from_text
from app.errors import InvalidInput, UnsupportedMediaType
from app.schemas import PromptImportReport, documented
from app.web.deps import AdminUser, DbSession

router = APIRouter(prefix="/api/prompts", tags=["prompts"])

PROMPT_ROW: dict[str, Any] = {
    "type": "object",
    "description": 'A row as in a JSON Lines file: {"messages": [{"role", "content"}, ...], '
    '"tags"?, "source"?, "split"?}, or the shorthand {"prompt": "...", "system"?: "..."}. '
    "An invalid row is skipped, and the report says why.",
    "example": {"prompt": "What is RLHF?", "tags": ["faq"]},
}
JSON_PROMPTS: dict[str, Any] = {
    "anyOf": [
        {"type": "array", "items": PROMPT_ROW},
        {
            "type": "object",
            "properties": {"prompts": {"type": "array", "items": PROMPT_ROW}},
            "required": ["prompts"],
        },
    ]
}
"""The JSON body, documented beside the multipart upload that FastAPI describes itself."""


async def json_body(request: Request) -> bytes | None:
    """A JSON request's body (the import decodes it on the thread pool); None for a multipart
    upload, whose file FastAPI has parsed already. Any other body is refused with 415."""
    media_type = request.headers.get("content-type", "").partition(";")[0].strip().lower()
    if media_type == "multipart/form-data":
        return None
    if media_type == "application/json" or media_type.endswith("+json"):
        return await request.body()
    raise UnsupportedMediaType(
        'Send prompts as JSON (a list, or {"prompts": [...]}) or upload a file as '
        "multipart/form-data"
    )


@router.post(
    "",
    status_code=201,
    responses=documented(
        {
            201: "Imported; the report counts the new, duplicate and skipped rows",
            413: "The body is over ALIGNLOOP_MAX_BODY_BYTES",
            415: "The body is neither JSON nor multipart/form-data",
            422: "The body or file as a whole is unreadable (not UTF-8, empty, not its format), "
            "the upload has no file, or an option is invalid; nothing is written",
        }
    ),
    openapi_extra={"requestBody": {"content": {"application/json": {"schema": JSON_PROMPTS}}}},
)
def upload_prompts(
    db: DbSession,
    admin: AdminUser,
    body: Annotated[bytes | None, Depends(json_body)],
    file: Annotated[UploadFile | None, File(description="JSON Lines, JSON or CSV")] = None,
    file_format: Annotated[str, Form(alias="format", description="default: the extension's")] = "",
    tags: Annotated[str, Form(description="comma-separated, added to every prompt")] = "",
    split: Annotated[str, Form(description="train or eval; default: as the file says")] = "",
    source: Annotated[str, Form(description="default: as the file says")] = "",
) -> PromptImportReport:
    """Import prompts from a JSON body (a list of prompts, or `{"prompts": [...]}`) or from an
    uploaded file (JSON Lines, JSON or CSV, with the form's options), leaving out those already
    stored or repeated. Answers 201 with a report: how many were created, which were duplicates,
    and why each skipped row was skipped. Refused with nothing written (422) when the body or
    file as a whole is unreadable, 415 for any other kind of body."""
    # Sync, so FastAPI runs it on its thread pool, off the event loop; an uploaded file is read
    # from its spool a batch of rows at a time (`app.domain.prompt_import`).
    if body is not None:
        upload, filename, file_format = io.BytesIO(body), "", "json"
    elif file is not None:
        upload, filename = file.file, file.filename or ""
    else:
        raise InvalidInput("A multipart upload needs a `file` field", loc=("body", "file"))
    report = import_prompts(
        db,
        file=upload,
        filename=filename,
        file_format=file_format,
        options=options_from_text(tags=tags, split=split, source=source),
        created_by=admin,
    )
    db.commit()
    return report
