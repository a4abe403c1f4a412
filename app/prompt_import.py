"""Reading prompt files (JSON Lines, JSON, CSV) into validated prompts, with a reason per bad row.

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

from app.schemas import PromptIn, SkippedRow

FORMATS = ("jsonl", "json", "csv")


class UnreadableFile(ValueError):
    """The file as a whole cannot be read in the given format."""


def detect_format(filename: str) -> str:
    extension = filename.rsplit(".", 1)[-1].lower() if "." in filename else ""
    if extension not in FORMATS:
        raise UnreadableFile(f"Unknown prompt file type {filename!r}; use .jsonl, .json or .csv")
    return extension


def parse_prompts(content: bytes, file_format: str) -> tuple[list[PromptIn], list[SkippedRow]]:
    """Valid prompts and the rows skipped (numbered from 1) with the reason for each."""
    try:
        text = content.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise UnreadableFile("The file is not UTF-8 text") from exc
    prompts: list[PromptIn] = []
    skipped: list[SkippedRow] = []
    for line, record in _records(text, file_format):
        try:
            prompts.append(PromptIn.model_validate(_normalise(record)))
        except (ValidationError, ValueError, TypeError) as exc:
            skipped.append(SkippedRow(line=line, reason=_reason(exc)))
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
        reader = csv.DictReader(io.StringIO(text))
        if not reader.fieldnames or not {"prompt", "messages"} & set(reader.fieldnames):
            raise UnreadableFile('A CSV file needs a "prompt" (or "messages") column')
        for row in reader:
            yield reader.line_num, _csv_record(row)
    else:
        raise UnreadableFile(f"Unknown format {file_format!r}; use one of {', '.join(FORMATS)}")


def _json_or_error(text: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        return ValueError(f"invalid JSON ({exc.msg})")


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


def _reason(exc: Exception) -> str:
    if isinstance(exc, ValidationError):
        first = exc.errors()[0]
        location = ".".join(str(part) for part in first["loc"])
        return f"{location}: {first['msg']}" if location else first["msg"]
    return str(exc)
