"""The prompts raters answer: adding them without duplicates, and counting them."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from typing import NamedTuple

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from app.models import (
    Prompt,
    User,
)
from app.schemas import PromptIn


def prompt_dedup_hash(prompt: PromptIn) -> str:
    """Digest of the conversation with whitespace normalised; tags and source do not count."""
    canonical = [
        {"role": message.role, "content": " ".join(message.content.split())}
        for message in prompt.messages
    ]
    encoded = json.dumps(canonical, ensure_ascii=False, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(encoded.encode()).hexdigest()


class PromptCounts(NamedTuple):
    created: int
    already_stored: int
    repeated: int
    """Copies of a prompt that came earlier in the same batch (or import: `seen`)."""
    created_ids: list[int]
    """The new prompts' ids, in the order they came."""


def add_prompts(
    db: Session,
    *,
    prompts: Iterable[PromptIn],
    created_by: User | None,
    seen: set[str] | None = None,
) -> PromptCounts:
    """Insert the prompts not seen before; a duplicate keeps the stored prompt's tags.

    `seen` holds the hashes of the prompts that came earlier in an import that arrives in
    batches (they count as repeated here), and gets this batch's added."""
    seen = set() if seen is None else seen
    by_hash: dict[str, PromptIn] = {}
    repeated = 0
    for prompt in prompts:
        digest = prompt_dedup_hash(prompt)
        if digest in seen or digest in by_hash:
            repeated += 1
        else:
            by_hash[digest] = prompt
    seen.update(by_hash)
    existing = set(
        db.scalars(select(Prompt.dedup_hash).where(Prompt.dedup_hash.in_(list(by_hash))))
    )
    created = [
        Prompt(
            messages=[message.model_dump() for message in prompt.messages],
            source=prompt.source,
            tags=prompt.tags,
            split=prompt.split,
            dedup_hash=digest,
            created_by_id=created_by.id if created_by else None,
        )
        for digest, prompt in by_hash.items()
        if digest not in existing
    ]
    db.add_all(created)
    db.flush()
    return PromptCounts(len(created), len(existing), repeated, [row.id for row in created])


def count_prompts(db: Session) -> int:
    return db.scalar(select(func.count()).select_from(Prompt)) or 0
