"""What the command line's read-only commands print: aligned tables of model versions, rounds
and jobs, and the details of one round or job. Plain text, no colour: it reads the same in a
terminal, a log file or a pipe. Times are UTC, as stored."""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from app.models import Job, ModelVersion, Round

NONE = "-"


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """Columns padded to their widest cell, or "none" when there are no rows."""
    if not rows:
        return "none"
    cells = [list(headers), *([cell(value) for value in row] for row in rows)]
    widths = [max(len(row[column]) for row in cells) for column in range(len(headers))]
    return "\n".join(
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        for row in cells
    )


def models_table(versions: Sequence[ModelVersion], current: ModelVersion | None) -> str:
    rows = [
        (
            "*" if current is not None and version.id == current.id else "",
            version.name,
            version.kind.value,
            version.status.value,
            version.parent.name if version.parent else None,
            version.round_id,
            version.created_at,
        )
        for version in versions
    ]
    return table(("CURRENT", "NAME", "KIND", "STATUS", "PARENT", "ROUND", "CREATED"), rows)


def rounds_table(rounds: Sequence[Round]) -> str:
    rows = [
        (
            round_.id,
            round_.line,
            round_.algorithm.value,
            round_.preset,
            round_.status.value,
            round_.stage.value,
            _percent(round_.progress),
            round_.created_at,
            round_.finished_at,
        )
        for round_ in rounds
    ]
    headers = ("ID", "LINE", "ALGORITHM", "PRESET", "STATUS", "STAGE", "PROGRESS", "CREATED")
    return table((*headers, "FINISHED"), rows)


def jobs_table(jobs: Sequence[Job]) -> str:
    rows = [
        (
            job.id,
            job.kind,
            job.status.value,
            _percent(job.progress),
            job.created_at,
            job.finished_at,
            _first_line(job.error),
        )
        for job in jobs
    ]
    return table(("ID", "KIND", "STATUS", "PROGRESS", "CREATED", "FINISHED", "ERROR"), rows)


def round_details(round_: Round) -> str:
    produced = round_.metrics.get("register", {}).get("version")
    return _fields(
        {
            "round": round_.id,
            "line": round_.line,
            "algorithm": round_.algorithm.value,
            "preset": round_.preset,
            "status": round_.status.value,
            "stage": round_.stage.value,
            "progress": _progress(round_.progress, round_.progress_detail),
            "created": round_.created_at,
            "started": round_.started_at,
            "finished": round_.finished_at,
            "judgements": round_.judgement_count,
            "raters": round_.rater_count,
            "snapshot": round_.snapshot_sha256,
            "model version": produced,
            "error": round_.error,
            "metrics": _json(round_.metrics),
        }
    )


def job_details(job: Job) -> str:
    return _fields(
        {
            "job": job.id,
            "kind": job.kind,
            "status": job.status.value,
            "progress": _progress(job.progress, job.progress_detail),
            "attempts": job.attempts,
            "worker": job.lease_owner,
            "created": job.created_at,
            "started": job.started_at,
            "finished": job.finished_at,
            "error": job.error,
            "params": _json(job.params),
            "result": _json(job.result),
        }
    )


def _fields(values: dict[str, Any]) -> str:
    width = max(len(name) for name in values) + 1
    return "\n".join(f"{name + ':':<{width}} {cell(value)}" for name, value in values.items())


def cell(value: Any) -> str:
    """A value as a table shows it: a dash for nothing, times to the minute."""
    if value is None:
        return NONE
    if isinstance(value, datetime):
        return f"{value:%Y-%m-%d %H:%M}"
    return str(value)


def _percent(fraction: float | None) -> str:
    return f"{(fraction or 0) * 100:.0f}%"


def _progress(fraction: float | None, detail: str | None) -> str:
    return " · ".join(part for part in (_percent(fraction), detail) if part)


def _first_line(text: str | None) -> str | None:
    if not text:
        return None
    line = text.splitlines()[0]
    return line if len(line) <= 60 else line[:59] + "…"


def _json(value: Any) -> str | None:
    return json.dumps(value, sort_keys=True, default=str) if value else None
