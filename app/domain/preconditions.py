"""Optimistic concurrency: ETags for what admins edit, `If-Match`, and one writer at a time.

Two admins working from the same page must not overwrite each other without knowing it. A
response carries the resource's `ETag`; a write that sends it back in `If-Match` is refused with
412 when the resource changed meanwhile (RFC 9110, 13.1.1). The check and the write happen in
one transaction under `serialise`, so that of two concurrent writers based on the same state
exactly one wins, on PostgreSQL (an advisory lock) as on SQLite (whose `BEGIN IMMEDIATE`
already admits one writer at a time).
"""

from __future__ import annotations

import hashlib
import zlib

from sqlalchemy import text
from sqlalchemy.orm import Session

from app.errors import AppError

IF_MATCH = "if-match"


class PreconditionFailed(AppError):
    status_code = 412


def etag(*parts: object) -> str:
    """A strong entity tag over `parts`, the fields whose change a client must notice."""
    digest = hashlib.sha256("\x1f".join(map(str, parts)).encode()).hexdigest()[:20]
    return f'"{digest}"'


def check_if_match(if_match: str | None, current: str, *, what: str) -> None:
    """Refuse the write when the client's `If-Match` names none of `current`; no header means
    the client asked for no check."""
    if if_match is None:
        return
    offered = {tag.strip().removeprefix("W/") for tag in if_match.split(",")}
    if "*" not in offered and current not in offered:
        raise PreconditionFailed(
            f"{what} changed since you read it (If-Match does not match its ETag {current}); "
            "read it again and retry.",
            {"ETag": current},
        )


def serialise(db: Session, resource: str) -> None:
    """Hold `resource`'s writer lock until the transaction ends."""
    if db.get_bind().dialect.name == "postgresql":
        key = zlib.crc32(f"alignloop.{resource}".encode())
        db.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": key})
    # SQLite: every transaction begins with BEGIN IMMEDIATE, so this one is the only writer.
