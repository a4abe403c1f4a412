"""Importing prompt files (JSON Lines, JSON, CSV): validated prompts, a reason per bad row, and
the one import that the API, the admin page and the CLI share.

A record is either `{"messages": [...], "tags"?, "source"?, "split"?}` or the shorthand
`{"prompt": "...", "system"?: "..."}`; CSV files use the shorthand's column names, with
`tags` separated by semicolons.

A file is read and stored a batch of rows at a time (a JSON document's list, an item at a
time), never whole: the rows of a large upload, alive all at once, made each of the garbage
collector's full passes long, and a pass holds the interpreter lock, which stalls the event
loop as much as if the parsing ran on it.
"""

from __future__ import annotations

import codecs
import csv
import io
import json
import re
from collections.abc import Iterable, Iterator
from typing import IO, Any

from pydantic import ValidationError
from sqlalchemy.orm import Session

from app.domain import prompt_store
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
IMPORT_BATCH = 500
"""Rows parsed, checked and stored at a time."""
BLANK_CHECK_CHUNK = 64 * 1024
JSON_SPACE = re.compile(r"[ \t\n\r]*")


class UnreadableFile(InvalidInput):
    """The file as a whole cannot be read in the given format."""


def import_prompts(
    db: Session,
    *,
    file: IO[bytes],
    filename: str,
    file_format: str = "",
    options: PromptImportOptions = NO_OPTIONS,
    created_by: User | None,
) -> PromptImportReport:
    """Read the file (in `file_format`, or else the one its name says) and add its new prompts
    (flushed, not committed). When the file as a whole is unreadable it raises, maybe after a
    batch was flushed: the caller rolls back, and nothing is written."""
    file_format = file_format or detect_format(filename)
    created_ids: list[int] = []
    already_stored = repeated = 0
    skipped: list[SkippedRow] = []
    seen: set[str] = set()
    for rows in _batches(read_prompts(file, file_format, options), IMPORT_BATCH):
        skipped += [row for row in rows if isinstance(row, SkippedRow)]
        prompts = [row for row in rows if isinstance(row, PromptIn)]
        counts = prompt_store.add_prompts(db, prompts=prompts, created_by=created_by, seen=seen)
        created_ids += counts.created_ids
        already_stored += counts.already_stored
        repeated += counts.repeated
    return PromptImportReport(
        file_format=file_format,
        created=len(created_ids),
        created_ids=created_ids,
        already_stored=already_stored,
        repeated_in_file=repeated,
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
    """Valid prompts and the rows skipped, of a file small enough to hold whole (the demo set)."""
    rows = list(read_prompts(io.BytesIO(content), file_format, options))
    skipped = [row for row in rows if isinstance(row, SkippedRow)]
    return [row for row in rows if isinstance(row, PromptIn)], skipped


def read_prompts(
    file: IO[bytes], file_format: str, options: PromptImportOptions = NO_OPTIONS
) -> Iterator[PromptIn | SkippedRow]:
    """The file's rows in order: each a valid prompt, or the row skipped (numbered from 1)
    with the reason. Raises `UnreadableFile`, maybe after some rows, when the file as a whole
    cannot be read."""
    if _blank(file):
        raise UnreadableFile("The file is empty")
    text = io.TextIOWrapper(file, encoding="utf-8-sig", newline="")
    rows = 0
    try:
        for line, record in _records(text, file_format):
            rows += 1
            try:
                prompt = PromptIn.model_validate(_normalise(record))
                yield _storable(_with_options(prompt, options))
            except (ValidationError, ValueError, TypeError) as exc:
                yield SkippedRow(line=line, reason=_reason(exc))
    except UnicodeDecodeError as exc:
        raise UnreadableFile("The file is not UTF-8 text") from exc
    finally:
        text.detach()  # the caller's file stays open
    if not rows:
        raise UnreadableFile("The file holds no prompts")


def _blank(file: IO[bytes]) -> bool:
    """Whether the file holds nothing but whitespace; it reads up to the first other
    character, then goes back to where it was."""
    start = file.tell()
    chunk = file.read(BLANK_CHECK_CHUNK).removeprefix(codecs.BOM_UTF8)
    while chunk and not chunk.strip():
        chunk = file.read(BLANK_CHECK_CHUNK)
    file.seek(start)
    return not chunk


def _batches(rows: Iterable[Any], size: int) -> Iterator[list[Any]]:
    batch = []
    for row in rows:
        batch.append(row)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


def _records(text: IO[str], file_format: str) -> Iterator[tuple[int, Any]]:
    if file_format == "jsonl":
        for number, line in enumerate(text, start=1):
            if line.strip():
                yield number, _json_or_error(line)
    elif file_format == "json":
        yield from _json_records(text.read())
    elif file_format == "csv":
        yield from _csv_records(text)
    else:
        raise UnreadableFile(f"Unknown format {file_format!r}; use one of {', '.join(FORMATS)}")


def _json_records(document: str) -> Iterator[tuple[int, Any]]:
    """The items of a JSON list of prompts, or of `{"prompts": [...]}` (decoded whole)."""
    start = JSON_SPACE.match(document).end()
    if document.startswith("[", start):
        yield from _json_list_items(document, start)
        return
    parsed = _json_or_error(document)
    if isinstance(parsed, ValueError):
        raise UnreadableFile(f"Invalid JSON: {parsed}")
    records = parsed.get("prompts") if isinstance(parsed, dict) else None
    if not isinstance(records, list):
        raise UnreadableFile('A JSON file must hold a list of prompts or {"prompts": [...]}')
    yield from enumerate(records, start=1)


def _json_list_items(document: str, start: int) -> Iterator[tuple[int, Any]]:
    """The items of the JSON list that opens at `start`, decoded one at a time."""
    decoder = json.JSONDecoder()
    position = JSON_SPACE.match(document, start + 1).end()
    number = 0
    while number or not document.startswith("]", position):
        number += 1
        try:
            record, position = decoder.raw_decode(document, position)
        except json.JSONDecodeError as exc:
            raise UnreadableFile(f"Invalid JSON: {exc}") from None
        except RecursionError:
            raise UnreadableFile(f"Invalid JSON: item {number} is nested too deeply") from None
        yield number, record
        position = JSON_SPACE.match(document, position).end()
        if document.startswith("]", position):
            break
        if not document.startswith(",", position):
            raise UnreadableFile(f"Invalid JSON: expected ',' or ']' at char {position}")
        position = JSON_SPACE.match(document, position + 1).end()
    if JSON_SPACE.match(document, position + 1).end() != len(document):
        raise UnreadableFile(f"Invalid JSON: extra data after the list at char {position + 1}")


def _csv_records(text: IO[str]) -> Iterator[tuple[int, Any]]:
    reader = csv.DictReader(text)
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
