"""Rows the benchmarks seed their databases with in bulk (Core inserts, no ORM objects)."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import Connection, insert
from sqlalchemy.orm import Session

from app.models import TaskResponse


def link_response_pairs(
    db: Connection | Session, task_ids: Sequence[int], response_ids: Sequence[int]
) -> None:
    """Show task `i` its responses `2i` and `2i + 1`, in that order: the two-response tasks of
    the benchmarks, whose responses were inserted two by two in task order."""
    db.execute(
        insert(TaskResponse),
        [
            {
                "task_id": task_id,
                "response_id": response_ids[2 * index + position],
                "position": position,
            }
            for index, task_id in enumerate(task_ids)
            for position in (0, 1)
        ],
    )
