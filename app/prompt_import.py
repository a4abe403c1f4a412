"""Importing prompt files (JSON Lines, JSON, CSV): validated prompts, a reason per bad row, and
the one import that the API, the admin page and the CLI share.

A record is either `{"messages": [...], "tags"?, "source"?, "split"?}` or the shorthand
`{"prompt": "...", "system"?: "..."}`; CSV files use the shorthand's column names, with
`tags` separated by semicolons.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator
from typing import Any

from pydantic import ValidationError
from sqlalchemy.orm import Session

from app import crud
from app.errors import InvalidInput
from app.models import User
from app.schemas import (
    PromptImportOptions,
    PromptImportReport,
    PromptIn,
    SkippedRow,
    form_input,
)

FORMATS = ("jsonl", "json", "csv")
NO_OPTIONS = PromptImportOptions()


class UnreadableFile(InvalidInput):
    """The file as a whole cannot be read in the given format."""


def import_prompts(
    db: Session,
    *,
    content: bytes,
    filename: str,
    file_format: str = "",
    options: PromptImportOptions = NO_OPTIONS,
    created_by: User | None,
) -> PromptImportReport:
    """Parse the file (in `file_format`, or else the one its name says) and add its new prompts
    (flushed, not committed); nothing is written when the file as a whole is unreadable."""
    file_format = file_format or detect_format(filename)
    prompts, skipped = parse_prompts(content, file_format, options)
    counts = crud.add_prompts(db, prompts=prompts, created_by=created_by)
    return PromptImportReport(
        file_format=file_format,
        created=counts.created,
        created_ids=counts.created_ids,
        already_stored=counts.already_stored,
        repeated_in_file=counts.repeated,
        skipped=skipped,
    )


def options_from_text(*, tags: str = "", split: str = "", source: str = "") -> PromptImportOptions:
    """Options as people type them: comma-separated tags; an empty split or source keeps the
    file's own."""
    return form_input(
        PromptImportOptions,
        tags=[tag.strip() for tag in tags.split(",") if tag.strip()],
        split=split or None,
        source=source.strip() or None,
    )


def detect_format(filename: str) -> str:
    extension = filename.rsplit(".", 1)[-1].lower() if "." in filename else ""
    if extension not in FORMATS:
        raise UnreadableFile(f"Unknown prompt file type {filename!r}; use .jsonl, .json or .csv")
    return extension


def parse_prompts(
    content: bytes, file_format: str, options: PromptImportOptions = NO_OPTIONS
) -> tuple[list[PromptIn], list[SkippedRow]]:
    """Valid prompts and the rows skipped (numbered from 1) with the reason for each."""
    try:
        text = content.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise UnreadableFile("The file is not UTF-8 text") from exc
    if not text.strip():
        raise UnreadableFile("The file is empty")
    prompts: list[PromptIn] = []
    skipped: list[SkippedRow] = []
    for line, record in _records(text, file_format):
        try:
            prompt = PromptIn.model_validate(_normalise(record))
            prompts.append(_storable(_with_options(prompt, options)))
        except (ValidationError, ValueError, TypeError) as exc:
            skipped.append(SkippedRow(line=line, reason=_reason(exc)))
    if not prompts and not skipped:
        raise UnreadableFile("The file holds no prompts")
    return prompts, skipped


def _records(text: str, file_format: str) -> Iterator[tuple[int, Any]]:
    if file_format == "jsonl":
        for number, line in enumerate(text.splitlines(), start=1):
            if line.strip():
                yield number, _json_or_error(line)
    elif file_format == "json":
        document = _json_or_error(text)
        if isinstance(document, ValueError):
            raise UnreadableFile(f"Invalid JSON: {document}")
        records = document.get("prompts") if isinstance(document, dict) else document
        if not isinstance(records, list):
            raise UnreadableFile('A JSON file must hold a list of prompts or {"prompts": [...]}')
        yield from enumerate(records, start=1)
    elif file_format == "csv":
        yield from _csv_records(text)
    else:
        raise UnreadableFile(f"Unknown format {file_format!r}; use one of {', '.join(FORMATS)}")


def _csv_records(text: str) -> Iterator[tuple[int, Any]]:
    reader = csv.DictReader(io.StringIO(text))
    try:
        if not reader.fieldnames or not {"prompt", "messages"} & set(reader.fieldnames):
            raise UnreadableFile('A CSV file needs a "prompt" (or "messages") column')
        for row in reader:
            yield reader.line_num, _csv_record(row)
    except csv.Error as exc:  # for instance a field over the csv module's size limit
        raise UnreadableFile(f"Unreadable CSV at line {reader.line_num}: {exc}") from None


def _json_or_error(text: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        return ValueError(f"invalid JSON ({exc.msg})")
    except RecursionError:
        return ValueError("invalid JSON (nested too deeply)")


def _csv_record(row: dict[str, str | None]) -> dict[str, Any]:
    record: dict[str, Any] = {key: value for key, value in row.items() if key and value}
    if "messages" in record:
        record["messages"] = _json_or_error(record["messages"])
    if "tags" in record:
        record["tags"] = [tag.strip() for tag in record["tags"].split(";") if tag.strip()]
    return record


def _normalise(record: Any) -> dict[str, Any]:
    if isinstance(record, ValueError):
        raise record
    if not isinstance(record, dict):
        raise ValueError("each prompt must be an object")
    if "prompt" not in record:
        return record
    record = dict(record)
    if "messages" in record:
        raise ValueError('give either "prompt" or "messages", not both')
    messages = [{"role": "user", "content": record.pop("prompt")}]
    if system := record.pop("system", None):
        messages.insert(0, {"role": "system", "content": system})
    return {"messages": messages, **record}


def _with_options(prompt: PromptIn, options: PromptImportOptions) -> PromptIn:
    if options == NO_OPTIONS:
        return prompt
    replaced = options.model_dump(exclude_none=True, exclude={"tags"})
    tags = list(dict.fromkeys([*prompt.tags, *options.tags]))
    return PromptIn.model_validate({**prompt.model_dump(), **replaced, "tags": tags})


def _storable(prompt: PromptIn) -> PromptIn:
    """PostgreSQL text and JSONB cannot hold NUL characters; refuse them here, row by row."""
    texts = [*(message.content for message in prompt.messages), *prompt.tags, prompt.source]
    if any("\x00" in text for text in texts):
        raise ValueError("the row contains a NUL character, which cannot be stored")
    return prompt


def _reason(exc: Exception) -> str:
    if isinstance(exc, ValidationError):
        first = exc.errors()[0]
        location = ".".join(str(part) for part in first["loc"])
        return f"{location}: {first['msg']}" if location else first["msg"]
    return str(exc)
