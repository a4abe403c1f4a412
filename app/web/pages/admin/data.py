"""Admin pages: data (`/admin/data/...`): importing prompt files and exporting preferences, and
browsing prompts, tasks and judgements."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, File, Form, Path, Query, Request, UploadFile
from fastapi.responses import HTMLResponse
from sqlalchemy.orm import Session

from app.config import Settings
from app.domain import data_browser, export, prompt_store
from app.domain.data_browser import JudgementFilter, PromptFilter, TaskFilter
from app.domain.prompt_import import FORMATS, import_prompts, options_from_text
from app.errors import InvalidInput
from app.models import PromptSplit, TaskKind, TaskStatus
from app.schemas import PromptImportReport
from app.web.deps import DbSession, PageAdmin, SettingsDep
from app.web.i18n import translate
from app.web.templating import render

router = APIRouter(prefix="/admin")

SKIPPED_ROWS_SHOWN = 200
"""A report lists this many skipped rows at most (a wrong file can skip every one)."""


@router.get("/data", response_class=HTMLResponse)
def data_home(
    request: Request, db: DbSession, settings: SettingsDep, admin: PageAdmin
) -> HTMLResponse:
    """The data page (HTML): the forms to import a prompt file and to export the preferences
    (everything so far, or a round's snapshot), with the number of prompts stored."""
    return _data_page(request, db, settings)


@router.post("/data/import", response_class=HTMLResponse)
def import_prompt_file(
    request: Request,
    db: DbSession,
    settings: SettingsDep,
    admin: PageAdmin,
    file: Annotated[UploadFile | None, File()] = None,
    file_format: Annotated[str, Form(alias="format")] = "",
    tags: Annotated[str, Form()] = "",
    split: Annotated[str, Form()] = "",
    source: Annotated[str, Form()] = "",
) -> HTMLResponse:
    """Import a prompt file as `POST /api/prompts` does, answering the data page with the
    report. No file, an unreadable one or an invalid option shows the page with why (422),
    with nothing written."""
    # Sync: it runs on the thread pool.
    try:
        if file is None or not file.filename:
            raise InvalidInput(translate(admin.locale, "data.choose_file"))
        report = import_prompts(
            db,
            file=file.file,
            filename=file.filename,
            file_format=file_format,
            options=options_from_text(tags=tags, split=split, source=source),
            created_by=admin,
        )
    except InvalidInput as exc:
        db.rollback()  # the batches stored before the file proved unreadable
        return _data_page(request, db, settings, error=exc.detail, status_code=422)
    db.commit()
    return _data_page(request, db, settings, report=report)


def _data_page(
    request: Request,
    db: Session,
    settings: Settings,
    *,
    report: PromptImportReport | None = None,
    error: str | None = None,
    status_code: int = 200,
) -> HTMLResponse:
    context = {
        "import_formats": FORMATS,
        "splits": [split.value for split in PromptSplit],
        "export_formats": export.FORMATS,
        "rounds": export.exportable_rounds(db),
        "prompt_count": prompt_store.count_prompts(db),
        "max_upload_mib": settings.max_body_bytes // 2**20,
        "report": report,
        "skipped_rows_shown": SKIPPED_ROWS_SHOWN,
        "error": error,
    }
    return render(request, "admin/data.html", context, status_code=status_code)


@router.get("/data/prompts", response_class=HTMLResponse)
def prompts_page(
    request: Request, db: DbSession, admin: PageAdmin, filters: Annotated[PromptFilter, Query()]
) -> HTMLResponse:
    """The stored prompts (HTML), a page at a time, filtered by the query's fields."""
    context = {
        "page": data_browser.list_prompts(db, filters),
        "filters": filters,
        "splits": [split.value for split in PromptSplit],
    }
    return render(request, "admin/data_prompts.html", context)


@router.get("/data/tasks", response_class=HTMLResponse)
def tasks_page(
    request: Request, db: DbSession, admin: PageAdmin, filters: Annotated[TaskFilter, Query()]
) -> HTMLResponse:
    """The rating tasks (HTML), a page at a time, filtered by the query's fields."""
    context = {
        "page": data_browser.list_tasks(db, filters),
        "filters": filters,
        "statuses": [status.value for status in TaskStatus],
        "kinds": [kind.value for kind in TaskKind],
    }
    return render(request, "admin/data_tasks.html", context)


@router.get("/data/tasks/{task_id}", response_class=HTMLResponse)
def task_page(
    request: Request,
    db: DbSession,
    admin: PageAdmin,
    task_id: Annotated[int, Path(ge=1, le=data_browser.MAX_ID)],
) -> HTMLResponse:
    """One task (HTML): its prompt, its responses in position order, and every judgement of it
    (corrections included); 404 when no task has this id."""
    detail = data_browser.task_detail(db, task_id)
    return render(request, "admin/data_task.html", {"detail": detail})


@router.get("/data/judgements", response_class=HTMLResponse)
def judgements_page(
    request: Request,
    db: DbSession,
    admin: PageAdmin,
    filters: Annotated[JudgementFilter, Query()],
) -> HTMLResponse:
    """The judgements (HTML), a page at a time, filtered by the query's fields."""
    page, rankings = data_browser.list_judgements(db, filters)
    context = {"page": page, "rankings": rankings, "filters": filters}
    return render(request, "admin/data_judgements.html", context)
